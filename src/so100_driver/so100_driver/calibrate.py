"""Calibrate an SO-100/SO-101 by hand: `calibrate --port /dev/ttyACM0 [--arm-model so100] [--output FILE]`.

Steps (LeRobot's procedure, so the result is interchangeable with its calibration JSON):
1. torque off on every servo (you move the arm by hand);
2. put every joint in the middle of its range, press Enter: each servo's Homing_Offset is set so that this pose
   reads tick 2047 (half a turn);
3. move every joint through its whole range, press Enter when done: the min/max ticks seen become range_min/max;
4. the calibration is written as YAML (`config/calibration/<arm_model>.yaml` by default).
`--from-lerobot FILE.json` converts an existing LeRobot calibration instead, touching no hardware.
"""

from __future__ import annotations

import argparse
import select
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from so100_driver.calibration import CONFIG_DIR, Calibration, JointCalibration, import_lerobot_json, save_calibration
from so100_driver.feetech.bus import FeetechBus
from so100_driver.joints import JointSpec, joints_for

HALF_TURN = 2047


def set_half_turn_homing(bus: FeetechBus, ids: Sequence[int]) -> dict[int, int]:
    """Make the current pose read HALF_TURN on every servo; returns the homing offsets written."""
    offsets = {}
    for servo_id in ids:
        bus.write("Lock", servo_id, 0)  # EEPROM register: unlock, write, lock
        bus.write("Homing_Offset", servo_id, 0)
        offsets[servo_id] = bus.read("Present_Position", servo_id) - HALF_TURN
        bus.write("Homing_Offset", servo_id, offsets[servo_id])
        bus.write("Lock", servo_id, 1)
    return offsets


def record_ranges(
    bus: FeetechBus, ids: Sequence[int], done: Callable[[], bool], period: float = 0.02
) -> dict[int, tuple[int, int]]:
    """Min and max Present_Position of each servo until `done()` is true."""
    seen: dict[int, tuple[int, int]] = {}
    while True:
        states, _failures = bus.sync_read_state(ids)
        for servo_id, state in states.items():
            lo, hi = seen.get(servo_id, (state.position, state.position))
            seen[servo_id] = (min(lo, state.position), max(hi, state.position))
        if done():
            return seen
        time.sleep(period)


def calibrate(
    bus: FeetechBus,
    joints: Sequence[JointSpec],
    arm_model: str,
    prompt: Callable[[str], None],
    done: Callable[[], bool],
) -> Calibration:
    ids = [j.servo_id for j in joints]
    bus.set_torque(ids, False)
    prompt("Torque is off. Move every joint to the MIDDLE of its range, then press Enter.")
    offsets = set_half_turn_homing(bus, ids)
    prompt("Now move EVERY joint slowly through its WHOLE range. Press Enter when done.")
    ranges = record_ranges(bus, ids, done)
    missing = [j.name for j in joints if j.servo_id not in ranges or ranges[j.servo_id][0] == ranges[j.servo_id][1]]
    if missing:
        raise RuntimeError(f"no motion recorded for {missing}: move them through their range and run again")
    calibration = {j.name: JointCalibration(j.servo_id, 0, offsets[j.servo_id], *ranges[j.servo_id]) for j in joints}
    return Calibration(calibration, arm_model)


def _enter_pressed() -> bool:
    ready, _, _ = select.select([sys.stdin], [], [], 0)
    if ready:
        sys.stdin.readline()
        return True
    return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="calibrate", description=__doc__.splitlines()[0])
    parser.add_argument("--port", default="/dev/ttyACM0", help="serial port of the servo bus")
    parser.add_argument("--baudrate", type=int, default=1_000_000)
    parser.add_argument("--arm-model", default="so100", choices=["so100", "so101"])
    parser.add_argument("--output", type=Path, help="YAML to write (default config/calibration/<arm_model>.yaml)")
    parser.add_argument("--from-lerobot", type=Path, help="convert this LeRobot calibration JSON; no hardware")
    args = parser.parse_args(argv)
    output = args.output or CONFIG_DIR / f"{args.arm_model}.yaml"
    joints = joints_for(args.arm_model)
    if args.from_lerobot:
        calibration = import_lerobot_json(args.from_lerobot, args.arm_model)
        calibration.for_joints(joints)  # every joint present with the right id
    else:
        bus = FeetechBus(args.port, args.baudrate).open()
        try:

            def prompt(text: str) -> None:
                input(f"\n{text}")

            calibration = calibrate(bus, joints, args.arm_model, prompt, _enter_pressed)
        finally:
            bus.close()
    save_calibration(calibration, output)
    print(f"calibration written to {output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
