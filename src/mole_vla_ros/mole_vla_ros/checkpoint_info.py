"""What a checkpoint expects from the robot's cameras, read from its `dataset.json` (written by `mole-vla train`).

The policy's image inputs are positional: camera i of the training data must be camera i at run time, at the
resolution it was trained on. The bringup and the policy node read it here, so a checkpoint trained on
(scene, wrist) gets the topics `camera/scene/image_raw` and `camera/wrist/image_raw` in that order, and the sim renders
them at the training size. ROS-free.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class CheckpointInfo:
    cameras: tuple[str, ...] = ("scene",)
    image_hw: tuple[int, int] | None = None  # (height, width) of the training images, px
    fps: float | None = None  # control / recording rate of the training data, Hz

    @property
    def image_topics(self) -> list[str]:
        return [camera_topic(name) for name in self.cameras]


def camera_topic(name: str) -> str:
    return f"camera/{name}/image_raw"


def read_checkpoint_info(checkpoint: str | Path) -> CheckpointInfo:
    """The camera layout of a local checkpoint folder; the defaults (one `scene` camera) when it records none."""
    path = Path(checkpoint) / "dataset.json" if checkpoint else None
    if path is None or not path.is_file():
        return CheckpointInfo()
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: unreadable checkpoint dataset description ({exc})") from exc
    cameras = tuple(str(c) for c in data.get("cameras") or ())
    if not cameras or len(set(cameras)) != len(cameras):
        raise ValueError(f"{path}: 'cameras' must be a non-empty list of distinct names, got {data.get('cameras')}")
    hw = data.get("image_hw")
    return CheckpointInfo(
        cameras=cameras,
        image_hw=(int(hw[0]), int(hw[1])) if hw else None,
        fps=float(data["fps"]) if data.get("fps") else None,
    )
