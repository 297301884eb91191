"""Keyboard helper for the recorder: s = start, e = stop (save), d = discard, q = quit; status printed live.

`python -m mole_vla_ros.tools.record_keys [--ns /robot]`. On a terminal keys act at once (no Enter); from a pipe
each character of the input is a key, so scripts can drive it too.
"""

from __future__ import annotations

import argparse
import json
import select
import sys
import termios
import tty
from collections.abc import Iterator
from contextlib import contextmanager

import rclpy
from rclpy.executors import SingleThreadedExecutor
from std_msgs.msg import String
from std_srvs.srv import Trigger

KEYS = {"s": "start", "e": "stop", "d": "discard"}


@contextmanager
def raw_terminal() -> Iterator[None]:
    """Single keypresses without Enter on a TTY; the terminal settings come back on every exit path."""
    if not sys.stdin.isatty():
        yield
        return
    saved = termios.tcgetattr(sys.stdin)
    try:
        tty.setcbreak(sys.stdin.fileno())
        yield
    finally:
        termios.tcsetattr(sys.stdin, termios.TCSADRAIN, saved)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="record_keys", description=__doc__.splitlines()[0])
    parser.add_argument("--ns", default="", help="namespace of the recorder node")
    parser.add_argument("--timeout", type=float, default=30.0, help="service answer timeout, s")
    parser.add_argument("--wait", type=float, default=2.0, help="how long to wait for the recorder's services, s")
    args = parser.parse_args(argv)
    prefix = args.ns.rstrip("/") + "/" if args.ns else ""
    with rclpy.init():
        node = rclpy.create_node("record_keys")
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        clients = {key: node.create_client(Trigger, f"{prefix}recorder/{name}") for key, name in KEYS.items()}
        last_status: dict = {}
        node.create_subscription(
            String, f"{prefix}recorder/status", lambda m: last_status.update(json.loads(m.data)), 10
        )
        print("s = start, e = stop (save), d = discard, q = quit", flush=True)
        with raw_terminal():
            while True:
                executor.spin_once(timeout_sec=0.0)
                ready, _, _ = select.select([sys.stdin], [], [], 0.2)
                if not ready:
                    if last_status.get("state") == "recording":
                        print(
                            f"\repisode {last_status['episode']}  {last_status['duration']:.1f} s  "
                            f"{last_status['frames']} frames  {last_status['fps_achieved']:.1f} fps  "
                            f"dropped {last_status['dropped']}   ",
                            end="",
                            flush=True,
                        )
                    continue
                key = sys.stdin.read(1)
                if key in ("q", ""):
                    break
                if key not in clients:
                    continue
                client = clients[key]
                if not client.wait_for_service(timeout_sec=args.wait):
                    print(f"\nno recorder at {client.srv_name}", flush=True)
                    continue
                future = client.call_async(Trigger.Request())
                executor.spin_until_future_complete(future, timeout_sec=args.timeout)
                result = future.result()
                answer = "no answer" if result is None else ("ok: " if result.success else "refused: ") + result.message
                print(f"\n[{KEYS[key]}] {answer}", flush=True)
        node.destroy_node()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
