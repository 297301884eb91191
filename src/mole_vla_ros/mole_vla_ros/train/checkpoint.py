"""Training checkpoints: a loadable policy folder plus everything needed to continue bit-for-bit.

    <out>/checkpoints/step_000500/
        config.json, model.safetensors   MoLePolicy.save_pretrained (normalisation stats live in the weights)
        stats.json                       the dataset statistics the policy normalises with (readable copy)
        dataset.json                     cameras (in the policy's image order), fps, tasks, size of the data
        train_config.json                the TrainConfig of the run
        training_state.pt                step, optimizer, RNG states, EMA teacher, loss history
    <out>/checkpoints/last               name of the newest complete checkpoint (written last, atomically)

A checkpoint folder is written under a temporary name and renamed when complete, so a run killed mid-save leaves
the previous checkpoint as `last`.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path
from typing import Any

import torch

from mole_vla_ros.policy import MoLePolicy

STATE_FILE = "training_state.pt"
LAST_FILE = "last"


def save_checkpoint(
    out: Path, step: int, policy: MoLePolicy, training_state: dict[str, Any], meta: dict[str, Any], keep: int = 2
) -> Path:
    """Write checkpoint `step` under out/checkpoints, point `last` at it, keep only the newest `keep`."""
    root = out / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    name = f"step_{step:06d}"
    tmp = root / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    write_training_checkpoint(tmp, policy, training_state, meta)
    final = root / name
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    (root / f".{LAST_FILE}.tmp").write_text(name + "\n")
    (root / f".{LAST_FILE}.tmp").replace(root / LAST_FILE)
    old = sorted(p for p in root.glob("step_*") if p.is_dir() and p.name != name)
    for stale in old[: max(0, len(old) - (keep - 1))]:
        shutil.rmtree(stale, ignore_errors=True)
    return final


def write_policy_folder(folder: Path, policy: MoLePolicy, meta: dict[str, Any]) -> None:
    """What `from_pretrained` and `mole-vla eval` read: the policy plus stats.json, dataset.json, train_config.json."""
    policy.save_pretrained(folder)
    for key in ("stats", "dataset", "train_config"):
        if key in meta:
            (folder / f"{key}.json").write_text(json.dumps(meta[key], indent=2, sort_keys=True) + "\n")


def write_training_checkpoint(
    folder: Path, policy: MoLePolicy, training_state: dict[str, Any], meta: dict[str, Any]
) -> None:
    """A policy folder a run can also continue from (--resume, --fork): write_policy_folder plus the training state."""
    write_policy_folder(folder, policy, meta)
    torch.save(training_state, folder / STATE_FILE)


def last_checkpoint(out: Path) -> Path | None:
    pointer = out / "checkpoints" / LAST_FILE
    if not pointer.is_file():
        return None
    folder = out / "checkpoints" / pointer.read_text().strip()
    if not (folder / STATE_FILE).is_file():
        raise FileNotFoundError(f"{pointer} names {folder.name}, which has no {STATE_FILE}")
    return folder


def load_training_state(folder: Path) -> dict[str, Any]:
    # weights_only=False: the state holds numpy/python RNG tuples; it is our own file, written by save_checkpoint.
    return torch.load(folder / STATE_FILE, map_location="cpu", weights_only=False)


def default_checkpoint() -> Path:
    """The shipped default policy: share/mole_vla_ros/checkpoints/default when installed, else the source tree's
    src/mole_vla_ros/checkpoints/default (a develop checkout before the first build)."""
    candidates = [Path(__file__).resolve().parents[2] / "checkpoints" / "default"]
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

        with contextlib.suppress(PackageNotFoundError):
            candidates.insert(0, Path(get_package_share_directory("mole_vla_ros")) / "checkpoints" / "default")
    except ImportError:  # no ROS on this machine: training and eval still work from the source tree
        pass
    return next((c for c in candidates if (c / "config.json").is_file()), candidates[-1])


def read_json(folder: Path, name: str) -> dict[str, Any] | None:
    path = Path(folder) / name
    return json.loads(path.read_text()) if path.is_file() else None
