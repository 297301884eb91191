"""Run ROS nodes until Ctrl-C / SIGINT and shut them down in order: the one `main()` body every node shares.

rclpy's default SIGINT handler invalidates the context at once, while a node's own threads (the arm's control
loop, the policy's inference worker, the sim's physics) may still publish or touch the hardware; that ends in
errors or a crash. Here SIGINT (and SIGTERM, how launch escalates) only ends the spin; then each node's `stop()`
(if it has one) runs, the executor shuts down, and the nodes are destroyed in reverse order of creation (so an arm
created first holds and releases its hardware last). A start-up failure the node reports as one of `fatal`
exceptions becomes one clear line and exit code 1 instead of a traceback.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable, Sequence

import rclpy
from rclpy.executors import Executor, ExternalShutdownException
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions

from so100_driver.executors import HandoffMultiThreadedExecutor

ExecutorFactory = Callable[[Sequence[Node]], Executor]


def multi_threaded(num_threads: int | None = None) -> ExecutorFactory:
    return lambda nodes: HandoffMultiThreadedExecutor(num_threads=num_threads or max(2, len(nodes) + 2))


def spin_until_shutdown(nodes: Sequence[Node], executor: Executor) -> None:
    """Spin `nodes` on `executor` until SIGINT/SIGTERM, then stop and destroy them in order.

    The signals only set a flag the spin loop checks: raised as KeyboardInterrupt they could land inside rclpy's
    message conversion on the spinning thread, which then fails with a RuntimeError and exit code 1.
    """
    stop = threading.Event()

    def request_stop(*_: object) -> None:
        stop.set()
        executor.wake()  # out of its wait; no timeout per spin (rclpy makes a timer for each one)

    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, request_stop)
    try:
        for node in nodes:
            executor.add_node(node)
        while not stop.is_set() and executor.context.ok():
            executor.spin_once()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        for node in nodes:
            stop = getattr(node, "stop", None)
            if callable(stop):
                stop()
        executor.shutdown(timeout_sec=5.0)
        for node in reversed(nodes):
            node.destroy_node()


def run(
    create: Callable[[], Node | Sequence[Node]],
    args: list[str] | None = None,
    num_threads: int | None = None,
    executor: ExecutorFactory | None = None,
    fatal: tuple[type[BaseException], ...] = (),
) -> int:
    """rclpy.init (without rclpy's SIGINT handler), create the node(s), spin until Ctrl-C, shut down in order.

    `executor` picks the executor from the created nodes (default: multi-threaded with `num_threads`).
    """
    name = getattr(create, "__name__", "node")
    try:
        with rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO):
            made = create()
            nodes = [made] if isinstance(made, Node) else list(made)
            spin_until_shutdown(nodes, (executor or multi_threaded(num_threads))(nodes))
    except fatal as exc:
        print(f"{name}: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0
