"""A simulated bus of Feetech STS3215 servos on a pseudo-terminal, speaking the real wire protocol.

The real `scservo_sdk` (and so the real driver and node) opens `bus.port` like a USB serial adapter. Packets are
`0xFF 0xFF id length instruction params... checksum` with `checksum = ~(id + length + instruction + params) & 0xFF`;
servos answer with status packets `0xFF 0xFF id length error params... checksum`. Supported instructions: PING,
READ, WRITE, SYNC READ, SYNC WRITE (what the SDK's PacketHandler/GroupSync* send). Packets with a bad checksum are
ignored, as real servos do.

Each servo has a 256-byte register file laid out as `feetech.tables.CONTROL_TABLE`; with torque on it moves toward
its goal at a finite speed (ticks/s), and `Present_Position` honours `Homing_Offset` like the firmware
(present = physical - offset, modulo one turn). Fault injection, per servo or for the bus:
- `servo.silent = True`: it stops answering (the SDK times out);
- `servo.corrupt_replies = n`: its next n replies carry a wrong checksum (-1: all of them);
- `servo.error_bits = 32`: every status packet reports overload (4: overheat, 1: voltage...);
- `bus.disconnect()` / `bus.reconnect()`: the port disappears (reads fail with EIO) and comes back at the same
  path (`bus.port` is a symlink that is re-pointed to a fresh pty).

Usage (also as a context manager): `bus = FakeStsBus(ids=[1, 2, 3, 4, 5, 6]).start(); ... bus.stop()`.
Several buses can run at once (follower and leader arms), each in its own thread.
"""

from __future__ import annotations

import contextlib
import os
import select
import tempfile
import threading
import time
import tty
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from so100_driver.feetech.tables import (
    CONTROL_TABLE,
    MAX_TICK,
    RESOLUTION,
    SIGN_BITS,
    STS3215_MODEL_NUMBER,
    decode_sign_magnitude,
    encode_sign_magnitude,
)

INST_PING, INST_READ, INST_WRITE, INST_SYNC_READ, INST_SYNC_WRITE = 1, 2, 3, 0x82, 0x83
BROADCAST_ID = 0xFE


def checksum(body: Iterable[int]) -> int:
    """Checksum over id, length, instruction/error and params."""
    return ~sum(body) & 0xFF


def build_packet(servo_id: int, code: int, params: bytes | list[int] = b"") -> bytes:
    """An instruction packet (code = instruction) or a status packet (code = error byte)."""
    body = [servo_id, len(params) + 2, code, *params]
    return bytes([0xFF, 0xFF, *body, checksum(body)])


@dataclass
class FakeServo:
    """One STS3215. `position` is the physical shaft angle in ticks (float, 0..4095)."""

    servo_id: int
    position: float = 2048.0
    speed: float = 3000.0  # ticks/s at full command (STS3215 no-load: about 3000 ticks/s at 7.4 V)
    silent: bool = False
    corrupt_replies: int = 0
    error_bits: int = 0
    temperature: int = 30  # deg C
    voltage: float = 7.4  # V
    registers: bytearray = field(default_factory=lambda: bytearray(256))
    velocity: float = 0.0  # ticks/s, last computed

    def __post_init__(self) -> None:
        self.set("Model_Number", STS3215_MODEL_NUMBER)
        self.set("ID", self.servo_id)
        self.set("Max_Position_Limit", MAX_TICK)
        self.set("Max_Temperature_Limit", 70)
        self.set("Max_Torque_Limit", 1000)
        self.set("Torque_Limit", 1000)
        self.set("Lock", 1)
        self.set("Goal_Position", self.present())
        self._sync_telemetry()

    # -- registers ------------------------------------------------------------------------------------------
    def get(self, name: str) -> int:
        address, size = CONTROL_TABLE[name]
        raw = int.from_bytes(self.registers[address : address + size], "little")
        return decode_sign_magnitude(raw, SIGN_BITS[name]) if name in SIGN_BITS else raw

    def set(self, name: str, value: int) -> None:
        address, size = CONTROL_TABLE[name]
        raw = encode_sign_magnitude(int(value), SIGN_BITS[name]) if name in SIGN_BITS else int(value)
        self.registers[address : address + size] = raw.to_bytes(size, "little")

    def present(self) -> int:
        """Present_Position as the firmware reports it: physical minus the homing offset, modulo one turn."""
        return (round(self.position) - self.get("Homing_Offset")) % RESOLUTION

    # -- physics ----------------------------------------------------------------------------------------------
    def advance(self, dt: float) -> None:
        if self.get("Torque_Enable") and not self.error_bits & 32:  # an overloaded servo stops driving
            goal = (self.get("Goal_Position") + self.get("Homing_Offset")) % RESOLUTION
            goal = min(max(goal, self.get("Min_Position_Limit")), self.get("Max_Position_Limit") or MAX_TICK)
            error = goal - self.position
            step = max(-self.speed * dt, min(self.speed * dt, error))
            self.position += step
            self.velocity = step / dt if dt > 0 else 0.0
        else:
            self.velocity = 0.0
        self._sync_telemetry()

    def _sync_telemetry(self) -> None:
        self.set("Present_Position", self.present())
        self.set("Present_Velocity", round(self.velocity))
        load = 1000 if self.error_bits & 32 else min(1000, int(abs(self.velocity) / 10))
        self.set("Present_Load", load)
        self.set("Present_Temperature", self.temperature)
        self.set("Present_Voltage", round(self.voltage * 10))
        self.set("Moving", int(abs(self.velocity) > 1))
        self.set("Status", self.error_bits)


class FakeStsBus:
    """A pty-backed bus of FakeServos served by a background thread (see the module docstring)."""

    def __init__(self, ids: Iterable[int] = (1, 2, 3, 4, 5, 6), positions: dict[int, float] | None = None) -> None:
        self.servos: dict[int, FakeServo] = {i: FakeServo(i) for i in ids}
        for servo_id, position in (positions or {}).items():
            self.servos[servo_id].position = float(position)
            self.servos[servo_id].set("Goal_Position", self.servos[servo_id].present())
            self.servos[servo_id].advance(0.0)
        self._dir = tempfile.TemporaryDirectory(prefix="fake_sts_")
        self.port = str(Path(self._dir.name) / "ttyFAKE0")
        self.lock = threading.RLock()  # hold it to change servos consistently from a test
        self.sync_writes: deque[tuple[float, dict[int, bytes]]] = deque(maxlen=100_000)
        self.bad_packets = 0
        self.packets = 0
        self._master: int | None = None
        self._slave: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_advance = time.monotonic()
        self._buffer = bytearray()

    # -- lifecycle ---------------------------------------------------------------------------------------------
    def start(self) -> FakeStsBus:
        self._open_pty()
        self._thread = threading.Thread(target=self._serve, name=f"fake-sts-bus {self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._close_pty()
        self._dir.cleanup()

    def __enter__(self) -> FakeStsBus:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def disconnect(self) -> None:
        """The adapter is unplugged: the pty closes (the SDK's reads/writes fail) and the path disappears."""
        with self.lock:
            self._close_pty()

    def reconnect(self) -> None:
        """Plugged back: a fresh pty at the same path."""
        with self.lock:
            self._open_pty()

    def servo(self, servo_id: int) -> FakeServo:
        return self.servos[servo_id]

    # -- pty -----------------------------------------------------------------------------------------------------
    def _open_pty(self) -> None:
        master, slave = os.openpty()
        tty.setraw(slave)  # no echo, no line discipline: a serial line, byte for byte
        os.set_blocking(master, False)
        self._master, self._slave = master, slave
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.port)
        os.symlink(os.ttyname(slave), self.port)
        self._buffer.clear()

    def _close_pty(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.port)
        for fd in (self._master, self._slave):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._master = self._slave = None

    # -- serving -------------------------------------------------------------------------------------------------
    def _serve(self) -> None:
        while not self._stop.is_set():
            master = self._master
            if master is None:
                time.sleep(0.01)
                continue
            try:
                ready, _, _ = select.select([master], [], [], 0.02)
            except (OSError, ValueError):
                time.sleep(0.01)
                continue
            if not ready:
                continue
            try:
                data = os.read(master, 4096)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:  # slave side closed / pty torn down
                time.sleep(0.005)
                continue
            with self.lock:
                self._buffer.extend(data)
                self._advance()
                for packet in self._packets():
                    self._handle(packet)

    def _advance(self) -> None:
        now = time.monotonic()
        dt, self._last_advance = now - self._last_advance, now
        for servo in self.servos.values():
            servo.advance(dt)

    def _packets(self) -> list[bytes]:
        """Complete, checksum-valid packets taken from the buffer (garbage and bad packets are dropped)."""
        out = []
        buf = self._buffer
        while True:
            start = buf.find(b"\xff\xff")
            if start < 0:
                del buf[:-1]  # keep a trailing 0xFF that may start a header
                return out
            del buf[:start]
            if len(buf) < 4:
                return out
            if buf[2] == 0xFF:  # 0xFF 0xFF 0xFF ...: slide by one
                del buf[0]
                continue
            length = buf[3]
            total = length + 4
            if length < 2:
                del buf[:2]
                self.bad_packets += 1
                continue
            if len(buf) < total:
                return out
            packet = bytes(buf[:total])
            del buf[:total]
            if checksum(packet[2:-1]) != packet[-1]:
                self.bad_packets += 1
                continue
            self.packets += 1
            out.append(packet)

    def _reply(self, servo: FakeServo, params: bytes = b"") -> None:
        if servo.silent or self._master is None:
            return
        packet = bytearray(build_packet(servo.servo_id, servo.error_bits & 0x7F, params))
        if servo.corrupt_replies:
            packet[-1] ^= 0x5A
            if servo.corrupt_replies > 0:
                servo.corrupt_replies -= 1
        with contextlib.suppress(OSError):
            os.write(self._master, bytes(packet))

    def _handle(self, packet: bytes) -> None:
        servo_id, instruction, params = packet[2], packet[4], packet[5:-1]
        if instruction == INST_SYNC_WRITE and servo_id == BROADCAST_ID and len(params) >= 2:
            address, size = params[0], params[1]
            payload = params[2:]
            entries: dict[int, bytes] = {}
            for k in range(0, len(payload) - size, size + 1):
                target, data = payload[k], payload[k + 1 : k + 1 + size]
                if len(data) == size and target in self.servos:
                    self._write(self.servos[target], address, data)
                    entries[target] = bytes(data)
            self.sync_writes.append((time.monotonic(), entries))
        elif instruction == INST_SYNC_READ and servo_id == BROADCAST_ID and len(params) >= 2:
            address, size = params[0], params[1]
            for target in params[2:]:
                if target in self.servos:
                    servo = self.servos[target]
                    self._reply(servo, bytes(servo.registers[address : address + size]))
        elif servo_id in self.servos:
            servo = self.servos[servo_id]
            if instruction == INST_PING:
                self._reply(servo)
            elif instruction == INST_READ and len(params) == 2:
                address, size = params
                self._reply(servo, bytes(servo.registers[address : address + size]))
            elif instruction == INST_WRITE and len(params) >= 2:
                self._write(servo, params[0], params[1:])
                self._reply(servo)

    def _write(self, servo: FakeServo, address: int, data: bytes) -> None:
        if address + len(data) > len(servo.registers):
            return  # past the end of the control table (a bytearray slice would grow the register file)
        servo.registers[address : address + len(data)] = data
        servo.advance(0.0)  # telemetry registers stay consistent with a changed Homing_Offset
