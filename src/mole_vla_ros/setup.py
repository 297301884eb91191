import os

from setuptools import find_packages, setup

PACKAGE = "mole_vla_ros"
HERE = os.path.dirname(os.path.abspath(__file__))
# launch/ and config/ live at the repository root (the design card's layout); they are installed into this
# package's share/ so `ros2 launch mole_vla_ros bringup.launch.py` and FindPackageShare find them.
REPO_ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))


def share_tree(folder: str, base: str = HERE) -> list[tuple[str, list[str]]]:
    """data_files entries that install base/folder (recursively) under share/<package>/<folder>."""
    entries = []
    top = os.path.join(base, folder)
    for root, _dirs, files in os.walk(top):
        paths = [os.path.relpath(os.path.join(root, f), HERE) for f in files if not f.endswith(".pyc")]
        if paths:
            rel = os.path.relpath(root, base)
            entries.append((os.path.join("share", PACKAGE, rel), paths))
    return entries


setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        *share_tree("launch", REPO_ROOT),
        *share_tree("config", REPO_ROOT),
        *share_tree("checkpoints"),
    ],
    install_requires=["setuptools"],
    zip_safe=False,
    maintainer="mole-vla-ros maintainers",
    maintainer_email="maintainers@mole-vla-ros.org",
    description="MoLe-VLA: a SmolVLA-style vision-language-action policy with STAR layer routing, and its ROS 2 nodes.",
    license="Apache-2.0",
    tests_require=["pytest"],
    entry_points={
        "console_scripts": [
            "mole-vla = mole_vla_ros.cli:main",
            "camera_node = mole_vla_ros.nodes.camera_node:main",
            "policy_node = mole_vla_ros.nodes.policy_node:main",
            "chunk_executor_node = mole_vla_ros.nodes.chunk_executor_node:main",
            "monitor_node = mole_vla_ros.nodes.monitor_node:main",
            "recorder_node = mole_vla_ros.nodes.recorder_node:main",
            "record_keys = mole_vla_ros.tools.record_keys:main",
        ],
    },
)
