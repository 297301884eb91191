"""`mole-vla train`: the loss goes down, checkpoints load, resume equals an uninterrupted run, bad input is refused."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import pytest
import torch

from mole_vla_ros.policy import MoLePolicy
from mole_vla_ros.train import checkpoint as ckpt
from mole_vla_ros.train import train as train_cli
from mole_vla_ros.train.data import batch_indices
from mole_vla_ros.train.runtime import Runtime
from mole_vla_ros.train.train import TrainConfig, Trainer

sys.path.insert(0, str(Path(__file__).parent))  # pytest runs with --import-mode=importlib: no test dir on the path
from train_common import (
    fixed_loss,
    one_torch_thread,  # noqa: F401 (an autouse fixture: one torch thread per test)
    tiny_frames,
    train_config,
    write_lerobot_dataset,
)

CPU = Runtime(torch.device("cpu"))


@pytest.fixture(scope="module")
def data():
    return tiny_frames()


def config(tmp_path, **overrides) -> TrainConfig:
    return train_config(tmp_path / "run", **overrides)


def test_training_lowers_the_loss_and_writes_a_loadable_checkpoint(tmp_path, data):
    cfg = config(tmp_path, steps=60, save_every=30, log_every=10)
    trainer = Trainer(cfg, CPU, data)
    before = fixed_loss(trainer.policy, data, budget=0.5)
    trainer.run(progress=False)
    after = fixed_loss(trainer.policy, data, budget=0.5)
    assert after < 0.6 * before, (before, after)

    final = tmp_path / "run" / "final"
    loaded = MoLePolicy.from_pretrained(final)
    assert fixed_loss(loaded, data, budget=0.5) == pytest.approx(after, rel=1e-5)
    # The dataset statistics travel inside the checkpoint: actions come back in radians near the data's range.
    assert torch.allclose(loaded.normalizer.action_mean, data.action.mean(0), atol=1e-5)
    meta = json.loads((final / "dataset.json").read_text())
    assert meta["cameras"] == ["scene"] and meta["frames"] == len(data)
    stages = [row["stage"] for row in trainer.history]
    assert stages[0] == "full" and stages[-1] == "router"
    assert all(row["active_fraction"] == 1.0 for row in trainer.history if row["stage"] == "full")
    assert all(row["active_fraction"] == 0.5 for row in trainer.history if row["stage"] == "router")
    for name in ("curves.csv", "curves.json", "curves.png"):
        assert (tmp_path / "run" / name).stat().st_size > 0


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tmp_path, data):
    straight = Trainer(config(tmp_path / "a"), CPU, data)
    straight.run(progress=False)

    first = Trainer(config(tmp_path / "b"), CPU, data)
    first.run(stop_at=6, progress=False)  # as if killed right after the step-6 checkpoint
    del first
    torch.manual_seed(999)  # a fresh process would not share the RNG state of the killed one
    resumed = Trainer(config(tmp_path / "b"), CPU, data, resume=True)
    assert resumed.step == 6
    resumed.run(progress=False)

    a, b = straight.policy.state_dict(), resumed.policy.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert [r["loss"] for r in straight.history] == [r["loss"] for r in resumed.history]


def test_resume_refuses_changed_settings_and_a_missing_checkpoint(tmp_path, data):
    with pytest.raises(SystemExit, match="no checkpoint"):
        Trainer(config(tmp_path), CPU, data, resume=True)
    Trainer(config(tmp_path, steps=6), CPU, data).run(progress=False)
    with pytest.raises(SystemExit, match="budget"):
        Trainer(config(tmp_path, steps=12, budget=0.25), CPU, data, resume=True)


def test_a_fork_from_stage_full_continues_the_run_or_its_ablation(tmp_path, data):
    """stage_full holds the training state at the stage change: a fork with the run's own settings ends on exactly
    the run's weights; a --no-cogkd fork shares its history up to the switch and then trains without distillation."""
    main = Trainer(config(tmp_path / "main"), CPU, data)
    main.run(progress=False)
    stage_full = tmp_path / "main" / "run" / "stage_full"

    twin = Trainer(config(tmp_path / "twin", fork=str(stage_full)), CPU, data)
    assert twin.step == 6  # full_fraction 0.5 of 12 steps
    twin.run(progress=False)
    a, b = main.policy.state_dict(), twin.policy.state_dict()
    assert all(torch.equal(a[key], b[key]) for key in a)

    ablation = Trainer(config(tmp_path / "nokd", fork=str(stage_full), cogkd=False), CPU, data)
    ablation.run(progress=False)
    switch = [row["step"] for row in main.history].index(6) + 1
    assert ablation.history[:switch] == main.history[:switch]
    assert all(row["cogkd"] == 0.0 for row in ablation.history[switch:])
    assert any(row["cogkd"] > 0.0 for row in main.history[switch:])

    with pytest.raises(SystemExit, match="not a training checkpoint"):
        Trainer(config(tmp_path / "bad", fork=str(tmp_path / "main" / "run" / "final")), CPU, data)


def test_no_cogkd_trains_without_distillation(tmp_path, data):
    trainer = Trainer(config(tmp_path, steps=4, stage="router", cogkd=False), CPU, data)
    trainer.run(progress=False)
    assert trainer.policy.config.w_kd == 0.0
    with_kd = Trainer(config(tmp_path / "kd", steps=2, stage="router"), CPU, data)
    with_kd.run(progress=False)
    assert with_kd.policy.config.w_kd == 0.5 and with_kd.history[-1]["cogkd"] > 0.0


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"budget": 0.0}, "budget"),
        ({"stage": "warmup"}, "stage"),
        ({"steps": 0}, "steps"),
        ({"preset": None}, "exactly one"),
        ({"ema_decay": 1.0}, "ema-decay"),
        ({"colour_swap": 1.5}, "colour-swap"),
        ({"mixed_budgets": (0.25, 0.0)}, "mixed-budgets"),
    ],
)
def test_bad_settings_are_refused(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        config(tmp_path, **overrides)


def test_cli_refuses_an_unreadable_dataset_and_an_oversized_batch(tmp_path, data, capsys):
    with pytest.raises(Exception, match=r"info\.json"):
        train_cli.main(["--dataset", str(tmp_path), "--out", str(tmp_path / "o"), "--steps", "1", "--device", "cpu"])
    with pytest.raises(SystemExit, match="larger than the dataset"):
        Trainer(config(tmp_path, batch_size=len(data) + 1), CPU, data)


def test_batch_order_is_a_function_of_seed_and_step_and_covers_each_epoch():
    n, b = 50, 8
    epoch = [i for step in range(n // b) for i in batch_indices(n, b, step, seed=3)]
    assert len(set(epoch)) == len(epoch) == (n // b) * b
    assert batch_indices(n, b, 4, seed=3) == batch_indices(n, b, 4, seed=3)
    assert batch_indices(n, b, 4, seed=3) != batch_indices(n, b, 4, seed=4)
    shards = [batch_indices(n, b, 2, seed=3, rank=r, world=2) for r in range(2)]
    assert not set(shards[0]) & set(shards[1])


def test_action_chunks_stop_at_the_episode_end(data):
    last = int((data.episode_index == 0).sum()) - 1  # final frame of episode 0
    batch = data.batch([last - 1], chunk_size=4)
    assert batch["action_is_pad"].tolist() == [[False, False, True, True]]
    assert torch.equal(batch["action"][0, 2], data.action[last])  # padded with the held last action


def test_future_states_stop_at_the_episode_end(data):
    first_last = int((data.episode_index == 0).sum()) - 1  # final frame of episode 0
    batch = data.batch([0, first_last - 2, first_last], chunk_size=4, future_horizon=5)
    assert torch.equal(batch["future_state"][0], data.state[5])
    assert torch.equal(batch["future_state"][1], data.state[first_last])  # never the next episode's first state
    assert torch.equal(batch["future_state"][2], data.state[first_last])
    assert "future_state" not in data.batch([0], chunk_size=4)


def test_trainer_feeds_the_future_state_loss(tmp_path, data):
    cfg = config(tmp_path, steps=4, save_every=4, log_every=1, overrides={"w_future": 1.0, "future_horizon": 6})
    trainer = Trainer(cfg, CPU, data=data)
    rows = [trainer.train_step() for _ in range(4)]
    assert all(row["future"] > 0 for row in rows)


def test_trainer_feeds_environment_states_and_refuses_a_dataset_without_them(tmp_path, data):
    overrides = {"w_env_state": 1.0, "env_state_dim": 3}
    with pytest.raises(SystemExit, match="environment_state"):
        Trainer(config(tmp_path, steps=2, overrides=overrides), CPU, data=data)
    env = torch.randn(len(data), 3)
    with_env = dataclasses.replace(data, environment_state=env)
    assert torch.equal(with_env.batch([4, 7], chunk_size=4, environment_state=True)["environment_state"], env[[4, 7]])
    trainer = Trainer(config(tmp_path, steps=3, overrides=overrides), CPU, data=with_env)
    assert torch.allclose(trainer.policy.normalizer.env_state_mean, env.mean(0), atol=1e-5)
    assert all(trainer.train_step()["env_state"] > 0 for _ in range(3))
    with pytest.raises(ValueError, match="environment_state"):
        data.batch([0], chunk_size=4, environment_state=True)


def test_oversampling_draws_each_episode_opening_that_many_times_per_epoch(tmp_path, data):
    pool = data.sampling_pool(start_frames=3, factor=4)
    counts = torch.bincount(pool, minlength=len(data))
    first = torch.cat([torch.tensor([0]), torch.nonzero(torch.diff(data.episode_index)).flatten() + 1])
    opening = torch.cat([first + k for k in range(3)])
    assert set(counts[opening].tolist()) == {4}
    assert counts.sum() == len(data) + 3 * len(opening) and set(counts.tolist()) == {1, 4}
    cfg = config(tmp_path, steps=2, batch_size=8, oversample_start=5)  # data is 30 fps: 1.5 s = 45 frames
    trainer = Trainer(cfg, CPU, data=data)
    assert len(trainer.pool) == 5 * len(data)  # 24-frame episodes: every frame lies in the 45-frame opening
    assert trainer.draw(0, 0, 1) == trainer.draw(0, 0, 1) and len(trainer.draw(0, 0, 1)) == 8
    with pytest.raises(ValueError, match="oversample-start"):
        config(tmp_path, oversample_start=0)


def test_mixed_budgets_are_drawn_per_step_in_the_router_stage_only(tmp_path):
    cfg = config(tmp_path, steps=200, full_fraction=0.5, budget=0.5, mixed_budgets=(0.25, 1.0))
    base = train_cli.build_policy(cfg).config
    drawn = [train_cli.stage_config(base, cfg, cfg.stage_at(step), step)[1] for step in range(200)]
    assert set(drawn[:100]) == {1.0}  # the full stage runs every layer
    assert set(drawn[100:]) == {0.25, 0.5, 1.0}
    assert drawn == [train_cli.stage_config(base, cfg, cfg.stage_at(s), s)[1] for s in range(200)]  # resume: same
    plain = config(tmp_path, steps=200, full_fraction=0.5, budget=0.5)
    assert {train_cli.stage_config(base, plain, "router", s)[1] for s in range(100, 200)} == {0.5}


def test_resume_accepts_a_checkpoint_from_before_a_setting_existed(tmp_path, data):
    cfg = config(tmp_path, steps=2, save_every=2)
    Trainer(cfg, CPU, data=data).run(progress=False)
    saved = ckpt.last_checkpoint(tmp_path / "run") / "train_config.json"
    settings = json.loads(saved.read_text())
    del settings["mixed_budgets"]  # a run recorded before --mixed-budgets
    saved.write_text(json.dumps(settings))
    resumed = Trainer(config(tmp_path, steps=4, save_every=2), CPU, data=data, resume=True)
    assert resumed.step == 2


def test_trainer_swaps_colours_reproducibly_and_only_when_asked(tmp_path, data):
    """tiny_frames names its targets red/green/blue: with --colour-swap 1 every sample is renamed, and the same
    step draws the same swaps (a resumed run sees the batches an uninterrupted one did)."""
    indices = list(range(8))
    plain = Trainer(config(tmp_path), CPU, data=data).load_batch(indices)
    swapping = Trainer(config(tmp_path, colour_swap=1.0), CPU, data=data)
    first, again = swapping.load_batch(indices), swapping.load_batch(indices)
    assert plain["instruction"] == [data.tasks[i] for i in data.task_index[indices].tolist()]
    assert all(a != b for a, b in zip(first["instruction"], plain["instruction"], strict=True))
    assert first["instruction"] == again["instruction"]
    assert torch.equal(first["images"][0], again["images"][0])
    assert not torch.equal(first["images"][0], plain["images"][0])
    assert torch.equal(first["action"], plain["action"])


def test_cli_trains_from_a_lerobot_dataset_on_disk(tmp_path):
    write_lerobot_dataset(tmp_path / "ds")
    out = tmp_path / "run"
    argv = [
        "--dataset",
        str(tmp_path / "ds"),
        "--out",
        str(out),
        "--steps",
        "4",
        "--batch-size",
        "4",
        "--device",
        "cpu",
        "--save-every",
        "2",
        "--set",
        "chunk_size=6",
        "--threads",
        "1",
    ]
    assert train_cli.main(argv) == 0
    policy = MoLePolicy.from_pretrained(out / "final")
    assert policy.config.chunk_size == 6
    meta = json.loads((out / "final" / "dataset.json").read_text())
    assert meta["image_hw"] == [32, 32] and sorted(meta["tasks"]) == ["pick up the blue cube", "pick up the red cube"]
    with pytest.raises(SystemExit, match="--resume"):  # a second run must not silently overwrite the first
        train_cli.main(argv)
    assert train_cli.main([*argv[:5], "8", *argv[6:], "--resume"]) == 0
    assert json.loads((out / "final" / "train_config.json").read_text())["completed_steps"] == 8


def test_router_learning_rate_scale(tmp_path, data):
    trainer = Trainer(config(tmp_path, steps=4, stage="router", router_lr_scale=10.0), CPU, data)
    router = {id(p) for p in trainer.policy.router.parameters()}
    before = {n: p.detach().clone() for n, p in trainer.policy.router.named_parameters()}
    trainer.train_step()
    lrs = {all(id(p) in router for p in g["params"]): g["lr"] for g in trainer.optimizer.param_groups if g["params"]}
    assert lrs[True] == pytest.approx(10.0 * lrs[False]) and lrs[False] == pytest.approx(trainer.cfg.lr_at(0))
    assert any(not torch.equal(p, before[n]) for n, p in trainer.policy.router.named_parameters())
    with pytest.raises(ValueError, match="router-lr-scale"):
        config(tmp_path, router_lr_scale=0.0)


def test_help_lists_the_scale_out_options(capsys):
    with pytest.raises(SystemExit) as exit_info:
        train_cli.parse_args(["--help"])
    assert exit_info.value.code == 0
    shown = capsys.readouterr().out
    assert "--grad-accum" in shown and "--precision {auto,fp32,bf16,fp16}" in shown
    cfg, resume, launch = train_cli.parse_args(
        ["--dataset", "d", "--out", "o", "--grad-accum", "4", "--precision", "fp16"]
    )
    assert launch == {"grad_accum": 4, "precision": "fp16"} and not resume and cfg.batch_size == 16
    with pytest.raises(SystemExit):
        train_cli.parse_args(["--dataset", "d", "--out", "o", "--grad-accum", "0"])


def test_the_scale_out_doc_commands_use_real_flags():
    """Every `mole-vla train` / torchrun / accelerate command in docs/scale_out.md parses with the real parsers."""
    import shlex

    from torch.distributed.run import get_args_parser

    doc = (Path(__file__).resolve().parents[3] / "docs" / "scale_out.md").read_text()
    blocks = [block.split("```", 1)[0] for block in doc.split("```bash")[1:]]
    commands = [line for block in blocks for line in block.replace("\\\n", " ").splitlines()]
    commands = [line.split("#", 1)[0] for line in commands if " train " in line.split("#", 1)[0]]
    assert len(commands) >= 6, commands
    for line in commands:
        line = line.replace("$NODE_RANK", "0").replace("$MASTER", "10.0.0.1")
        words = shlex.split(line)
        while "=" in words[0]:  # OMP_NUM_THREADS=1 ...
            words.pop(0)
        launcher, rest = words[0], words[1:]
        if launcher == "torchrun":
            assert get_args_parser().parse_args(rest).module, line  # -m: the CLI module, not a script path
        elif launcher == "accelerate":
            assert rest[0] == "launch" and "-m" in rest, line
        else:
            assert launcher == "mole-vla", line
        assert words[words.index("train") - 1] in ("mole-vla", "mole_vla_ros.cli"), line
        train_cli.parse_args(words[words.index("train") + 1 :])  # exits (a failure) on an unknown or bad flag


def test_the_default_checkpoint_recipe_commands_parse(tmp_path):
    """The one documented command chains these runs: each must be a valid `mole-vla train` command line, and the
    ablation must differ from the shipped run in the distillation only."""
    from mole_vla_ros.train import default_checkpoint as recipe

    shipped, _, _ = train_cli.parse_args(recipe.train_command(tmp_path, 16000, 32, 2, lr=5e-4))
    ablation, _, _ = train_cli.parse_args(recipe.nokd_command(tmp_path, 16000, 32, 2, lr=5e-4))
    assert shipped.stage == "both" and shipped.steps == 16000 and shipped.mixed_budgets == (0.25, 1.0)
    assert shipped.full_fraction == recipe.FULL_FRACTION
    assert (
        shipped.lr == 5e-4 != recipe.LR
        and train_cli.parse_args(recipe.train_command(tmp_path, 16000, 32, 2))[0].lr == recipe.LR
    )
    assert shipped.cogkd and shipped.fork is None and Path(shipped.out).name == recipe.SHIPPED_RUN
    assert not ablation.cogkd and ablation.fork == str(tmp_path / recipe.SHIPPED_RUN / "stage_full")
    differ = {f for f in ("out", "cogkd", "fork") if getattr(shipped, f) != getattr(ablation, f)}
    same = {k: v for k, v in vars(shipped).items() if k not in differ}
    assert same == {k: v for k, v in vars(ablation).items() if k not in differ}
    assert differ == {"out", "cogkd", "fork"}
    # Recovery demonstrations for training; the held-out reference stays the plain expert, at the evaluation seeds.
    from mole_vla_ros.data import record

    demos = record.build_parser().parse_args(recipe.record_command(tmp_path, 300))
    heldout = record.build_parser().parse_args(recipe.heldout_command(tmp_path))
    assert demos.retry_share > 0 and demos.action_noise > 0 and demos.hide_misses
    assert demos.episodes == 300 and demos.seed == 1000
    assert heldout.retry_share == 0 and heldout.action_noise == 0 and heldout.seed == recipe.EVAL_SEED
    assert (demos.cameras, demos.size) == (heldout.cameras, heldout.size)
