"""rviz2 cannot run here: check that config/mole.rviz shows what the suite publishes, with matching QoS."""

from pathlib import Path

import yaml

from so100_driver.description import generate_urdf

ROOT = Path(__file__).resolve().parents[3]


def _displays():
    config = yaml.safe_load((ROOT / "config" / "mole.rviz").read_text())
    return {d["Class"]: d for d in config["Visualization Manager"]["Displays"]}, config


def test_rviz_shows_robot_camera_and_markers_on_the_suites_topics():
    displays, config = _displays()
    robot = displays["rviz_default_plugins/RobotModel"]["Description Topic"]
    assert robot["Value"] == "/robot_description" and robot["Durability Policy"] == "Transient Local"
    image = displays["rviz_default_plugins/Image"]["Topic"]
    # The camera publishes sensor-data QoS (best effort): a reliable subscription would never match.
    assert image["Value"] == "/camera/scene/image_raw" and image["Reliability Policy"] == "Best Effort"
    assert displays["rviz_default_plugins/MarkerArray"]["Topic"]["Value"] == "/mole/markers"
    fixed = config["Visualization Manager"]["Global Options"]["Fixed Frame"]
    assert f'<link name="{fixed}"' in generate_urdf("so100")


def test_monitor_markers_use_the_rviz_fixed_frame():
    _, config = _displays()
    monitor = yaml.safe_load((ROOT / "config" / "monitor.yaml").read_text())
    assert (
        monitor["monitor"]["ros__parameters"]["frame_id"]
        == config["Visualization Manager"]["Global Options"]["Fixed Frame"]
    )
