"""The calibration CLI procedure against the fake servo bus (joints moved 'by hand' by the test)."""

from __future__ import annotations

import json

from so100_driver.calibrate import calibrate, main
from so100_driver.calibration import load_calibration
from so100_driver.feetech.bus import FeetechBus
from so100_driver.joints import SO100_JOINTS
from so100_driver.testing.fake_sts_bus import FakeStsBus


def test_calibrate_records_homing_and_ranges():
    with FakeStsBus(positions={i: 1500 + 100 * i for i in range(1, 7)}) as fake:
        bus = FeetechBus(fake.port).open()
        prompts = []
        sweep = iter([-600, 700, None])

        def done():  # the user moves each joint by hand, then presses Enter
            delta = next(sweep)
            if delta is None:
                return True
            with fake.lock:
                for i in range(1, 7):
                    fake.servo(i).position = 1500 + 100 * i + delta
            return False

        cal = calibrate(bus, SO100_JOINTS, "so100", prompts.append, done)
        bus.close()
        assert "MIDDLE" in prompts[0] and "WHOLE range" in prompts[1]
        for i, joint in enumerate(SO100_JOINTS, start=1):
            c = cal.joints[joint.name]
            assert c.homing_offset == 1500 + 100 * i - 2047
            assert (c.range_min, c.range_max) == (2047 - 600, 2047 + 700)
            assert fake.servo(i).get("Torque_Enable") == 0


def test_cli_converts_a_lerobot_json(tmp_path):
    data = {
        j.name: {"id": j.servo_id, "drive_mode": 0, "homing_offset": 10, "range_min": 900, "range_max": 3100}
        for j in SO100_JOINTS
    }
    src = tmp_path / "follower.json"
    src.write_text(json.dumps(data))
    out = tmp_path / "so100.yaml"
    assert main(["--from-lerobot", str(src), "--output", str(out)]) == 0
    assert load_calibration(out).joints["wrist_roll"].range_max == 3100
