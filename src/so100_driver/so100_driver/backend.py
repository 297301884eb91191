"""The contract between the arm controller and whatever moves the joints: real servos or MuJoCo.

`arm_node` drives a `JointBackend`; the Feetech bus (`feetech_backend.py`) and the MuJoCo sim
(`sim/mujoco_backend.py`) both implement it, so the real and the simulated arm have exactly one ROS interface.
Everything here is ROS-free.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np


class BackendError(RuntimeError):
    """A joint backend failed in a way the caller must report (a lost servo, a closed port...).

    `joint` names the joint concerned when the fault is one joint's (None for the whole bus).
    """

    def __init__(self, message: str, joint: str | None = None) -> None:
        super().__init__(message)
        self.joint = joint


@dataclass
class JointReading:
    """One read of every joint, in the backend's joint order. Units: rad, rad/s, N*m (or the servo's load
    fraction where torque is not measured), seconds for `stamp` (monotonic or sim time, as the backend says).

    `faults` maps joint name -> human-readable fault for joints that did not answer or reported an error;
    their entries in the arrays then hold the last good value.
    """

    stamp: float
    positions: np.ndarray  # (J,)
    velocities: np.ndarray  # (J,)
    efforts: np.ndarray  # (J,)
    faults: dict[str, str] = field(default_factory=dict)


class JointBackend(Protocol):
    """What moves the joints. Positions are in the calibrated joint space of `so100_driver.joints` (rad)."""

    joint_names: tuple[str, ...]

    def read(self) -> JointReading:
        """Read every joint. Raises BackendError only when nothing could be read at all."""
        ...

    def write_goal(self, positions: np.ndarray) -> None:
        """Send goal positions (J,), already checked by the safety layer. Raises BackendError on failure."""
        ...

    def set_torque(self, enabled: bool) -> None:
        """Enable or disable holding torque on every joint."""
        ...

    def close(self) -> None:
        """Release the hardware or the simulation (idempotent)."""
        ...
