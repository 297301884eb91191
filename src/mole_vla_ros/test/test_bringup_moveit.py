"""bringup with moveit:=true: plan() lists move_group with MoveIt's parameters from config/moveit/<arm>/, the launch
file refuses at once (naming the package) where MoveIt is not installed, and `mole-vla bringup` refuses moveit
because move_group cannot run in its Python process."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from mole_vla_ros.bringup import (
    MOVE_GROUP_PACKAGE,
    BringupArgs,
    main,
    parameters_for,
    plan,
    require_package,
    run_in_process,
)

LAUNCH_FILE = Path(__file__).resolve().parents[3] / "launch" / "bringup.launch.py"


def _moveit_installed() -> bool:
    try:
        require_package(MOVE_GROUP_PACKAGE, "test")
    except RuntimeError:
        return False
    return True


@pytest.mark.parametrize("arm", ["so100", "so101"])
def test_plan_with_moveit_adds_move_group_with_the_arms_moveit_config(arm):
    without = {spec.executable for spec in plan(BringupArgs(arm_model=arm))}
    specs = {spec.executable: spec for spec in plan(BringupArgs(arm_model=arm, moveit=True))}
    assert set(specs) == without | {"move_group"}
    move_group = specs["move_group"]
    assert move_group.package == MOVE_GROUP_PACKAGE and move_group.factory == ""
    params = parameters_for(move_group)
    srdf = (Path(__file__).resolve().parents[3] / "config" / "moveit" / arm / f"{arm}.srdf").read_text()
    assert params["robot_description_semantic"] == srdf
    urdf = Path(__file__).resolve().parents[3] / "config" / "ros2_control" / f"{arm}_topic_based.urdf"
    assert params["robot_description"] == urdf.read_text()
    assert params["planning_pipelines"] == {"pipeline_names": ["ompl"]}
    assert "joint_trajectory_controller" in str(params["moveit_simple_controller_manager"])
    assert params["robot_description_kinematics"]["arm"]["kinematics_solver"]


def test_in_process_bringup_refuses_moveit_with_a_clear_message(capsys):
    with pytest.raises(ValueError, match="cannot run inside"):
        run_in_process(BringupArgs(moveit=True))
    with pytest.raises(SystemExit) as exit_info:
        main(["--sim", "--moveit"])
    assert exit_info.value.code == 2
    assert "bringup.launch.py moveit:=true" in capsys.readouterr().err


@pytest.mark.skipif(importlib.util.find_spec("launch_ros") is None, reason="launch_ros not installed")
def test_launch_file_declares_moveit_and_refuses_it_without_moveit_installed():
    from launch.actions import DeclareLaunchArgument

    from launch import LaunchContext

    spec = importlib.util.spec_from_file_location("bringup_launch", LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    declared = {
        a.name: a for a in module.generate_launch_description().entities if isinstance(a, DeclareLaunchArgument)
    }
    assert "moveit" in declared

    def context(moveit: str) -> LaunchContext:
        ctx = LaunchContext()
        for name, default, _doc in module.ARGUMENTS:
            ctx.launch_configurations[name] = default
        ctx.launch_configurations["moveit"] = moveit
        return ctx

    off = module._nodes(context("false"))
    assert all("move_group" not in str(getattr(a, "node_executable", "")) for a in off)
    if _moveit_installed():
        on = module._nodes(context("true"))
        assert len(on) == len(off) + 1
    else:
        with pytest.raises(RuntimeError, match=MOVE_GROUP_PACKAGE):
            module._nodes(context("true"))
