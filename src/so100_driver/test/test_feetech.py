"""The real scservo_sdk against the simulated STS3215 bus on a pty: protocol, faults, the backend on top."""

from __future__ import annotations

import termios
import time

import numpy as np
import pytest

from so100_driver.backend import BackendError
from so100_driver.calibration import default_calibration
from so100_driver.feetech.bus import FeetechBus, FeetechBusError
from so100_driver.feetech.tables import CONTROL_TABLE, decode_sign_magnitude, describe_error, encode_sign_magnitude
from so100_driver.feetech_backend import FeetechBackend
from so100_driver.joints import SO100_JOINTS
from so100_driver.testing.fake_sts_bus import FakeStsBus, build_packet, checksum
from so100_driver.testing.ros_harness import wait_until

IDS = [1, 2, 3, 4, 5, 6]


@pytest.fixture
def fake():
    with FakeStsBus(IDS) as bus:
        yield bus


@pytest.fixture
def bus(fake):
    b = FeetechBus(fake.port).open()
    yield b
    b.close()


def test_control_table_addresses_match_the_datasheet():
    # Spot checks against Feetech's STS memory table (as LeRobot transcribes it).
    assert CONTROL_TABLE["Torque_Enable"] == (40, 1)
    assert CONTROL_TABLE["Goal_Position"] == (42, 2)
    assert CONTROL_TABLE["Present_Position"] == (56, 2)
    assert CONTROL_TABLE["Homing_Offset"] == (31, 2)
    assert CONTROL_TABLE["Lock"] == (55, 1)


@pytest.mark.parametrize(("value", "bit"), [(0, 11), (2047, 11), (-2047, 11), (-1, 15), (3000, 15), (-3000, 15)])
def test_sign_magnitude_round_trip(value, bit):
    assert decode_sign_magnitude(encode_sign_magnitude(value, bit), bit) == value


def test_packet_layout_and_checksum():
    packet = build_packet(1, 2, [56, 2])  # READ 2 bytes from 56
    assert packet == bytes([0xFF, 0xFF, 1, 4, 2, 56, 2, (~(1 + 4 + 2 + 56 + 2)) & 0xFF])
    assert checksum(packet[2:-1]) == packet[-1]
    assert describe_error(32 | 4) == "overheat, overload"


def test_ping_identify_and_register_access(fake, bus):
    assert bus.identify([1, 2, 9]) == {1: 777, 2: 777, 9: None}
    bus.write("Homing_Offset", 3, -100)
    assert bus.read("Homing_Offset", 3) == -100
    assert fake.servo(3).get("Homing_Offset") == -100


def test_sync_write_moves_servos_at_finite_speed_and_sync_read_reports_it(fake, bus):
    bus.set_torque(IDS, True)
    bus.sync_write("Goal_Position", {i: 1000 + 100 * i for i in IDS})
    states, failures = bus.sync_read_state(IDS)
    assert failures == {}
    moving = states[1]
    assert moving.position > 1100  # not there yet: 3000 ticks/s from 2048
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        states, _ = bus.sync_read_state(IDS)
        if all(states[i].position == 1000 + 100 * i for i in IDS):
            break
        time.sleep(0.02)
    assert {i: states[i].position for i in IDS} == {i: 1000 + 100 * i for i in IDS}
    assert states[1].temperature == 30 and states[1].voltage == pytest.approx(7.4)


def test_silent_servo_is_reported_and_the_others_still_read(fake, bus):
    fake.servo(3).silent = True
    states, failures = bus.sync_read_state(IDS)
    assert sorted(states) == [1, 2, 4, 5, 6]
    assert "servo 3" in failures[3] and "no status packet" in failures[3]
    with pytest.raises(FeetechBusError, match="servo 3") as info:
        bus.ping(3)
    assert info.value.servo_id == 3


def test_one_corrupt_reply_is_retried_persistent_corruption_reported(fake, bus):
    fake.servo(4).corrupt_replies = 1
    states, failures = bus.sync_read_state(IDS)
    assert failures == {} and 4 in states
    fake.servo(4).corrupt_replies = -1
    states, failures = bus.sync_read_state(IDS)
    assert 4 in failures and "Incorrect status packet" in failures[4]


def test_overload_error_bit_is_reported_with_its_name(fake, bus):
    fake.servo(2).error_bits = 32
    states, failures = bus.sync_read_state(IDS)
    assert failures == {2: "servo 2 reports overload"}
    assert 2 in states  # the values are still there


def test_port_loss_raises_and_reopen_works(fake, bus):
    fake.disconnect()
    with pytest.raises(FeetechBusError, match="lost") as info:
        bus.sync_read_state(IDS)
    assert info.value.servo_id is None
    fake.reconnect()

    def reopened():
        try:
            return bus.open().ping(1) == 777
        except FeetechBusError:
            return False

    wait_until(reopened, 5, message="the port to reopen")


def test_a_dead_tty_failing_tcflush_is_a_lost_port_not_a_crash(fake, bus, monkeypatch):
    # termios.error is no OSError: unplugging mid-cycle made the input flush escape as an unknown exception.
    def dead(*_args):
        raise termios.error(5, "Input/output error")

    monkeypatch.setattr(bus._handle().ser, "reset_input_buffer", dead)
    with pytest.raises(FeetechBusError, match="lost") as info:
        bus.sync_read_state(IDS)
    assert info.value.servo_id is None and not bus.is_open


def test_bad_packets_from_the_host_side_are_ignored_by_servos(fake, bus):
    port = bus._handle()
    port.writePort(bytes([0xFF, 0xFF, 1, 4, 3, 42, 0x00, 0x00]))  # WRITE goal with a wrong checksum
    assert bus.ping(1) == 777
    assert fake.bad_packets >= 1
    assert fake.servo(1).get("Goal_Position") == 2048


# -- the backend ---------------------------------------------------------------------------------------------------
CAL = default_calibration(SO100_JOINTS)


@pytest.fixture
def backend(fake):
    be = FeetechBackend.open(fake.port, 1_000_000, CAL, SO100_JOINTS, reprobe_interval=0.2)
    yield be
    be.close()


def test_backend_reads_calibrated_radians_and_writes_clamped_ticks(fake, backend):
    reading = backend.read()
    assert reading.faults == {}
    assert np.allclose(reading.positions, 0.0, atol=2e-3)  # 2048 is mid-range
    backend.set_torque(True)
    backend.write_goal(np.array([0.5, -0.5, 0.0, 0.0, 0.0, 10.0]))  # gripper far beyond its range
    wait_until(lambda: fake.sync_writes, 2.0, message="the sync write to reach the bus")  # no reply by design
    goals = fake.sync_writes[-1][1]
    assert int.from_bytes(goals[1], "little") == CAL.joints["shoulder_pan"].to_ticks(0.5)
    assert int.from_bytes(goals[6], "little") == CAL.joints["gripper"].range_max


def test_backend_fault_per_joint_and_recovery(fake, backend, monkeypatch):
    polled = []
    sync_read = backend.bus.sync_read_state
    monkeypatch.setattr(backend.bus, "sync_read_state", lambda ids: polled.append(list(ids)) or sync_read(ids))
    fake.servo(5).silent = True
    reading = backend.read()
    assert set(reading.faults) == {"wrist_roll"}
    assert "does not answer" in reading.faults["wrist_roll"] or "no status packet" in reading.faults["wrist_roll"]
    reading = backend.read()
    # A silent servo costs the SDK's whole timeout per attempt: it is no longer polled every cycle.
    assert polled == [IDS, [1, 2, 3, 4, 6]]
    assert "retrying" in reading.faults["wrist_roll"]
    fake.servo(5).silent = False
    deadline = time.monotonic() + 2
    while backend.read().faults and time.monotonic() < deadline:
        time.sleep(0.05)
    assert backend.read().faults == {}


def test_backend_refuses_a_bus_with_a_missing_servo():
    with FakeStsBus([1, 2, 3, 4, 6]) as fake, pytest.raises(BackendError, match=r"wrist_roll \(servo 5\) does not"):
        FeetechBackend.open(fake.port, 1_000_000, CAL, SO100_JOINTS)


def test_backend_writes_homing_offsets_from_the_calibration(fake):
    cal = default_calibration(SO100_JOINTS)
    shifted = dict(cal.joints)
    shifted["elbow_flex"] = type(cal.joints["elbow_flex"])(3, 0, 100, 888, 3208)
    be = FeetechBackend.open(fake.port, 1_000_000, type(cal)(shifted), SO100_JOINTS)
    try:
        assert fake.servo(3).get("Homing_Offset") == 100
        assert fake.servo(3).get("Lock") == 1
        assert fake.servo(3).present() == 2048 - 100
    finally:
        be.close()


def test_backend_port_loss_then_back(fake, backend):
    backend.read()
    fake.disconnect()
    with pytest.raises(BackendError, match="lost"):
        backend.read()
    fake.reconnect()
    deadline = time.monotonic() + 2
    reading = None
    while time.monotonic() < deadline:
        try:
            reading = backend.read()
            break
        except BackendError:
            time.sleep(0.05)
    assert reading is not None and reading.faults == {}
