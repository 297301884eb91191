"""A leader arm (SO-100/SO-101 moved by hand for teleoperation): a read-only Feetech bus. ROS-free.

Positions come out in the follower's calibrated joint space (rad, zero at each joint's calibrated mid-range) by
applying the leader's own calibration, e.g. the LeRobot leader JSON exactly as LeRobot wrote it. Nothing is ever
written to the leader but Torque_Enable = 0 (a leader must be free to move by hand): no goal, no EEPROM. Homing
offsets are checked, not written: if the servos' offsets differ from the file, opening fails with a clear error.
Faults (silent servo, corrupt reply, lost port and its reopening) are handled by `FeetechBackend.read`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from so100_driver.backend import JointReading
from so100_driver.calibration import Calibration, load_calibration
from so100_driver.feetech.bus import FeetechBus
from so100_driver.feetech_backend import FeetechBackend
from so100_driver.joints import JointSpec


class LeaderArm:
    """Reads a leader arm. Use `LeaderArm.open(...)`; `read()` raises BackendError only when nothing answers."""

    def __init__(self, backend: FeetechBackend) -> None:
        self.backend = backend
        self.joint_names = backend.joint_names
        self.servo_ids = dict(zip(backend.joint_names, backend.ids, strict=True))

    @classmethod
    def open(
        cls,
        port: str,
        baudrate: int,
        calibration: Calibration | str | Path,
        joints: Sequence[JointSpec],
        reprobe_interval: float = 0.5,
    ) -> LeaderArm:
        if not isinstance(calibration, Calibration):
            calibration = load_calibration(calibration)
        bus = FeetechBus(port, baudrate).open()
        backend = FeetechBackend(bus, calibration, joints, reprobe_interval=reprobe_interval)
        try:
            backend.check_servos()
            backend.check_homing_offsets()
            backend.set_torque(False)
            backend.read()  # seeds every joint's last-known position
        except BaseException:
            bus.close()
            raise
        return cls(backend)

    def read(self) -> JointReading:
        return self.backend.read()

    def close(self) -> None:
        self.backend.close()
