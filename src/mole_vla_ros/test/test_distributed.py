"""Distributed training (DDP over gloo, two CPU ranks under torchrun) against one process.

- Two ranks x 8 frames train the same model, step for step, as one rank with --grad-accum 2 x 8 frames: the same
  frames and the same noise per shard, only the gradient sum differs in float rounding (tolerance rtol 1e-3 on the
  per-step losses, 1e-3 on the weights).
- They reach the same loss as the plain single-process Trainer with the doubled batch (16 frames): its noise is
  drawn differently, so the tolerance is statistical: the fixed-noise evaluation loss within 15% of each other,
  both far below the untrained model's.
- A two-rank checkpoint resumes on one rank (--grad-accum 2 keeps the global batch) and continues the two-rank run;
  a resume that would change the global batch is refused with the fix in the message.

Run as a script (under torchrun), this file is one rank of the two-rank run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mole_vla_ros.policy import MoLePolicy
from mole_vla_ros.train.data import synthetic_dataset
from mole_vla_ros.train.distributed import DistributedTrainer, resolve_precision, runtime_from_env, shutdown
from mole_vla_ros.train.runtime import Runtime
from mole_vla_ros.train.train import TrainConfig, Trainer

CPU = Runtime(torch.device("cpu"))
STEPS = 40


def data():
    return synthetic_dataset(episodes=4, frames=24, size=32)


def config(out: Path, batch_size: int = 8) -> TrainConfig:
    return TrainConfig(
        dataset="synthetic",
        out=str(out),
        steps=STEPS,
        batch_size=batch_size,
        warmup=2,
        lr=1e-3,
        log_every=1,
        save_every=STEPS // 2,
        device="cpu",
        full_fraction=0.5,
    )


def losses(history: list[dict]) -> dict[int, float]:
    return {row["step"]: row["loss"] for row in history}


def fixed_loss(policy: MoLePolicy, frames) -> float:
    """Flow-matching loss on fixed frames with fixed noise and times, so two models are compared on equal terms."""
    batch = frames.batch(list(range(0, len(frames), 3)), policy.config.chunk_size)
    with torch.no_grad(), torch.random.fork_rng():
        torch.manual_seed(1234)
        return sum(policy(batch, budget=0.5)[1]["flow"] for _ in range(4)) / 4


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # other suites share this CPU
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> Path:
    """One torchrun launch of two gloo ranks x 8 frames, 40 steps; checkpoints at steps 20 and 40 stay."""
    out = tmp_path_factory.mktemp("ddp") / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", __file__, str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


def test_two_ranks_equal_one_rank_accumulating_the_same_shards(two_ranks, tmp_path):
    ddp = json.loads((two_ranks / "history.json").read_text())
    assert [row["step"] for row in ddp] == list(range(1, STEPS + 1))
    cfg = json.loads((two_ranks / "final" / "train_config.json").read_text())
    assert (cfg["world_size"], cfg["grad_accum"], cfg["global_batch"]) == (2, 1, 16)

    single = DistributedTrainer(config(tmp_path / "one"), CPU, data(), grad_accum=2, precision="fp32")
    single.run(progress=False)
    mine, theirs = losses(single.history), losses(ddp)
    for step in theirs:
        assert mine[step] == pytest.approx(theirs[step], rel=1e-3), step
    ddp_weights = MoLePolicy.from_pretrained(two_ranks / "final").state_dict()
    for name, value in single.policy.state_dict().items():
        torch.testing.assert_close(value, ddp_weights[name], rtol=1e-3, atol=1e-3, msg=name)


def test_two_ranks_reach_the_loss_of_one_rank_with_the_doubled_batch(two_ranks, tmp_path):
    frames = data()
    plain = Trainer(config(tmp_path / "plain", batch_size=16), CPU, frames)
    untrained = fixed_loss(plain.policy, frames)
    plain.run(progress=False)
    ddp = MoLePolicy.from_pretrained(two_ranks / "final")
    reference, reached = fixed_loss(plain.policy, frames), fixed_loss(ddp, frames)
    assert reached < 0.7 * untrained and reference < 0.7 * untrained, (untrained, reference, reached)
    assert reached == pytest.approx(reference, rel=0.15)


def test_a_two_rank_checkpoint_resumes_on_one_rank(two_ranks, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(two_ranks, run)
    (run / "checkpoints" / "last").write_text(f"step_{STEPS // 2:06d}\n")  # as if the two-rank job had died half-way
    ddp = losses(json.loads((two_ranks / "history.json").read_text()))

    with pytest.raises(SystemExit, match=r"global batch of 16 frames.*--grad-accum"):
        DistributedTrainer(config(run), CPU, data(), resume=True, grad_accum=1)

    resumed = DistributedTrainer(config(run), CPU, data(), resume=True, grad_accum=2)
    assert resumed.step == STEPS // 2
    resumed.run(progress=False)
    mine = losses(resumed.history)
    assert sorted(mine) == list(range(1, STEPS + 1))
    for step in range(STEPS // 2 + 1, STEPS + 1):
        assert mine[step] == pytest.approx(ddp[step], rel=1e-3), step
    meta = json.loads((run / "final" / "train_config.json").read_text())
    assert (meta["world_size"], meta["grad_accum"], meta["global_batch"]) == (1, 2, 16)


def test_precision_choice():
    assert resolve_precision("fp32", torch.device("cuda")) is None
    assert resolve_precision("auto", torch.device("cpu")) is None  # no bf16 units here: fp32 is faster
    assert resolve_precision("bf16", torch.device("cpu")) is torch.bfloat16
    with pytest.raises(ValueError, match="precision"):
        resolve_precision("fp16", torch.device("cpu"))
    with pytest.raises(ValueError, match="grad-accum"):
        DistributedTrainer(config(Path("/nonexistent")), CPU, data(), grad_accum=0)


def _rank_main(out: str) -> None:
    """One rank of the two-rank run (launched by torchrun); rank 0 leaves the loss history next to the run."""
    torch.set_num_threads(1)
    rt = runtime_from_env(torch.device("cpu"))
    try:
        trainer = DistributedTrainer(config(Path(out)), rt, data(), precision="fp32")
        trainer.run(progress=False)
        if rt.is_main:
            (Path(out) / "history.json").write_text(json.dumps(trainer.history))
    finally:
        shutdown()


if __name__ == "__main__":
    _rank_main(sys.argv[1])
