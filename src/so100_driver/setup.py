import os

from setuptools import find_packages, setup

PACKAGE = "so100_driver"


def share_tree(folder: str) -> list[tuple[str, list[str]]]:
    """data_files entries that install `folder` (recursively) under share/<package>/<folder>."""
    entries = []
    for root, _dirs, files in os.walk(folder):
        paths = [os.path.join(root, f) for f in files]
        if paths:
            entries.append((os.path.join("share", PACKAGE, root), paths))
    return entries


setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        *share_tree("urdf"),
        *share_tree("models"),
        *share_tree("config"),
    ],
    package_data={PACKAGE: ["**/*.xml", "**/*.yaml", "**/*.urdf"]},
    install_requires=["setuptools"],
    zip_safe=False,
    maintainer="mole-vla-ros maintainers",
    maintainer_email="maintainers@mole-vla-ros.org",
    description="SO-100/SO-101 driver over Feetech STS3215 servos and a MuJoCo simulated arm.",
    license="Apache-2.0",
    tests_require=["pytest"],
    entry_points={
        "console_scripts": [
            "arm_node = so100_driver.arm_node:main",
            "leader_node = so100_driver.leader_node:main",
            "calibrate = so100_driver.calibrate:main",
            "sim_node = so100_driver.sim.sim_node:main",
        ],
    },
)
