"""The Feetech bus over the real `scservo_sdk`: registers by name, sync read/write, torque, retries, clear errors.

SDK quirks this layer accounts for (see /work/shared/ros2-toolchain.md):
- `PacketHandler(protocol_end)` sets a module-global byte order for the whole process. We always pass 0 (STS
  series, little-endian) and encode/decode multi-byte values ourselves, so nothing here depends on that global.
- The SDK busy-waits for replies and gives up after a fixed ~34 ms (2 x 16 ms USB latency + 2 ms): a servo that
  does not answer costs that much per attempt. Callers that run a control loop should stop polling a dead servo
  every cycle (`FeetechBackend` re-probes it at a low rate instead).
- The SDK opens the port with `timeout=0` and spins on non-blocking reads until a reply is complete. On a small
  machine that spin competes for the CPU with whatever must produce the reply (and, in one process, for the GIL):
  sync reads took 8 ms at p90 and 17 ms at p99 instead of 0.4 ms. `open()` gives the port a short read timeout
  (`READ_WAIT_S`) so the SDK's loop blocks in the kernel until bytes arrive; its own packet timeout still applies.
- Errors come back as result codes (`COMM_*`) plus a status error byte; both are turned into `FeetechBusError`
  naming the servo id and the SDK's text. pyserial exceptions (port unplugged) become `FeetechBusError` too.
"""

from __future__ import annotations

import logging
import termios
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import scservo_sdk as scs
from serial import SerialException

from so100_driver.backend import BackendError
from so100_driver.feetech.tables import (
    BAUD_RATES,
    CONTROL_TABLE,
    MAX_TICK,
    SIGN_BITS,
    decode_sign_magnitude,
    describe_error,
    encode_sign_magnitude,
)

log = logging.getLogger(__name__)

# What a serial port raises when the adapter vanishes (termios.error, not an OSError: tcflush/tcsetattr on a dead tty).
PORT_ERRORS = (SerialException, OSError, termios.error)
READ_WAIT_S = 0.002  # longest a single SDK read blocks waiting for bytes (see the module docstring)

# Status error bits that mean the servo is unsafe to drive (the voltage bit is reported but not fatal on USB power).
FATAL_ERROR_BITS = 4 | 8 | 32 | 2  # overheat, overcurrent, overload, angle sensor


class FeetechBusError(BackendError):
    """A bus operation failed. `servo_id` is the servo concerned (None: the port/bus itself)."""

    def __init__(self, message: str, servo_id: int | None = None, joint: str | None = None) -> None:
        super().__init__(message, joint=joint)
        self.servo_id = servo_id


@dataclass
class ServoState:
    """Telemetry of one servo from one sync read (raw units: ticks, ticks/s, load fraction, V, deg C)."""

    position: int
    velocity: int
    load: float
    voltage: float
    temperature: int
    error: int  # status error bits of the reply (0 = fine)


# The contiguous block a control cycle reads: Present_Position (56) .. Moving (66).
STATE_START, _ = CONTROL_TABLE["Present_Position"]
STATE_LENGTH = CONTROL_TABLE["Moving"][0] + 1 - STATE_START


class FeetechBus:
    """One serial bus of STS3215 servos. Not thread-safe: one caller at a time (the arm node's control loop)."""

    def __init__(self, port: str, baudrate: int = 1_000_000, retries: int = 1) -> None:
        if baudrate not in BAUD_RATES:
            raise ValueError(f"baud rate {baudrate} not supported by STS3215; choose one of {sorted(BAUD_RATES)}")
        self.port = port
        self.baudrate = baudrate
        self.retries = retries
        self._port: scs.PortHandler | None = None
        self._packets = scs.PacketHandler(0)  # 0 = STS little-endian; sets the SDK's module-global byte order

    # -- connection ------------------------------------------------------------------------------------------
    @property
    def is_open(self) -> bool:
        return self._port is not None and self._port.is_open

    def open(self) -> FeetechBus:
        port = scs.PortHandler(self.port)
        try:
            ok = port.openPort() and port.setBaudRate(self.baudrate)
        except PORT_ERRORS as exc:
            raise FeetechBusError(f"cannot open servo bus {self.port}: {exc}") from None
        if not ok:
            raise FeetechBusError(f"cannot open servo bus {self.port} at {self.baudrate} baud")
        port.ser.timeout = READ_WAIT_S
        self._port = port
        return self

    def close(self) -> None:
        if self._port is not None:
            try:
                if self._port.ser is not None:
                    self._port.closePort()
            except PORT_ERRORS:
                pass
            self._port = None

    def _handle(self) -> scs.PortHandler:
        if self._port is None:
            raise FeetechBusError(f"servo bus {self.port} is not open")
        return self._port

    def _lost(self, exc: Exception) -> FeetechBusError:
        """The port failed under us (unplugged): close it so the caller can reopen later."""
        self.close()
        return FeetechBusError(f"servo bus {self.port} lost: {exc}")

    def _comm_error(self, what: str, servo_id: int | None, result: int, error: int = 0) -> FeetechBusError:
        parts = []
        if result != scs.COMM_SUCCESS:
            parts.append(self._packets.getTxRxResult(result).strip())
        if error:
            parts.append(f"servo error: {describe_error(error)}")
        who = f"servo {servo_id}" if servo_id is not None else f"bus {self.port}"
        return FeetechBusError(f"{what} {who} failed: {'; '.join(parts)}", servo_id=servo_id)

    # -- single-servo access ---------------------------------------------------------------------------------
    def ping(self, servo_id: int) -> int:
        """The model number of `servo_id` (777 for an STS3215). Raises FeetechBusError."""
        return self._retry(lambda: self._ping_once(servo_id))

    def _ping_once(self, servo_id: int) -> int:
        try:
            _model, result, error = self._packets.ping(self._handle(), servo_id)
            if result != scs.COMM_SUCCESS:
                raise self._comm_error("ping", servo_id, result, error)
            # The SDK's ping decodes the model with the global byte order; read it ourselves.
            data, result, error = self._read_tx_rx(self._handle(), servo_id, *CONTROL_TABLE["Model_Number"])
        except PORT_ERRORS as exc:
            raise self._lost(exc) from None
        if result != scs.COMM_SUCCESS:
            raise self._comm_error("ping", servo_id, result, error)
        return int.from_bytes(bytes(data), "little")

    def identify(self, ids: Iterable[int]) -> dict[int, int | None]:
        """servo id -> model number, None for ids that do not answer."""
        found: dict[int, int | None] = {}
        for servo_id in ids:
            try:
                found[servo_id] = self.ping(servo_id)
            except FeetechBusError as exc:
                if exc.servo_id is None:
                    raise
                found[servo_id] = None
        return found

    def read(self, name: str, servo_id: int) -> int:
        address, size = CONTROL_TABLE[name]

        def once() -> int:
            try:
                data, result, error = self._read_tx_rx(self._handle(), servo_id, address, size)
            except PORT_ERRORS as exc:
                raise self._lost(exc) from None
            if result != scs.COMM_SUCCESS or error & FATAL_ERROR_BITS:
                raise self._comm_error(f"read {name} from", servo_id, result, error)
            return _decode(name, bytes(data))

        return self._retry(once)

    def write(self, name: str, servo_id: int, value: int) -> None:
        address, size = CONTROL_TABLE[name]
        data = _encode(name, value, size)

        def once() -> None:
            try:
                result, error = self._packets.writeTxRx(self._handle(), servo_id, address, size, list(data))
            except PORT_ERRORS as exc:
                raise self._lost(exc) from None
            if result != scs.COMM_SUCCESS:
                raise self._comm_error(f"write {name}={value} to", servo_id, result, error)

        self._retry(once)

    def set_torque(self, ids: Sequence[int], enabled: bool) -> None:
        """Torque on/off on each id (acknowledged writes; errors name the first servo that failed)."""
        for servo_id in ids:
            self.write("Torque_Enable", servo_id, int(enabled))

    # -- sync access -----------------------------------------------------------------------------------------
    def sync_read_state(self, ids: Sequence[int]) -> tuple[dict[int, ServoState], dict[int, str]]:
        """Present position/velocity/load/voltage/temperature/error of `ids` in one sync read.

        Returns (states, failures): failures maps the ids that did not give a clean answer (timeout, corrupt
        reply, fatal error bit) to a readable reason; each such id is retried once on its own first.
        Raises FeetechBusError (servo_id None) only when the port itself fails.
        """
        if not ids:
            return {}, {}
        port = self._handle()
        group = scs.GroupSyncRead(port, self._packets, STATE_START, STATE_LENGTH)
        for servo_id in ids:
            group.addParam(servo_id)
        states: dict[int, ServoState] = {}
        failures: dict[int, str] = {}
        try:
            # The SDK's clearPort flushes output only: bytes left over from a garbled earlier reply would be read
            # as this cycle's answer (a stale position passing its checksum). Start every cycle from an empty input.
            port.ser.reset_input_buffer()
            result = group.txPacket()
            if result != scs.COMM_SUCCESS:
                raise self._comm_error("sync read on", None, result)
            # GroupSyncRead.rxPacket stops at the first bad reply; read each one so one bad servo hides no other.
            for servo_id in ids:
                data, result, error = self._rx(port, servo_id, STATE_LENGTH)
                self._collect(servo_id, data, result, error, states, failures)
            for servo_id in [i for i in ids if i in failures]:
                for _ in range(self.retries):
                    port.ser.reset_input_buffer()  # the rest of a garbled sync reply is no answer to this
                    data, result, error = self._read_tx_rx(port, servo_id, STATE_START, STATE_LENGTH)
                    failures.pop(servo_id)
                    self._collect(servo_id, data, result, error, states, failures)
                    if servo_id not in failures:
                        break
        except PORT_ERRORS as exc:
            raise self._lost(exc) from None
        return states, failures

    def _collect(
        self,
        servo_id: int,
        data: list[int],
        result: int,
        error: int,
        states: dict[int, ServoState],
        failures: dict[int, str],
    ) -> None:
        if result != scs.COMM_SUCCESS or len(data) < STATE_LENGTH:
            failures[servo_id] = str(self._comm_error("read of", servo_id, result))
            return
        raw = bytes(data)

        def field(name: str) -> int:
            address, size = CONTROL_TABLE[name]
            return _decode(name, raw[address - STATE_START : address - STATE_START + size])

        state = ServoState(
            position=field("Present_Position"),
            velocity=field("Present_Velocity"),
            load=field("Present_Load") * 0.001,
            voltage=field("Present_Voltage") * 0.1,
            temperature=field("Present_Temperature"),
            error=error | field("Status"),
        )
        if not 0 <= state.position <= MAX_TICK:  # a frame whose checksum passed by chance (1 in 256)
            failures[servo_id] = f"servo {servo_id} sent an implausible position {state.position} (corrupt reply)"
            return
        states[servo_id] = state
        if state.error & FATAL_ERROR_BITS:
            failures[servo_id] = f"servo {servo_id} reports {describe_error(state.error)}"

    def sync_write(self, name: str, values: dict[int, int]) -> None:
        """Write `name` on several servos in one broadcast packet (no replies by design of SYNC WRITE)."""
        address, size = CONTROL_TABLE[name]
        group = scs.GroupSyncWrite(self._handle(), self._packets, address, size)
        for servo_id, value in values.items():
            group.addParam(servo_id, list(_encode(name, value, size)))
        try:
            result = group.txPacket()
        except PORT_ERRORS as exc:
            raise self._lost(exc) from None
        if result != scs.COMM_SUCCESS:
            raise self._comm_error(f"sync write of {name} on", None, result)

    # -- replies -------------------------------------------------------------------------------------------------
    def _rx(self, port: scs.PortHandler, servo_id: int, length: int) -> tuple[list[int], int, int]:
        """The SDK's readRx plus the check it lacks: the reply's length field must be `length` + 2.

        The SDK slices `length` data bytes from wherever the frame starts, so a valid but shorter frame hands back
        its checksum (or the next frame's bytes) as data: fuzzing found positions read that no servo sent.
        """
        while True:
            packet, result = self._packets.rxPacket(port)
            if result != scs.COMM_SUCCESS or packet[scs.PKT_ID] == servo_id:
                break
        if result != scs.COMM_SUCCESS:
            return [], result, 0
        if packet[scs.PKT_LENGTH] != length + 2:
            return [], scs.COMM_RX_CORRUPT, 0
        start = scs.PKT_PARAMETER0
        return list(packet[start : start + length]), result, packet[scs.PKT_ERROR]

    def _read_tx_rx(
        self, port: scs.PortHandler, servo_id: int, address: int, length: int
    ) -> tuple[list[int], int, int]:
        result = self._packets.readTx(port, servo_id, address, length)
        if result != scs.COMM_SUCCESS:
            return [], result, 0
        return self._rx(port, servo_id, length)

    # -- helpers -------------------------------------------------------------------------------------------------
    def _retry(self, attempt):  # noqa: ANN001 - tiny internal helper
        for remaining in range(self.retries, -1, -1):
            try:
                return attempt()
            except FeetechBusError as exc:
                if exc.servo_id is None or remaining == 0:
                    raise
                log.debug("retrying after: %s", exc)
        raise AssertionError("unreachable")


def _encode(name: str, value: int, size: int) -> bytes:
    raw = encode_sign_magnitude(int(value), SIGN_BITS[name]) if name in SIGN_BITS else int(value)
    if not 0 <= raw < 1 << (8 * size):
        raise ValueError(f"{name}={value} does not fit {size} byte(s)")
    return raw.to_bytes(size, "little")


def _decode(name: str, data: bytes) -> int:
    raw = int.from_bytes(data, "little")
    return decode_sign_magnitude(raw, SIGN_BITS[name]) if name in SIGN_BITS else raw
