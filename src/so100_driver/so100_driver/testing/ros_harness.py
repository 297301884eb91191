"""Helpers for tests over real DDS: isolation, child node processes, bounded waits on events.

Tests wait on events with a deadline, never on fixed sleeps, and always clean their processes up.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any


def isolate_ros_environment() -> int:
    """Give this test session its own ROS domain and keep discovery on localhost. Returns the domain id.

    Called from conftest.py before rclpy is initialised; child processes inherit the variables.
    An id already set by the caller (CI, a developer) is kept.
    """
    if "ROS_DOMAIN_ID" not in os.environ:
        # 1..100: the range where the default Fast DDS port mapping stays clear of Linux ephemeral ports.
        os.environ["ROS_DOMAIN_ID"] = str(random.SystemRandom().randint(1, 100))
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    os.environ.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("MUJOCO_GL", "egl")
    return int(os.environ["ROS_DOMAIN_ID"])


def wait_until(
    predicate: Callable[[], Any],
    timeout: float,
    poll: Callable[[float], None] | None = None,
    message: str = "condition",
) -> Any:
    """Call `poll(step)` (e.g. an executor's spin_once) until `predicate()` is truthy; return its value.

    Raises TimeoutError naming `message` after `timeout` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"timed out after {timeout:.1f} s waiting for {message}")
        if poll is not None:
            poll(min(0.05, remaining))
        else:
            time.sleep(min(0.01, remaining))


class NodeProcess:
    """A ROS node (or any Python module) in a child process, stopped with SIGINT then SIGKILL on exit.

    Output goes to a log file whose tail is available for assertion messages (`tail()`).
    """

    def __init__(
        self, module: str, args: Sequence[str] = (), env: dict[str, str] | None = None, name: str | None = None
    ) -> None:
        self.module = module
        self.args = list(args)
        self.env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}
        self.name = name or Path(module).stem.rsplit(".", 1)[-1]
        self._log = tempfile.NamedTemporaryFile(prefix=f"{self.name}-", suffix=".log", delete=False)  # noqa: SIM115 (lives as long as the process)
        self.log_path = Path(self._log.name)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> NodeProcess:
        # A path to a .py file runs as a script; anything else as a module (python -m).
        target = [self.module] if self.module.endswith(".py") else ["-m", self.module]
        self.proc = subprocess.Popen(
            [sys.executable, *target, *self.args],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=self.env,
            start_new_session=True,
        )
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def tail(self, lines: int = 40) -> str:
        if not self._log.closed:
            self._log.flush()
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGINT (a clean rclpy shutdown), then SIGKILL of the whole process group. Returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=timeout)
        self._log.close()
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL now (a crash, as far as everyone else can tell)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def __enter__(self) -> NodeProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
