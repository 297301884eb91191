"""Run ROS nodes until Ctrl-C / SIGINT and shut them down in order: the one `main()` body every node shares.

rclpy's default SIGINT handler invalidates the context at once, while a node's own threads (the arm's control
loop, the policy's inference worker, the sim's physics) may still publish or touch the hardware; that ends in
errors or a crash. Here SIGINT only ends the spin; then each node's `stop()` (if it has one) runs, the executor
shuts down, and the nodes are destroyed in reverse order of creation (so an arm created first holds and releases
its hardware last).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import rclpy
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions


def spin_until_shutdown(nodes: Sequence[Node], num_threads: int | None = None) -> None:
    """Spin `nodes` in one MultiThreadedExecutor until interrupted, then stop and destroy them in order."""
    executor = MultiThreadedExecutor(num_threads=num_threads or max(2, len(nodes) + 2))
    try:
        for node in nodes:
            executor.add_node(node)
        executor.spin()
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
    create: Callable[[], Node | Sequence[Node]], args: list[str] | None = None, num_threads: int | None = None
) -> int:
    """rclpy.init (without rclpy's SIGINT handler), create the node(s), spin until Ctrl-C, shut down in order."""
    with rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO):
        made = create()
        nodes = [made] if isinstance(made, Node) else list(made)
        spin_until_shutdown(nodes, num_threads)
    return 0
