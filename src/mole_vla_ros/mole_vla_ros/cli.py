"""`mole-vla <command> ...`: one entry point for the suite's command-line tools.

Each command lives in its own module with a `main(argv) -> int`; this file only dispatches, importing the
module on demand so `mole-vla --help` stays instant and a command's heavy imports (torch, mujoco) load only
when it runs.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    "record": ("mole_vla_ros.data.record", "record scripted-expert demonstrations in the sim as a LeRobot dataset"),
    "train": ("mole_vla_ros.train.train", "train the MoLe-VLA policy on a LeRobot-format dataset"),
    "eval": ("mole_vla_ros.train.evaluate", "evaluate a policy in the MuJoCo sim over seeded episodes"),
    "bringup": ("mole_vla_ros.bringup", "run the whole suite in one process (sim or real arm)"),
    "bag2lerobot": ("mole_vla_ros.data.bag2lerobot", "convert rosbag2 recordings into a LeRobot dataset"),
    "dataset-viz": ("mole_vla_ros.data.visualize", "render a dataset episode to MP4 + PNG for checking"),
}


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: mole-vla <command> [options]", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_text}" for name, (_module, help_text) in COMMANDS.items()]
    lines += ["", "`mole-vla <command> --help` shows a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"mole-vla: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
