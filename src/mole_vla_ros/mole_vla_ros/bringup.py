"""The suite's node list and parameters, in one plain module.

Both `launch/bringup.launch.py` (on a ROS install, `ros2 launch mole_vla_ros bringup.launch.py`) and the in-process
bringup (`mole-vla bringup --sim`: every node in one process and one executor) read `plan()`, so the two cannot
disagree about which nodes run, with which parameters and remappings.

    sim:=true   sim_node (MuJoCo arm with arm_node's interface + camera + success detector)
    sim:=false  arm_node (Feetech bus on `port`) + camera_node (OpenCV `camera`)
    always      policy_node (VLA action server) + chunk_executor (async chunks -> arm) + monitor_node
    moveit:=true  + move_group (MoveIt 2, config/moveit/<arm>/; launch file on a full ROS install only)
"""

from __future__ import annotations

import argparse
import importlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mole_vla_ros.checkpoint_info import CheckpointInfo, camera_topic, read_checkpoint_info

PACKAGE = "mole_vla_ros"


@dataclass(frozen=True)
class BringupArgs:
    """The launch arguments (same names as `ros2 launch mole_vla_ros bringup.launch.py <name>:=<value>`).

    Args:
        sim: run the MuJoCo arm and camera instead of the real ones.
        port: serial port of the SO-100's servo bus (real arm only).
        camera: OpenCV device index or path of the first camera the checkpoint uses (real arm only).
        wrist_camera: device of its second camera, if it uses one (real arm only; empty = none).
        checkpoint: policy checkpoint, a local folder or a hub id; empty = the shipped default.
        layer_budget: fraction of backbone layers the router may run, in (0, 1].
        arm_model: so100 or so101.
        namespace: ROS namespace for every node, so the suite drops into an existing stack.
        rviz: start rviz2 with config/mole.rviz (launch file only).
        device: torch device for the policy (cpu, cuda).
        moveit: also start MoveIt's move_group (planning scene for collision_checker moveit, start_state_planner
            moveit). A C++ node: the launch file only, on an install with MoveIt.
    """

    sim: bool = True
    port: str = "/dev/ttyACM0"
    camera: str = "0"
    wrist_camera: str = ""
    checkpoint: str = ""
    layer_budget: float = 0.5
    arm_model: str = "so100"
    namespace: str = ""
    rviz: bool = False
    device: str = "cpu"
    moveit: bool = False

    def __post_init__(self) -> None:
        if not 0.0 < self.layer_budget <= 1.0:
            raise ValueError(f"layer_budget must be in (0, 1], got {self.layer_budget}")
        if self.arm_model not in ("so100", "so101"):
            raise ValueError(f"arm_model must be so100 or so101, got {self.arm_model!r}")


@dataclass(frozen=True)
class NodeSpec:
    """One process to start: where its executable and node class live, its parameter files and overrides.

    `yaml_keys` are the node names whose `<name>: ros__parameters:` blocks apply (a process that hosts several
    nodes, like the sim's arm + sim nodes, takes several); `rename` is False for such a process, since one
    `__node:=` remap would give all its nodes the same name.
    """

    package: str
    executable: str
    name: str
    factory: str  # "module:callable" returning the node (or nodes) for the in-process bringup; "" = not in-process
    param_files: tuple[str, ...] = ()
    overrides: dict[str, Any] = field(default_factory=dict)
    remappings: tuple[tuple[str, str], ...] = ()
    yaml_keys: tuple[str, ...] = ()
    rename: bool = True


def config_dir() -> Path:
    """config/ in the source tree, else in the installed share directory."""
    source = Path(__file__).resolve().parents[3] / "config"
    if source.is_dir():
        return source
    from ament_index_python.packages import get_package_share_directory

    return Path(get_package_share_directory(PACKAGE)) / "config"


def default_checkpoint() -> str:
    """The small checkpoint shipped with the package (trained on sim demonstrations), if present."""
    here = Path(__file__).resolve().parents[1] / "checkpoints" / "default"
    return str(here) if (here / "config.json").is_file() else ""


def plan(args: BringupArgs) -> list[NodeSpec]:
    cfg = config_dir()

    def files(*names: str) -> tuple[str, ...]:
        return tuple(str(cfg / n) for n in names if (cfg / n).is_file())

    checkpoint = args.checkpoint or default_checkpoint()
    cameras = read_checkpoint_info(checkpoint)
    specs: list[NodeSpec] = []
    if args.sim:
        specs.append(
            NodeSpec(
                "so100_driver",
                "sim_node",
                "sim",
                "so100_driver.sim.sim_node:create_nodes",
                files("sim.yaml", "arm.yaml"),
                {"arm_model": args.arm_model, "cameras": list(cameras.cameras), **_sim_image_size(cameras)},
                yaml_keys=("sim", "arm_node"),
                rename=False,
            )
        )
    else:
        specs.append(
            NodeSpec(
                "so100_driver",
                "arm_node",
                "arm_node",
                "so100_driver.arm_node:ArmNode",
                files("arm.yaml"),
                {"port": args.port, "arm_model": args.arm_model},
            )
        )
        # One camera node per camera the checkpoint was trained on, each under camera/<name>/ like the sim's.
        for name, device in zip(cameras.cameras, (args.camera, args.wrist_camera), strict=False):
            if not device:
                continue
            topic = camera_topic(name).rsplit("/", 1)[0]
            specs.append(
                NodeSpec(
                    PACKAGE,
                    "camera_node",
                    f"camera_{name}",
                    "mole_vla_ros.nodes.camera_node:CameraNode",
                    files("camera.yaml"),
                    {"device": device},
                    (("image_raw", f"{topic}/image_raw"), ("camera_info", f"{topic}/camera_info")),
                    yaml_keys=("camera",),
                )
            )
    specs += [
        NodeSpec(
            PACKAGE,
            "policy_node",
            "policy_node",
            "mole_vla_ros.nodes.policy_node:PolicyNode",
            files("policy.yaml"),
            {
                "checkpoint": checkpoint,
                "arm_model": args.arm_model,
                "layer_budget": args.layer_budget,
                "device": args.device,
                "image_topics": cameras.image_topics,
            },
        ),
        NodeSpec(
            PACKAGE,
            "chunk_executor_node",
            "chunk_executor",
            "mole_vla_ros.nodes.chunk_executor_node:ChunkExecutorNode",
            files("executor.yaml"),
            {"arm_model": args.arm_model},
        ),
        NodeSpec(
            PACKAGE,
            "monitor_node",
            "monitor",
            "mole_vla_ros.nodes.monitor_node:MonitorNode",
            files("monitor.yaml"),
            {"arm_model": args.arm_model},
        ),
    ]
    if args.moveit:
        specs.append(move_group_spec(args.arm_model))
    return specs


MOVE_GROUP_PACKAGE = "moveit_ros_move_group"
NO_MOVEIT_IN_PROCESS = (
    "moveit: move_group is MoveIt's C++ node and cannot run inside `mole-vla bringup`'s Python process; start the "
    "suite with `ros2 launch mole_vla_ros bringup.launch.py moveit:=true` on a ROS install with MoveIt "
    "(apt install ros-$ROS_DISTRO-moveit), or run move_group yourself (launch/moveit.launch.py)"
)


def move_group_spec(arm: str) -> NodeSpec:
    """move_group with everything it reads (URDF, SRDF, kinematics, limits, OMPL, controllers), laid out as
    moveit_configs_utils does, from config/moveit/<arm>/ (moveit_adapter.move_group_parameters). Our arm/sim node
    publishes /joint_states; executing MoveIt plans needs the trajectory controllers of launch/moveit.launch.py."""
    from mole_vla_ros.moveit_adapter import move_group_parameters  # late: moveit_adapter imports this module

    return NodeSpec(
        MOVE_GROUP_PACKAGE,
        "move_group",
        "move_group",
        factory="",
        overrides=move_group_parameters(arm, "topic_based"),
    )


def require_package(package: str, why: str) -> None:
    """RuntimeError naming the package (and why it is needed) when it is not installed."""
    from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

    try:
        get_package_share_directory(package)
    except PackageNotFoundError as err:
        raise RuntimeError(f"{why} needs the ROS package {package}, which is not installed") from err


def _sim_image_size(cameras: CheckpointInfo) -> dict[str, int]:
    """Render the sim's cameras at the size the checkpoint was trained on (no resize the policy never saw)."""
    if cameras.image_hw is None:
        return {}
    return {"camera_height": cameras.image_hw[0], "camera_width": cameras.image_hw[1]}


def parameters_for(spec: NodeSpec) -> dict[str, Any]:
    """The node's parameters: its YAML files in order (`<name>: ros__parameters:` or `/**:`), then the overrides."""
    merged: dict[str, Any] = {}
    for path in spec.param_files:
        data = yaml.safe_load(Path(path).read_text()) or {}
        for key in ("/**", *(spec.yaml_keys or (spec.name,))):
            merged.update((data.get(key) or {}).get("ros__parameters", {}))
    merged.update(spec.overrides)
    return merged


def _create(spec: NodeSpec, namespace: str) -> list[Any]:
    from rclpy.parameter import Parameter

    if not spec.factory:
        raise ValueError(f"{spec.executable} ({spec.package}) cannot run in-process")
    module_name, attr = spec.factory.split(":")
    factory = getattr(importlib.import_module(module_name), attr)
    overrides = [Parameter(k, value=v) for k, v in parameters_for(spec).items()]
    remaps = [arg for src, dst in spec.remappings for arg in ("-r", f"{src}:={dst}")]
    cli_args = ["--ros-args", *remaps] if remaps else None
    made = factory(namespace=namespace, parameter_overrides=overrides, cli_args=cli_args)
    return list(made) if isinstance(made, (list, tuple)) else [made]


def run_in_process(args: BringupArgs, instruction: str | None = None) -> int:
    """Every node of plan(args) in this process under one executor, until Ctrl-C / SIGINT (ordered shutdown:
    see so100_driver.node_runner)."""
    from so100_driver.node_runner import run

    if args.moveit:
        raise ValueError(NO_MOVEIT_IN_PROCESS)

    def create() -> list[Any]:
        nodes = [node for spec in plan(args) for node in _create(spec, args.namespace)]
        nodes.append(_description_publisher(args))
        if instruction:
            _publish_instruction(nodes[-1], instruction)
        return nodes

    return run(create)


def _description_publisher(args: BringupArgs) -> Any:
    """robot_description (latched), as robot_state_publisher offers it on a full ROS install."""
    import rclpy
    from std_msgs.msg import String

    from mole_vla_ros.qos import LATEST_VALUE
    from so100_driver.description import generate_urdf

    node = rclpy.create_node("robot_description_publisher", namespace=args.namespace)
    publisher = node.create_publisher(String, "robot_description", LATEST_VALUE)
    publisher.publish(String(data=generate_urdf(args.arm_model)))
    return node


def _publish_instruction(node: Any, text: str) -> None:
    from std_msgs.msg import String

    from mole_vla_ros.qos import LATEST_VALUE

    publisher = node.create_publisher(String, "/mole/instruction", LATEST_VALUE)
    publisher.publish(String(data=text))


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mole-vla bringup", description=__doc__.splitlines()[0])
    parser.add_argument("--sim", action="store_true", help="MuJoCo arm and camera instead of the real ones")
    parser.add_argument("--port", default=BringupArgs.port, help="servo bus serial port (real arm)")
    parser.add_argument("--camera", default=BringupArgs.camera, help="OpenCV camera index or path (real arm)")
    parser.add_argument("--wrist-camera", default="", help="second camera, if the checkpoint uses one (real arm)")
    parser.add_argument("--checkpoint", default="", help="policy folder or hub id (default: the shipped one)")
    parser.add_argument("--layer-budget", type=float, default=BringupArgs.layer_budget, help="fraction in (0, 1]")
    parser.add_argument("--arm-model", default="so100", choices=("so100", "so101"))
    parser.add_argument("--namespace", default="", help="ROS namespace for every node")
    parser.add_argument("--device", default="cpu", help="torch device of the policy (cpu, cuda)")
    parser.add_argument("--instruction", default=None, help="publish this instruction once everything is up")
    parser.add_argument("--moveit", action="store_true", help="refused: move_group needs the launch file")
    ns = parser.parse_args(argv)
    if ns.moveit:
        parser.error(NO_MOVEIT_IN_PROCESS)
    args = BringupArgs(
        sim=ns.sim,
        port=ns.port,
        camera=ns.camera,
        wrist_camera=ns.wrist_camera,
        checkpoint=ns.checkpoint,
        layer_budget=ns.layer_budget,
        arm_model=ns.arm_model,
        namespace=ns.namespace,
        device=ns.device,
    )
    os.environ.setdefault("MUJOCO_GL", "egl")
    return run_in_process(args, ns.instruction)


if __name__ == "__main__":
    raise SystemExit(main())
