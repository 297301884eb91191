"""Bring up the mole-vla-ros suite: the arm (real or MuJoCo), the camera, the VLA policy action server, the async
chunk executor, monitoring, robot_description and (optionally) rviz.

    ros2 launch mole_vla_ros bringup.launch.py sim:=true
    ros2 launch mole_vla_ros bringup.launch.py sim:=false port:=/dev/ttyACM0 camera:=0 checkpoint:=<hub id or path>
    ros2 launch mole_vla_ros bringup.launch.py sim:=true moveit:=true   # + move_group (needs MoveIt installed)

The node list and parameters come from mole_vla_ros.bringup.plan(), which `mole-vla bringup` runs in one process
too; this file only turns that plan into launch actions.
"""

from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from launch import LaunchDescription
from mole_vla_ros.bringup import MOVE_GROUP_PACKAGE, BringupArgs, parameters_for, plan, require_package
from so100_driver.description import generate_urdf

ARGUMENTS = [
    ("sim", "true", "true: MuJoCo arm and camera; false: the real SO-100 on `port` and camera `camera`"),
    ("port", "/dev/ttyACM0", "serial port of the Feetech servo bus (sim:=false)"),
    ("camera", "0", "OpenCV index or device path of the checkpoint's first camera (sim:=false)"),
    ("wrist_camera", "", "device of the checkpoint's second camera, if it has one (sim:=false)"),
    ("checkpoint", "", "policy checkpoint: local folder or Hugging Face hub id; empty = the shipped default"),
    ("layer_budget", "0.5", "fraction of backbone layers the STAR router may run, in (0, 1]"),
    ("arm_model", "so100", "so100 or so101"),
    ("namespace", "", "namespace for every node of the suite"),
    ("device", "cpu", "torch device of the policy: cpu or cuda"),
    ("rviz", "false", "start rviz2 with config/mole.rviz"),
    ("moveit", "false", "also start MoveIt's move_group with config/moveit/<arm_model>/ (needs MoveIt installed)"),
]


def _nodes(context, *_args, **_kwargs):
    value = {name: LaunchConfiguration(name).perform(context) for name, _default, _doc in ARGUMENTS}
    args = BringupArgs(
        sim=value["sim"].lower() == "true",
        port=value["port"],
        camera=value["camera"],
        wrist_camera=value["wrist_camera"],
        checkpoint=value["checkpoint"],
        layer_budget=float(value["layer_budget"]),
        arm_model=value["arm_model"],
        namespace=value["namespace"],
        device=value["device"],
        moveit=value["moveit"].lower() == "true",
    )
    if args.moveit:  # fail at launch, naming the package, rather than with a missing executable later
        require_package(MOVE_GROUP_PACKAGE, "moveit:=true")
    actions = [
        Node(
            package=spec.package,
            executable=spec.executable,
            name=spec.name if spec.rename else None,
            namespace=args.namespace,
            parameters=[parameters_for(spec)],
            remappings=list(spec.remappings),
            output="screen",
        )
        for spec in plan(args)
    ]
    # robot_state_publisher turns /joint_states into TF for rviz and MoveIt; the URDF comes from the joint table.
    actions.append(
        Node(
            package="robot_state_publisher",
            executable="robot_state_publisher",
            namespace=args.namespace,
            parameters=[{"robot_description": generate_urdf(args.arm_model)}],
            output="screen",
        )
    )
    return actions


def generate_launch_description():
    rviz_config = [FindPackageShare("mole_vla_ros"), "/config/mole.rviz"]
    return LaunchDescription(
        [DeclareLaunchArgument(name, default_value=default, description=doc) for name, default, doc in ARGUMENTS]
        + [
            OpaqueFunction(function=_nodes),
            # rviz2 shows the robot model, the camera, the planned chunk path and the router state.
            Node(
                package="rviz2",
                executable="rviz2",
                arguments=["-d", rviz_config],
                condition=IfCondition(LaunchConfiguration("rviz")),
            ),
        ]
    )
