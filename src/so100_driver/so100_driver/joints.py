"""The one table of the SO-100 / SO-101 joints: names, servo ids, limits.

Everything that names joints (URDF, MJCF, safety layer, driver, YAML, the policy's action space) reads this
table or is checked against it by a test, so the pieces cannot drift apart.

Conventions (see the design card, section 6):
- radians (REP-103), zero at the calibrated mid-range of each servo, as LeRobot calibrates; the sim and the
  URDF use the same zero, so real arm, sim and LeRobot data share one joint space;
- joint order = kinematic order = servo id order (ids 1..6);
- the gripper is a revolute joint in radians too (the jaw angle); 0 is the calibrated mid-range, the upper
  limit is wide open.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class JointSpec:
    """One joint of the arm.

    Args:
        name: joint name as in the URDF and in LeRobot's SO follower.
        servo_id: Feetech bus id of the servo that drives it.
        lower: lowest allowed position, rad.
        upper: highest allowed position, rad.
        max_velocity: the safety layer's velocity cap, rad/s (the STS3215 reaches about 4.7 rad/s at 7.4 V;
            the cap leaves margin so a policy never drives the arm at full speed).
        max_effort: stall torque used for the simulated actuator, N*m (STS3215: 1.96 N*m at 7.4 V).
    """

    name: str
    servo_id: int
    lower: float
    upper: float
    max_velocity: float = 3.0
    max_effort: float = 1.96

    def __post_init__(self) -> None:
        if not self.lower < self.upper:
            raise ValueError(f"joint {self.name}: lower limit {self.lower} must be below upper {self.upper}")
        if not 0 < self.servo_id < 253:
            raise ValueError(f"joint {self.name}: servo id {self.servo_id} outside 1..252")

    def clamp(self, position: float) -> float:
        return min(max(position, self.lower), self.upper)


def _deg(value: float) -> float:
    return math.radians(value)


# Limits around the calibrated mid-range (LeRobot's zero). Symmetric where the arm is; the shoulder lift and
# elbow are bounded by the links hitting each other or the base, the gripper by the jaw closing on itself.
SO100_JOINTS: tuple[JointSpec, ...] = (
    JointSpec("shoulder_pan", 1, _deg(-110.0), _deg(110.0)),
    JointSpec("shoulder_lift", 2, _deg(-100.0), _deg(100.0)),
    JointSpec("elbow_flex", 3, _deg(-97.0), _deg(97.0)),
    JointSpec("wrist_flex", 4, _deg(-95.0), _deg(95.0)),
    JointSpec("wrist_roll", 5, _deg(-160.0), _deg(160.0)),
    JointSpec("gripper", 6, _deg(-10.0), _deg(100.0)),
)

# The SO-101 has the same joint names and ids; its links and some ranges differ.
SO101_JOINTS: tuple[JointSpec, ...] = (
    JointSpec("shoulder_pan", 1, _deg(-110.0), _deg(110.0)),
    JointSpec("shoulder_lift", 2, _deg(-100.0), _deg(100.0)),
    JointSpec("elbow_flex", 3, _deg(-97.0), _deg(97.0)),
    JointSpec("wrist_flex", 4, _deg(-95.0), _deg(95.0)),
    JointSpec("wrist_roll", 5, _deg(-157.0), _deg(163.0)),
    JointSpec("gripper", 6, _deg(-10.0), _deg(100.0)),
)

ARMS: dict[str, tuple[JointSpec, ...]] = {"so100": SO100_JOINTS, "so101": SO101_JOINTS}

JOINT_NAMES: tuple[str, ...] = tuple(j.name for j in SO100_JOINTS)
ARM_JOINT_NAMES: tuple[str, ...] = JOINT_NAMES[:5]
GRIPPER_JOINT_NAME: str = JOINT_NAMES[5]


def joints_for(arm: str = "so100") -> tuple[JointSpec, ...]:
    """The joint table of an arm model ("so100" or "so101")."""
    try:
        return ARMS[arm]
    except KeyError:
        raise ValueError(f"unknown arm model {arm!r}; expected one of {sorted(ARMS)}") from None


def joint_by_name(name: str, arm: str = "so100") -> JointSpec:
    for joint in joints_for(arm):
        if joint.name == name:
            return joint
    raise KeyError(f"unknown joint {name!r}; the {arm} has {list(JOINT_NAMES)}")
