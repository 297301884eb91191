"""`make demo`: bring up the simulated SO-100 with the MoLe-VLA policy, send one instruction through the action,
and print what happened: success, chunk latency, active layers.

It runs the same in-process bringup as `mole-vla bringup --sim` in a child process, and talks to it only over DDS,
exactly as a user's `ros2 action send_goal` would.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from so100_driver.testing.ros_harness import NodeProcess, isolate_ros_environment, wait_until


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="mole-vla demo", description=__doc__.splitlines()[0])
    parser.add_argument("--instruction", default="pick up the red cube")
    parser.add_argument("--time-limit", type=float, default=60.0, help="seconds before the goal gives up")
    parser.add_argument("--layer-budget", type=float, default=0.5, help="fraction of backbone layers, (0, 1]")
    parser.add_argument("--checkpoint", default="", help="policy folder or hub id (default: the shipped one)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    domain = isolate_ros_environment()
    import rclpy
    from rclpy.action import ActionClient
    from rclpy.executors import SingleThreadedExecutor

    from mole_msgs.action import ExecuteInstruction
    from mole_msgs.msg import RouterState
    from mole_vla_ros import qos

    bringup_args = ["--sim", "--layer-budget", str(args.layer_budget)]
    if args.checkpoint:
        bringup_args += ["--checkpoint", args.checkpoint]
    print(f"[demo] bringing up the simulated SO-100 + MoLe-VLA suite (ROS_DOMAIN_ID={domain}) ...", flush=True)
    with NodeProcess("mole_vla_ros.bringup", bringup_args, name="demo-bringup") as suite, rclpy.init():
        node = rclpy.create_node("mole_demo_client")
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        router: list[RouterState] = []
        node.create_subscription(RouterState, "/mole/router_state", router.append, qos.RELIABLE)
        client = ActionClient(node, ExecuteInstruction, "/mole/execute_instruction")
        if not client.wait_for_server(timeout_sec=120.0):
            print(f"[demo] the policy's action server never came up; bringup log:\n{suite.tail()}", file=sys.stderr)
            return 1

        def spin(step: float) -> None:
            executor.spin_once(timeout_sec=step)

        last_print = [0.0]

        def on_feedback(msg: ExecuteInstruction.Impl.FeedbackMessage) -> None:
            fb = msg.feedback
            if time.monotonic() - last_print[0] > 2.0:
                last_print[0] = time.monotonic()
                print(
                    f"[demo] {fb.state:<24} chunks {fb.chunks:4d}  active layers {fb.active_layer_fraction:5.0%}"
                    f"  last latency {fb.last_latency * 1000:7.1f} ms",
                    flush=True,
                )

        goal = ExecuteInstruction.Goal(
            instruction=args.instruction, layer_budget=args.layer_budget, time_limit=args.time_limit
        )
        print(f"[demo] goal: {args.instruction!r} (layer budget {args.layer_budget:.0%})", flush=True)
        send = client.send_goal_async(goal, feedback_callback=on_feedback)
        wait_until(send.done, 30.0, spin, "goal acceptance")
        handle = send.result()
        if not handle.accepted:
            print("[demo] goal rejected", file=sys.stderr)
            return 1
        result_future = handle.get_result_async()
        wait_until(result_future.done, args.time_limit + 60.0, spin, "the goal's result")
        result = result_future.result().result
        node.destroy_node()

    active = [r.num_active / max(1, len(r.active_mask)) for r in router]
    layers = f"{statistics.mean(r.num_active for r in router):.1f} of {len(router[0].active_mask)}" if router else "-"
    print("[demo] ---------------------------------------------")
    print(f"[demo] success           : {result.success} ({result.reason})")
    print(f"[demo] chunks            : {result.chunks}")
    print(f"[demo] mean chunk latency: {result.mean_latency * 1000:.1f} ms")
    print(f"[demo] active layers     : {layers} ({statistics.mean(active):.0%})" if active else "[demo] no chunks")
    return 0


if __name__ == "__main__":
    sys.exit(main())
