"""Distributed training (DDP over gloo, two CPU ranks under torchrun) against one process.

- Two ranks x 8 frames train the same model, step for step, as one rank with --grad-accum 2 x 8 frames: the same
  frames and the same noise per shard, only the gradient sum differs in float rounding (tolerance rtol 1e-3 on the
  per-step losses, 1e-3 on the weights).
- They reach the same loss as the plain single-process Trainer with the doubled batch (16 frames): its noise is
  drawn differently, so the tolerance is statistical: the fixed-noise evaluation loss within 15% of each other,
  both far below the untrained model's.
- A two-rank checkpoint resumes on one rank (--grad-accum 2 keeps the global batch) and continues the two-rank run;
  a resume that would change the global batch is refused with the fix in the message.

- The real command line, `python -m torch.distributed.run --nproc-per-node 2 -m mole_vla_ros.cli train ...` on a
  generated on-disk dataset: only rank 0 writes under --out (an audit hook watches both ranks), the checkpoints
  load, the loss falls.
- fp16 trains with torch's GradScaler and a resume restores its scale; logged samples/s count batch x accum x ranks.

Run as a script (under torchrun), this file is one rank of the two-rank run.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mole_vla_ros.policy import MoLePolicy
from mole_vla_ros.train.distributed import DistributedTrainer, resolve_precision, runtime_from_env, shutdown
from mole_vla_ros.train.runtime import Runtime
from mole_vla_ros.train.train import TrainConfig, Trainer

sys.path.insert(0, str(Path(__file__).parent))  # pytest runs with --import-mode=importlib: no test dir on the path
from train_common import (
    fixed_loss,
    one_torch_thread,  # noqa: F401 (an autouse fixture: one torch thread per test)
    train_config,
    write_lerobot_dataset,
)
from train_common import tiny_frames as data

CPU = Runtime(torch.device("cpu"))
STEPS = 40


def config(out: Path, batch_size: int = 8, **overrides) -> TrainConfig:
    settings = {"steps": STEPS, "batch_size": batch_size, "log_every": 1, "save_every": STEPS // 2}
    return train_config(out, **(settings | overrides))


def run_launcher(cmd: list[str], env: dict[str, str], timeout_s: float = 240.0) -> subprocess.CompletedProcess:
    """Run a torchrun launch in its own process group, so a launch that hangs takes its ranks down with it
    (killing the launcher alone would leave the ranks waiting in a collective)."""
    with subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    ) as proc:
        try:
            stdout, stderr = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            # SIGTERM first: torchrun then stops its ranks itself (they may run in sessions of their own, out of
            # reach of the group kill: one survived a timed-out launch here); SIGKILL the group if it does not.
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                stdout, stderr = proc.communicate(timeout=20.0)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                stdout, stderr = proc.communicate()
            pytest.fail(f"torchrun ran past {timeout_s} s: {stdout[-2000:]}{stderr[-2000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)


def losses(history: list[dict]) -> dict[int, float]:
    return {row["step"]: row["loss"] for row in history}


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> Path:
    """One torchrun launch of two gloo ranks x 8 frames, 40 steps; checkpoints at steps 20 and 40 stay."""
    out = tmp_path_factory.mktemp("ddp") / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", __file__, str(out)]
    proc = run_launcher(cmd, env)
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


def test_precision_choice(monkeypatch):
    assert resolve_precision("fp32", torch.device("cuda")) is None
    assert resolve_precision("auto", torch.device("cpu")) is None  # bf16 autocast on a CPU is slower than fp32
    assert resolve_precision("bf16", torch.device("cpu")) is torch.bfloat16
    assert resolve_precision("fp16", torch.device("cpu")) is torch.float16
    with pytest.raises(ValueError, match="precision"):
        resolve_precision("fp8", torch.device("cpu"))
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)  # a pre-Ampere GPU
    assert resolve_precision("auto", torch.device("cuda")) is None
    with pytest.raises(ValueError, match="no bf16 support; use --precision fp16"):
        resolve_precision("bf16", torch.device("cuda"))
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_precision("auto", torch.device("cuda")) is torch.bfloat16
    with pytest.raises(ValueError, match="grad-accum"):
        DistributedTrainer(config(Path("/nonexistent")), CPU, data(), grad_accum=0)


def test_logged_samples_per_second_count_every_accumulated_micro_batch(tmp_path):
    trainer = DistributedTrainer(config(tmp_path / "run", steps=6, stage="full"), CPU, data(), grad_accum=2)
    assert trainer.samples_per_step == 8 * 2  # batch-size x grad-accum x 1 rank
    trainer.run(progress=False)
    # log_every 1: each row's window is one step, so samples_per_step / samples_per_s is that step's time.
    timed = sum(trainer.samples_per_step / row["samples_per_s"] for row in trainer.history)
    assert 0.9 * trainer.wall_s <= timed <= 1.4 * trainer.wall_s, (timed, trainer.wall_s)


def test_fp16_trains_with_loss_scaling_and_resumes_with_the_scale(tmp_path):
    cfg = config(tmp_path / "run", steps=6, save_every=3)
    first = DistributedTrainer(cfg, CPU, data(), precision="fp16")
    assert first.scaler.is_enabled() and first.autocast_dtype is torch.float16
    first.run(stop_at=2, progress=False)
    first.scaler.update(new_scale=1024.0)  # not the default 65536, so a resume that drops the scale shows
    first.run(stop_at=3, progress=False)
    saved = torch.load(tmp_path / "run" / "checkpoints" / "step_000003" / "training_state.pt", weights_only=False)
    assert saved["grad_scaler"]["scale"] == first.scaler.get_scale() <= 1024.0
    resumed = DistributedTrainer(cfg, CPU, data(), resume=True, precision="fp16")
    assert resumed.scaler.get_scale() == saved["grad_scaler"]["scale"]
    resumed.run(progress=False)
    assert all(math.isfinite(row["loss"]) for row in resumed.history) and resumed.step == 6
    plain = DistributedTrainer(cfg, CPU, data(), precision="fp32")
    assert not plain.scaler.is_enabled()


# Loaded by every Python process that has WRITES_LOG set (sitecustomize, through PYTHONPATH): an audit hook logs
# each file or folder a torchrun worker creates, writes or renames under WRITES_UNDER, one log per RANK.
WRITE_AUDIT = """
import os, sys
if os.environ.get("RANK") is not None and os.environ.get("WRITES_LOG"):
    _under = os.path.realpath(os.environ["WRITES_UNDER"])
    _log = os.open(os.environ["WRITES_LOG"] + os.environ["RANK"], os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    _writing = os.O_WRONLY | os.O_RDWR | os.O_CREAT

    def _audit(event, args):
        if event == "open":
            path, mode, flags = args
            if not (any(c in (mode or "") for c in "wax+") or (mode is None and flags & _writing)):
                return
            paths = [path]
        elif event == "os.mkdir":
            paths = [args[0]]
        elif event in ("os.rename", "os.replace"):
            paths = list(args[:2])
        else:
            return
        for path in paths:
            if isinstance(path, (str, bytes, os.PathLike)):
                path = os.path.realpath(os.fsdecode(path))
                if path.startswith(_under):
                    os.write(_log, (os.path.relpath(path, _under) + chr(10)).encode())

    sys.addaudithook(_audit)
"""


@pytest.mark.slow  # two torchrun workers importing torch and training 30 steps: ~40 s on this CPU
def test_the_train_cli_under_torchrun_trains_and_only_rank_0_writes(tmp_path):
    from mole_vla_ros.policy import MoLeConfig
    from mole_vla_ros.train.data import load_dataset

    dataset, out, audit = write_lerobot_dataset(tmp_path / "ds"), tmp_path / "run", tmp_path / "audit"
    audit.mkdir()
    (audit / "sitecustomize.py").write_text(WRITE_AUDIT)
    env = dict(
        os.environ,
        OMP_NUM_THREADS="1",
        PYTHONPATH=os.pathsep.join([str(audit), os.environ.get("PYTHONPATH", "")]),
        WRITES_UNDER=str(out),
        WRITES_LOG=str(tmp_path / "writes_rank"),
    )
    steps = 30
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    cmd += ["-m", "mole_vla_ros.cli", "train", "--dataset", str(dataset), "--out", str(out), "--preset", "tiny"]
    cmd += ["--steps", str(steps), "--batch-size", "4", "--grad-accum", "2", "--precision", "fp32", "--lr", "1e-3"]
    cmd += ["--warmup", "2", "--log-every", "5", "--save-every", "15", "--device", "cpu", "--threads", "1"]
    proc = run_launcher(cmd, env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    rank0 = (tmp_path / "writes_rank0").read_text().split()
    rank1 = (tmp_path / "writes_rank1").read_text().split() if (tmp_path / "writes_rank1").exists() else []
    assert rank1 == [], f"rank 1 wrote under --out: {rank1}"
    # (safetensors writes the weights from Rust, out of the hook's sight; their folders are made from Python)
    for written in ("curves.csv", "curves.json", "curves.png", "final/config.json", "checkpoints/last"):
        assert written in rank0, (written, rank0)
    assert proc.stdout.count('"policy":') == 1  # the run summary: rank 0's alone

    meta = json.loads((out / "final" / "train_config.json").read_text())
    assert (meta["world_size"], meta["grad_accum"], meta["global_batch"], meta["completed_steps"]) == (2, 2, 16, 30)
    curves = json.loads((out / "curves.json").read_text())
    assert [row["step"] for row in curves] == list(range(5, steps + 1, 5))
    assert all(row["samples_per_s"] > 0 for row in curves)

    trained = MoLePolicy.from_pretrained(out / "final")
    resumable = MoLePolicy.from_pretrained(out / "checkpoints" / "step_000015")
    frames = load_dataset(dataset, trained.config.input_size)
    torch.manual_seed(0)  # the CLI's --seed: the model it started from
    untrained = MoLePolicy(MoLeConfig.preset("tiny"))
    untrained.set_normalization(frames.stats())
    before, after = fixed_loss(untrained, frames), fixed_loss(trained, frames)
    assert after < 0.7 * before, (before, after)
    assert fixed_loss(resumable, frames) < before


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
