"""A multi-threaded rclpy executor that waits for a handed-off callback to start instead of spinning a core.

rclpy's MultiThreadedExecutor (9.x) submits a ready callback to its thread pool and loops back at once; until a
pool thread has actually begun that callback, the task counts as neither executing nor done, so the next wait
yields the same task again and it is submitted again, over and over. On a busy CPU (where the pool thread waits
for the GIL) that is thousands of wake-ups per second: at 50 Hz camera and joint-state inputs the policy node
spent a whole core on it (~6,000 spins/s), and every callback in the process ran up to 0.2 s late.

Here the spinning thread waits (bounded) until the pool thread has picked the task up. Nothing else changes:
same pool, same callback groups, and a task that is still not started after `handoff_timeout` is offered again,
as rclpy would.
"""

from __future__ import annotations

import threading
from typing import Any

from rclpy.executors import (
    ConditionReachedException,
    ExternalShutdownException,
    MultiThreadedExecutor,
    ShutdownException,
    TimeoutException,
)


class HandoffMultiThreadedExecutor(MultiThreadedExecutor):
    """MultiThreadedExecutor whose spin waits until each handed-off callback has started on a pool thread."""

    def __init__(self, num_threads: int | None = None, handoff_timeout: float = 0.05, **kwargs: Any) -> None:
        super().__init__(num_threads=num_threads, **kwargs)
        self.handoff_timeout = handoff_timeout

    def _spin_once_impl(self, timeout_sec: Any = None, wait_condition: Any = lambda: False) -> None:
        try:
            handler, _entity, _node = self.wait_for_ready_callbacks(timeout_sec, None, wait_condition)
        except (ExternalShutdownException, ShutdownException, TimeoutException, ConditionReachedException):
            return
        started = threading.Event()

        def run() -> None:
            started.set()
            handler()

        self._executor.submit(run)
        self._futures.append(handler)
        # Blocking here costs nothing: the pool starts the task within microseconds unless every thread is busy,
        # and then the spinning thread had nothing to hand over anyway.
        started.wait(self.handoff_timeout)
        for future in self._futures[:]:
            if future.done():
                self._futures.remove(future)
                future.result()  # raise any exceptions, as rclpy does
