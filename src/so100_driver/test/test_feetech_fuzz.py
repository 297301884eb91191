"""Fuzzing the servo protocol parsers with seeded random and mutated packets (issue 8).

- Replies: the REAL scservo_sdk's status-packet parser plus `FeetechBus.sync_read_state` read >= 100k random and
  mutated status packets from an in-memory port. Nothing raises; every state accepted was carried by a checksum-valid
  frame of that servo with exactly those bytes; no position outside 0..4095 gets through.
- The arm on top: `ArmController` over `FeetechBackend` over that port, commanded every cycle while replies are
  fuzzed. No goal ever leaves the calibrated range, and no cycle whose read was bad sends a new goal (it holds).
- Instructions: the fake bus's parser (what the tests' servos obey) reads >= 100k random and mutated instruction
  packets: nothing raises, no register is written without a checksum-valid WRITE / SYNC WRITE, and the register file
  keeps its size.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable

from so100_driver.arm import ArmController, CommandRejectedError
from so100_driver.calibration import default_calibration
from so100_driver.feetech.bus import STATE_LENGTH, STATE_START, FeetechBus
from so100_driver.feetech.tables import CONTROL_TABLE, STS3215_MODEL_NUMBER
from so100_driver.feetech_backend import FeetechBackend
from so100_driver.joints import SO100_JOINTS
from so100_driver.safety import SafetyLayer, SafetyLimits
from so100_driver.testing.fake_sts_bus import (
    INST_PING,
    INST_READ,
    INST_SYNC_READ,
    INST_SYNC_WRITE,
    INST_WRITE,
    FakeStsBus,
    build_packet,
)

IDS = [1, 2, 3, 4, 5, 6]
SEED = 20260817
POSITION_AT = CONTROL_TABLE["Present_Position"][0] - STATE_START


class ScriptedPort:
    """Stands in for scs.PortHandler: each request written makes `respond(request)` arrive at the input.

    A read that finds the input empty times out at once (in a real port nothing more would come either).
    """

    def __init__(self, respond: Callable[[bytes], bytes]) -> None:
        self.is_open, self.is_using, self.ser = True, False, self
        self.respond = respond
        self.input = bytearray()
        self.goals: list[bytes] = []  # every SYNC WRITE packet sent

    # pyserial side (what FeetechBus touches directly)
    def reset_input_buffer(self) -> None:
        self.input.clear()

    # PortHandler side (what the SDK calls)
    def clearPort(self) -> None:
        pass

    def writePort(self, packet: list[int]) -> int:
        packet = bytes(packet)
        if packet[4] == INST_SYNC_WRITE:
            self.goals.append(packet)
        else:
            self.input += self.respond(packet)
        return len(packet)

    def readPort(self, length: int) -> bytes:
        out = bytes(self.input[:length])
        del self.input[:length]
        return out

    def setPacketTimeout(self, _length: int) -> None:
        pass

    def setPacketTimeoutMillis(self, _msec: float) -> None:
        pass

    def isPacketTimeout(self) -> bool:
        return not self.input

    def closePort(self) -> None:
        self.is_open = False


def bus_on(port: ScriptedPort) -> FeetechBus:
    bus = FeetechBus("/dev/fuzz")
    bus._port = port
    return bus


def status_packet(rng: random.Random, servo_id: int, error: int | None = None) -> bytes:
    state = bytearray(rng.randbytes(STATE_LENGTH))
    state[POSITION_AT : POSITION_AT + 2] = rng.randrange(4096).to_bytes(2, "little")
    if error is None:
        error = rng.choice([0, 0, 0, 0, 1, 2, 4, 8, 32, 36])
    return build_packet(servo_id, error, bytes(state))


def mutate(rng: random.Random, packet: bytes) -> bytes:
    """One of the ways a byte stream gets damaged on a noisy half-duplex line."""
    data = bytearray(packet)
    kind = rng.randrange(9)
    if kind == 0:  # one bit flipped
        i = rng.randrange(len(data))
        data[i] ^= 1 << rng.randrange(8)
    elif kind == 1:  # a few bytes overwritten
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
    elif kind == 2:  # cut short
        del data[rng.randrange(len(data)) :]
    elif kind == 3:  # a byte inserted
        data.insert(rng.randrange(len(data) + 1), rng.randrange(256))
    elif kind == 4:  # a byte lost
        del data[rng.randrange(len(data))]
    elif kind == 5:  # the length field lies
        data[3] = rng.randrange(256)
    elif kind == 6:  # noise before it
        data[:0] = rng.randbytes(rng.randint(1, 8))
    elif kind == 7:  # pure noise, sometimes with stray headers
        data = bytearray(rng.randbytes(rng.randint(0, 40)))
        if data and rng.random() < 0.5:
            data[rng.randrange(len(data)) :][:2] = b"\xff\xff"
    else:  # another servo's reply in its place
        data[2] = rng.choice([i for i in range(1, 10) if i != data[2]])
    return bytes(data)


def valid_frames(stream: bytes) -> dict[int, list[bytes]]:
    """Reference scanner: servo id -> params of every checksum-valid frame anywhere in `stream`."""
    found: dict[int, list[bytes]] = {}
    for i in range(len(stream) - 5):
        if stream[i] != 0xFF or stream[i + 1] != 0xFF:
            continue
        servo_id, length = stream[i + 2], stream[i + 3]
        end = i + 4 + length
        if length < 2 or end > len(stream):
            continue
        if (~sum(stream[i + 2 : end - 1]) & 0xFF) == stream[end - 1]:
            found.setdefault(servo_id, []).append(stream[i + 5 : end - 1])
    return found


def test_sync_read_parser_survives_100k_fuzzed_status_packets():
    rng = random.Random(SEED)
    sent: list[bytes] = []  # every byte stream the "servos" sent this cycle

    def respond(request: bytes) -> bytes:
        if request[4] == INST_SYNC_READ:  # one reply slot per servo: clean, damaged or missing
            slots = []
            for servo_id in IDS:
                packet, r = status_packet(rng, servo_id), rng.random()
                slots.append(packet if r < 0.5 else mutate(rng, packet) if r < 0.95 else b"")
            stream = b"".join(slots)
        else:  # the bus retrying one servo on its own: damaged or clean
            packet = status_packet(rng, request[2])
            stream = packet if rng.random() < 0.3 else mutate(rng, packet)
        sent.append(stream)
        return stream

    bus = bus_on(ScriptedPort(respond))
    accepted = rejected = cycles = 0
    while cycles * len(IDS) < 102_000:
        sent.clear()
        states, failures = bus.sync_read_state(IDS)
        cycles += 1
        assert set(states) | set(failures) == set(IDS)
        frames: dict[int, list[bytes]] = {}
        for stream in sent:
            for servo_id, params in valid_frames(stream).items():
                frames.setdefault(servo_id, []).extend(params)
        for servo_id, state in states.items():
            assert 0 <= state.position <= 4095
            carried = [
                int.from_bytes(p[POSITION_AT : POSITION_AT + 2], "little")
                for p in frames.get(servo_id, [])
                if len(p) >= STATE_LENGTH
            ]
            assert state.position in carried, f"servo {servo_id}: position {state.position} from no valid frame"
            if state.error & (2 | 4 | 8 | 32):
                assert servo_id in failures  # a fatal status bit is never taken as a clean read
        accepted += len(states)
        rejected += len(failures)
    assert accepted > 10_000 and rejected > 10_000  # both paths exercised, not just one


def test_arm_never_moves_on_a_bad_reply_and_never_leaves_its_range():
    rng = random.Random(SEED + 1)
    calibration = default_calibration(SO100_JOINTS)
    cals = calibration.for_joints(SO100_JOINTS)
    noisy = [False]  # this cycle's replies are damaged

    def respond(request: bytes) -> bytes:
        servo_id, instruction = request[2], request[4]
        if instruction == INST_PING:
            return build_packet(servo_id, 0)
        if instruction == INST_READ and request[5] == CONTROL_TABLE["Model_Number"][0]:
            return build_packet(servo_id, 0, STS3215_MODEL_NUMBER.to_bytes(2, "little"))
        ids = IDS if instruction == INST_SYNC_READ else [servo_id]
        clean = [_state_packet(i, 2048 + rng.randint(-400, 400)) for i in ids]
        return b"".join(mutate(rng, p) if noisy[0] else p for p in clean)

    port = ScriptedPort(respond)
    backend = FeetechBackend(bus_on(port), calibration, SO100_JOINTS, reprobe_interval=0.0)
    limits = SafetyLimits.from_joints(SO100_JOINTS, max_acceleration=1000.0, max_step=1.0)
    clock = [0.0]
    controller = ArmController(backend, SafetyLayer(limits, watchdog_timeout=0.5), clock=lambda: clock[0])
    controller.start(torque=False)
    previous = None
    bad_cycles = 0
    for _ in range(3000):
        clock[0] += 0.01
        target = [rng.uniform(j.lower - 1, j.upper + 1) for j in SO100_JOINTS]
        with contextlib.suppress(CommandRejectedError):  # refused while a fault is reported: expected
            controller.set_target([j.name for j in SO100_JOINTS], target)
        noisy[0] = rng.random() < 0.5
        result = controller.step()
        goal = port.goals[-1]
        # FF FF FE len 0x83 address size, then (id, low, high) per servo, then the checksum
        assert [goal[7 + 3 * k] for k in range(len(IDS))] == IDS
        ticks = [int.from_bytes(goal[8 + 3 * k : 10 + 3 * k], "little") for k in range(len(IDS))]
        for cal, tick in zip(cals, ticks, strict=True):
            assert cal.range_min <= tick <= cal.range_max
        if result.faults:
            bad_cycles += 1
            assert previous is None or goal == previous, "a goal changed on a cycle whose read was bad"
        previous = goal
    assert 300 < bad_cycles < 2900
    assert len({g for g in port.goals}) > 100  # clean cycles did move the arm


def _state_packet(servo_id: int, position: int) -> bytes:
    state = bytearray(STATE_LENGTH)
    state[POSITION_AT : POSITION_AT + 2] = position.to_bytes(2, "little")
    return build_packet(servo_id, 0, bytes(state))


def test_fake_bus_instruction_parser_survives_100k_fuzzed_packets():
    rng = random.Random(SEED + 2)
    bus = FakeStsBus(IDS)  # not started: packets go straight to its parser, replies go nowhere
    try:
        goal_at, goal_size = CONTROL_TABLE["Goal_Position"]
        writes = 0
        for n in range(100_000):
            kind = rng.randrange(4)
            if kind == 0:
                goals = b"".join(bytes([i]) + rng.randrange(4096).to_bytes(2, "little") for i in IDS)
                packet = build_packet(0xFE, INST_SYNC_WRITE, bytes([goal_at, goal_size]) + goals)
            elif kind == 1:
                params = bytes([goal_at]) + rng.randrange(4096).to_bytes(2, "little")
                packet = build_packet(rng.choice(IDS), INST_WRITE, params)
            elif kind == 2:  # a write anywhere, of any size, up to the end of the table and past it
                packet = build_packet(rng.choice(IDS), INST_WRITE, bytes([rng.randrange(256)]) + rng.randbytes(5))
            else:
                packet = build_packet(rng.choice([*IDS, 0xFE]), rng.randrange(256), rng.randbytes(rng.randint(0, 12)))
            data = packet if n % 10 == 0 else mutate(rng, packet)
            before = {i: bytes(bus.servo(i).registers) for i in IDS}
            bus._buffer.clear()
            bus._buffer.extend(data)
            for parsed in bus._packets():
                bus._handle(parsed)
            changed = [i for i in IDS if bytes(bus.servo(i).registers) != before[i]]
            for i in IDS:
                assert len(bus.servo(i).registers) == 256
            if changed:
                writes += 1
                frames = [p for fid, ps in valid_frames(data).items() for p in ps if fid in (*IDS, 0xFE)]
                instructions = {
                    bytes(data[k + 4 : k + 5]) for k in range(len(data) - 4) if data[k : k + 2] == b"\xff\xff"
                }
                assert frames and instructions & {bytes([INST_WRITE]), bytes([INST_SYNC_WRITE])}, (
                    f"registers of {changed} changed on {data.hex()}"
                )
        assert writes > 5_000
    finally:
        bus.stop()
