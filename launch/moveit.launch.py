"""MoveIt 2 for the SO-100 / SO-101 (full ROS installs with MoveIt and ros2_control):

    ros2 launch mole_vla_ros moveit.launch.py arm_model:=so100 hardware:=mock
    ros2 launch mole_vla_ros moveit.launch.py hardware:=topic_based   # drives our arm/sim node in /so100

Starts ros2_control (controller_manager with config/ros2_control/<arm>_controllers.yaml and the spawners of
joint_state_broadcaster, joint_trajectory_controller and gripper_controller) unless `ros2_control:=false`, and
move_group with config/moveit/<arm>/. Everything move_group reads comes from mole_vla_ros.moveit_adapter, which is
tested where MoveIt cannot be installed; this file only turns it into launch actions.
"""

from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from launch import LaunchDescription
from mole_vla_ros.bringup import config_dir
from mole_vla_ros.moveit_adapter import move_group_parameters

ARGUMENTS = [
    ("arm_model", "so100", "so100 or so101"),
    ("hardware", "mock", "topic_based (our arm/sim node, namespace /so100) or mock (mock_components)"),
    ("ros2_control", "true", "start controller_manager and the controllers (false: an existing stack runs them)"),
]
CONTROLLERS = ("joint_state_broadcaster", "joint_trajectory_controller", "gripper_controller")


def _nodes(context, *_args, **_kwargs):
    arm = LaunchConfiguration("arm_model").perform(context)
    hardware = LaunchConfiguration("hardware").perform(context)
    params = move_group_parameters(arm, hardware)
    actions = [Node(package="moveit_ros_move_group", executable="move_group", parameters=[params], output="screen")]
    if LaunchConfiguration("ros2_control").perform(context).lower() == "true":
        actions.append(
            Node(
                package="controller_manager",
                executable="ros2_control_node",
                parameters=[
                    {"robot_description": params["robot_description"]},
                    str(config_dir() / "ros2_control" / f"{arm}_controllers.yaml"),
                ],
                output="screen",
            )
        )
        actions += [
            Node(package="controller_manager", executable="spawner", arguments=[name], output="screen")
            for name in CONTROLLERS
        ]
        actions.append(
            Node(
                package="robot_state_publisher",
                executable="robot_state_publisher",
                parameters=[{"robot_description": params["robot_description"]}],
            )
        )
    return actions


def generate_launch_description():
    return LaunchDescription(
        [DeclareLaunchArgument(name, default_value=default, description=doc) for name, default, doc in ARGUMENTS]
        + [OpaqueFunction(function=_nodes)]
    )
