"""Servo calibration: raw ticks (0..4095) <-> joint radians, per joint. ROS-free.

One joint's calibration is LeRobot's `MotorCalibration`: `id`, `drive_mode` (0 or 1: direction), `homing_offset`
(ticks, written into the servo's Homing_Offset register so Present_Position reads `physical - offset`),
`range_min`/`range_max` (ticks, in that homed frame, recorded by moving the joint through its range).

Conversion, the same as LeRobot's `MotorNormMode.DEGREES` but in radians (so the real arm, the sim and LeRobot
datasets share one joint space):

    rad = sign * (ticks - mid) * 2*pi / 4095,   mid = (range_min + range_max) / 2,   sign = -1 if drive_mode else 1

(4095 = LeRobot's `max_res`, the model resolution minus one, kept for bit-compatibility with its degrees.)
The gripper is a joint like the others: radians of jaw rotation, 0 at mid-range, larger = more open on the
default calibration. Commands are clamped to [range_min, range_max] in ticks before they reach a servo.

Files: our YAML (`config/calibration/*.yaml`, see `so100_default.yaml`) or LeRobot's calibration JSON for SO-100/
SO-101 followers (`{joint: {id, drive_mode, homing_offset, range_min, range_max}}`), read as it is.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import yaml

from so100_driver.feetech.tables import MAX_TICK
from so100_driver.joints import JointSpec

TICKS_PER_RAD = 4095 / (2 * math.pi)
CONFIG_DIR = Path(__file__).resolve().parents[3] / "config" / "calibration"


@dataclass(frozen=True)
class JointCalibration:
    id: int
    drive_mode: int
    homing_offset: int
    range_min: int
    range_max: int

    def __post_init__(self) -> None:
        if self.drive_mode not in (0, 1):
            raise ValueError(f"servo {self.id}: drive_mode must be 0 or 1, got {self.drive_mode}")
        if not 0 <= self.range_min < self.range_max <= MAX_TICK:
            raise ValueError(
                f"servo {self.id}: need 0 <= range_min < range_max <= {MAX_TICK}, "
                f"got {self.range_min}..{self.range_max}"
            )
        if not -2047 <= self.homing_offset <= 2047:  # sign-magnitude, sign in bit 11
            raise ValueError(f"servo {self.id}: homing_offset {self.homing_offset} outside -2047..2047")

    @property
    def mid(self) -> float:
        return (self.range_min + self.range_max) / 2

    @property
    def sign(self) -> int:
        return -1 if self.drive_mode else 1

    def to_radians(self, ticks: float) -> float:
        return self.sign * (ticks - self.mid) / TICKS_PER_RAD

    def to_ticks(self, radians: float) -> int:
        """Radians -> ticks, clamped to the calibrated range (never outside what was recorded)."""
        if not math.isfinite(radians):
            raise ValueError(f"servo {self.id}: cannot convert non-finite position {radians}")
        ticks = round(self.mid + self.sign * radians * TICKS_PER_RAD)
        return int(min(max(ticks, self.range_min), self.range_max))


@dataclass(frozen=True)
class Calibration:
    """Per-joint calibrations keyed by joint name, in joint order."""

    joints: dict[str, JointCalibration]
    arm_model: str = "so100"

    def for_joints(self, specs: Sequence[JointSpec]) -> list[JointCalibration]:
        """Calibrations in the order of `specs`; checks every joint is there with its table servo id."""
        missing = [j.name for j in specs if j.name not in self.joints]
        if missing:
            raise ValueError(f"calibration has no entry for joint(s) {missing}")
        for spec in specs:
            if self.joints[spec.name].id != spec.servo_id:
                raise ValueError(
                    f"calibration gives {spec.name} servo id {self.joints[spec.name].id}, "
                    f"the joint table says {spec.servo_id}"
                )
        return [self.joints[j.name] for j in specs]

    def to_radians(self, names: Sequence[str], ticks: Sequence[float]) -> np.ndarray:
        return np.array([self.joints[n].to_radians(t) for n, t in zip(names, ticks, strict=True)])

    def to_ticks(self, names: Sequence[str], radians: Sequence[float]) -> list[int]:
        return [self.joints[n].to_ticks(r) for n, r in zip(names, radians, strict=True)]


def _parse_joints(data: Mapping[str, object], source: str) -> dict[str, JointCalibration]:
    joints = {}
    for name, entry in data.items():
        if not isinstance(entry, Mapping):
            raise ValueError(f"{source}: entry for {name!r} is not a mapping")
        try:
            joints[name] = JointCalibration(
                id=int(entry["id"]),
                drive_mode=int(entry["drive_mode"]),
                homing_offset=int(entry["homing_offset"]),
                range_min=int(entry["range_min"]),
                range_max=int(entry["range_max"]),
            )
        except KeyError as exc:
            raise ValueError(f"{source}: joint {name!r} lacks {exc.args[0]!r}") from None
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{source}: joint {name!r}: {exc}") from None
    if not joints:
        raise ValueError(f"{source}: no joints")
    return joints


def load_calibration(path: str | Path) -> Calibration:
    """Our YAML or LeRobot's JSON (by suffix). Raises ValueError with the file name on bad content."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"calibration file {path} not found")
    if path.suffix == ".json":
        return import_lerobot_json(path)
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, Mapping) or "joints" not in data:
        raise ValueError(f"{path}: expected a mapping with 'joints'")
    return Calibration(_parse_joints(data["joints"], str(path)), str(data.get("arm_model", "so100")))


def import_lerobot_json(path: str | Path, arm_model: str = "so100") -> Calibration:
    """A LeRobot SO-100/SO-101 follower calibration JSON, as LeRobot writes it."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(data, Mapping):
        raise ValueError(f"{path}: expected a JSON object of joints")
    return Calibration(_parse_joints(data, str(path)), arm_model)


def save_calibration(calibration: Calibration, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = (
        "# SO-100/SO-101 servo calibration (LeRobot's MotorCalibration fields).\n"
        "# homing_offset, range_min, range_max: servo ticks (4096 per turn); drive_mode: 0 or 1 (direction).\n"
        "# Joint angle (rad) = (1 - 2*drive_mode) * (ticks - (range_min + range_max)/2) * 2*pi/4095.\n"
    )
    body = {"arm_model": calibration.arm_model, "joints": {n: asdict(c) for n, c in calibration.joints.items()}}
    path.write_text(header + yaml.safe_dump(body, sort_keys=False))
    return path


def default_calibration_path(arm_model: str = "so100") -> Path:
    """The shipped calibration: from the source tree, or from the installed package share."""
    candidates = [CONFIG_DIR / f"{arm_model}_default.yaml", CONFIG_DIR / "so100_default.yaml"]
    try:
        from ament_index_python.packages import get_package_share_directory

        share = Path(get_package_share_directory("so100_driver")) / "config" / "calibration"
        candidates += [share / f"{arm_model}_default.yaml", share / "so100_default.yaml"]
    except Exception:
        pass
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"no default calibration for {arm_model}; looked in {[str(c) for c in candidates]}")


def default_calibration(specs: Sequence[JointSpec], margin: float = math.radians(5.0)) -> Calibration:
    """A calibration centred on tick 2048 whose range covers each joint's limits plus `margin` (rad)."""
    joints = {}
    for spec in specs:
        half = round((max(abs(spec.lower), abs(spec.upper)) + margin) * TICKS_PER_RAD)
        joints[spec.name] = JointCalibration(spec.servo_id, 0, 0, 2048 - half, 2048 + half)
    return Calibration(joints)
