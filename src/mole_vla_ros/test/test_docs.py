"""The README documents what the code does: generated parameter tables are current, and every command it names
exists."""

import re
import subprocess
import sys
from pathlib import Path

from mole_vla_ros.cli import COMMANDS

ROOT = Path(__file__).resolve().parents[3]
README = (ROOT / "README.md").read_text()


def test_parameter_tables_match_the_shipped_yaml():
    run = subprocess.run([sys.executable, "scripts/gen_param_docs.py", "--check"], cwd=ROOT, capture_output=True)
    assert run.returncode == 0, run.stderr.decode()


def test_every_mole_vla_command_in_the_readme_exists():
    used = set(re.findall(r"mole-vla ([a-z0-9-]+)", README))
    assert used, "README shows no mole-vla command"
    assert used <= set(COMMANDS), f"README names unknown commands: {used - set(COMMANDS)}"


def test_readme_names_the_launch_arguments_it_uses():
    launch = (ROOT / "launch" / "bringup.launch.py").read_text()
    for arg in set(re.findall(r"\b([a-z_]+):=", README)):
        assert f'("{arg}",' in launch, f"README passes {arg}:=, which bringup.launch.py does not declare"
