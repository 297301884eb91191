"""JointBackend over a Feetech STS3215 bus + a calibration: the real SO-100/SO-101 arm.

Fault handling (the controller above holds the arm whenever `read()` reports faults):
- a servo that stops answering is reported, taken out of the per-cycle sync read (each silent servo would cost the
  SDK's ~34 ms timeout every cycle and starve the control loop) and pinged again every `reprobe_interval` s;
- a corrupt reply is retried once at once (by the bus); a servo whose replies stay corrupt is reported;
- an overload/overheat/overcurrent status bit is reported with the servo's own words, the values still read;
- a lost port (adapter unplugged) raises BackendError; the next reads try to reopen the same path at most every
  `reprobe_interval` s, so the arm comes back by itself when the port does.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence

import numpy as np

from so100_driver.backend import BackendError, JointReading
from so100_driver.calibration import Calibration, JointCalibration
from so100_driver.feetech.bus import FeetechBus, FeetechBusError
from so100_driver.feetech.tables import STS3215_MODEL_NUMBER
from so100_driver.joints import JointSpec

log = logging.getLogger(__name__)


class FeetechBackend:
    """The arm's six servos as one JointBackend (positions in calibrated radians)."""

    def __init__(
        self,
        bus: FeetechBus,
        calibration: Calibration,
        joints: Sequence[JointSpec],
        reprobe_interval: float = 1.0,
        clock=time.monotonic,  # noqa: ANN001 - injectable for tests
    ) -> None:
        self.bus = bus
        self.joints = tuple(joints)
        self.joint_names: tuple[str, ...] = tuple(j.name for j in self.joints)
        self.calibrations: list[JointCalibration] = calibration.for_joints(self.joints)
        self.ids = [c.id for c in self.calibrations]
        self._name_of = {c.id: j.name for c, j in zip(self.calibrations, self.joints, strict=True)}
        self.reprobe_interval = reprobe_interval
        self.clock = clock
        self._silent: dict[int, float] = {}  # servo id -> next time to ping it
        self._next_reopen = 0.0
        n = len(self.joints)
        self._positions = np.zeros(n)
        self._velocities = np.zeros(n)
        self._efforts = np.zeros(n)
        self._have_position = np.zeros(n, dtype=bool)

    @classmethod
    def open(
        cls, port: str, baudrate: int, calibration: Calibration, joints: Sequence[JointSpec], **kwargs: float
    ) -> FeetechBackend:
        """Open the port, check every servo answers as an STS3215, make the homing offsets match the calibration."""
        bus = FeetechBus(port, baudrate).open()
        backend = cls(bus, calibration, joints, **kwargs)
        try:
            backend.check_servos()
            backend.apply_homing_offsets()
            backend.read()  # every joint answered the ping: seed the last-known positions
        except BaseException:
            bus.close()
            raise
        return backend

    # -- setup ----------------------------------------------------------------------------------------------------
    def check_servos(self, rounds: int = 3) -> None:
        """Raise BackendError listing every servo that is missing or is not an STS3215.

        A servo missing in one round is asked again (up to `rounds`): a reply lost to a busy USB adapter or a
        starved CPU just after opening must not abort the start, a servo that is really absent still does.
        """
        found = self.bus.identify(self.ids)
        for _ in range(rounds - 1):
            missing = [i for i, model in found.items() if model is None]
            if not missing:
                break
            found.update(self.bus.identify(missing))
        problems = []
        for servo_id, model in found.items():
            name = self._name_of[servo_id]
            if model is None:
                problems.append(f"{name} (servo {servo_id}) does not answer")
            elif model != STS3215_MODEL_NUMBER:
                problems.append(f"{name} (servo {servo_id}) is model {model}, not an STS3215 ({STS3215_MODEL_NUMBER})")
        if problems:
            raise BackendError(f"servo bus {self.bus.port}: " + "; ".join(problems))

    def check_homing_offsets(self) -> None:
        """Raise BackendError naming each servo whose Homing_Offset register differs from the calibration.

        For a read-only arm (a leader): its positions mean what the calibration says only with those offsets.
        """
        wrong = []
        for cal in self.calibrations:
            actual = self.bus.read("Homing_Offset", cal.id)
            if actual != cal.homing_offset:
                wrong.append(
                    f"{self._name_of[cal.id]} (servo {cal.id}) has {actual}, calibration says {cal.homing_offset}"
                )
        if wrong:
            raise BackendError(
                f"servo bus {self.bus.port}: homing offsets differ from the calibration: "
                + "; ".join(wrong)
                + ". Use the calibration file made for this arm (LeRobot writes the offsets when it calibrates)."
            )

    def apply_homing_offsets(self) -> None:
        """Write each calibration's homing offset into its servo where it differs (EEPROM: torque off, unlock)."""
        for cal in self.calibrations:
            if self.bus.read("Homing_Offset", cal.id) == cal.homing_offset:
                continue
            log.warning("servo %d: writing homing offset %d from the calibration", cal.id, cal.homing_offset)
            self.bus.write("Torque_Enable", cal.id, 0)
            self.bus.write("Lock", cal.id, 0)
            self.bus.write("Homing_Offset", cal.id, cal.homing_offset)
            self.bus.write("Lock", cal.id, 1)

    # -- JointBackend -------------------------------------------------------------------------------------------
    def read(self) -> JointReading:
        now = self.clock()
        self._ensure_open(now)
        faults: dict[str, str] = {}
        for servo_id, due in list(self._silent.items()):
            if now >= due:
                try:
                    self.bus.ping(servo_id)
                    del self._silent[servo_id]
                    log.warning("servo %d answers again", servo_id)
                except FeetechBusError as exc:
                    if exc.servo_id is None:
                        raise self._port_lost(exc, now) from None
                    self._silent[servo_id] = now + self.reprobe_interval
        polled = [i for i in self.ids if i not in self._silent]
        try:
            states, failures = self.bus.sync_read_state(polled)
        except FeetechBusError as exc:
            raise self._port_lost(exc, now) from None
        for k, cal in enumerate(self.calibrations):
            name = self.joint_names[k]
            state = states.get(cal.id)
            if state is not None:
                self._positions[k] = cal.to_radians(state.position)
                self._velocities[k] = cal.sign * state.velocity / (4095 / (2 * math.pi))
                self._efforts[k] = cal.sign * state.load * self.joints[k].max_effort
                self._have_position[k] = True
            if cal.id in self._silent:
                faults[name] = f"servo {cal.id} ({name}) does not answer (retrying every {self.reprobe_interval:g} s)"
            elif cal.id in failures:
                faults[name] = f"{name}: {failures[cal.id]}"
                if state is None:  # no answer at all: stop polling it every cycle
                    self._silent[cal.id] = now + self.reprobe_interval
        if not self._have_position.all():
            missing = [n for n, ok in zip(self.joint_names, self._have_position, strict=True) if not ok]
            raise BackendError(f"no position ever read from {missing}: {faults}")
        return JointReading(now, self._positions.copy(), self._velocities.copy(), self._efforts.copy(), faults)

    def write_goal(self, positions: np.ndarray) -> None:
        if len(positions) != len(self.ids):
            raise BackendError(f"goal has {len(positions)} positions for {len(self.ids)} joints")
        goals = {cal.id: cal.to_ticks(float(p)) for cal, p in zip(self.calibrations, positions, strict=True)}
        self._check_open()
        try:
            self.bus.sync_write("Goal_Position", goals)
        except FeetechBusError as exc:
            raise self._port_lost(exc, self.clock()) from None

    def set_torque(self, enabled: bool) -> None:
        self._check_open()
        failed = []
        for servo_id in self.ids:
            try:
                self.bus.write("Torque_Enable", servo_id, int(enabled))
            except FeetechBusError as exc:
                if exc.servo_id is None:
                    raise self._port_lost(exc, self.clock()) from None
                failed.append(str(exc))
        if failed:
            raise BackendError(f"torque {'on' if enabled else 'off'} failed: " + "; ".join(failed))

    def close(self) -> None:
        self.bus.close()

    # -- port loss ----------------------------------------------------------------------------------------------
    def _check_open(self) -> None:
        # Not via _port_lost: that would push the next reopen attempt back on every control cycle, forever.
        if not self.bus.is_open:
            raise BackendError(f"servo bus {self.bus.port} is closed (port lost); reopening from the next reads")

    def _port_lost(self, exc: FeetechBusError, now: float) -> BackendError:
        self.bus.close()
        self._next_reopen = now + self.reprobe_interval
        return BackendError(f"servo bus lost: {exc}")

    def _ensure_open(self, now: float) -> None:
        if self.bus.is_open:
            return
        if now < self._next_reopen:
            raise BackendError(f"servo bus {self.bus.port} is closed (port lost); next reopen attempt soon")
        self._next_reopen = now + self.reprobe_interval
        try:
            self.bus.open()
        except FeetechBusError as exc:
            raise BackendError(f"servo bus {self.bus.port} still unavailable: {exc}") from None
        log.warning("servo bus %s reopened", self.bus.port)
