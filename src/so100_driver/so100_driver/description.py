"""SO-100 / SO-101 link geometry, and the URDF and MJCF generated from it, plus forward kinematics in numpy.

One kinematic table (`LINKS`, below) joined with the joint table (`so100_driver.joints`: names, limits, effort)
produces the URDF (`urdf/<arm>.urdf`), the robot MJCF (`so100_driver/models/<arm>.xml`) and `forward_kinematics`,
so the three cannot drift. Regenerate the files with `python -m so100_driver.description` (a test fails when they
are out of date).

Geometry: link offsets follow the arm's published dimensions (TheRobotStudio SO-ARM100 URDF and the MuJoCo
Menagerie `trs_so_arm100` model: shoulder axis about 12 cm above the table, upper arm about 11.6 cm, forearm about
13.5 cm, wrist-to-jaw-tip about 15 cm), rounded, with simple boxes and cylinders instead of meshes.

Frames: z up, x forward (REP-103). Zero is the calibrated mid-range of every servo (LeRobot's convention, NOT
Menagerie's "fully extended = 0"): at zero the arm stands as an upright "L": upper arm vertical, forearm and
gripper horizontal, pointing forward. The pitch joints (shoulder_lift, elbow_flex, wrist_flex) turn about +y, so a
positive angle tips the next link forward and down; wrist_roll turns about the gripper's x axis; the gripper
joint opens the moving jaw (upper limit = wide open).
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from so100_driver.joints import JointSpec, joints_for

PACKAGE_ROOT = Path(__file__).resolve().parent
MODELS_DIR = PACKAGE_ROOT / "models"
# The URDF lives beside the package (share/so100_driver/urdf once installed); in develop mode it is the source tree.
URDF_DIR = PACKAGE_ROOT.parent / "urdf"

END_EFFECTOR = "gripper_tip"
GRASP_SITE = "grasp"


@dataclass(frozen=True)
class Box:
    """A box in its link's frame: half sizes (m), centre (m), yaw about the link's z (rad), colour."""

    half: tuple[float, float, float]
    pos: tuple[float, float, float]
    rgba: tuple[float, float, float, float]
    yaw: float = 0.0


@dataclass(frozen=True)
class Link:
    """A rigid link, attached to `parent` by `joint` (a name in joints.py, or None for a fixed link).

    `origin` is the joint frame in the parent's frame (m; no rotation: every joint frame is parallel to the
    parent's at zero), `axis` the joint axis in that frame. Mass (kg) is spread over the first box for the inertia.
    """

    name: str
    parent: str | None
    joint: str | None
    origin: tuple[float, float, float]
    axis: tuple[float, float, float]
    mass: float
    boxes: tuple[Box, ...]


@dataclass(frozen=True)
class ArmGeometry:
    """The handful of lengths (m) that differ between the SO-100 and the SO-101."""

    base_height: float  # table to shoulder_pan frame
    shoulder: tuple[float, float]  # (x, z) of the shoulder_lift axis in the pan frame
    upper_arm: tuple[float, float]  # (x, z) of the elbow axis in the upper-arm frame (the arm has a kink)
    forearm: tuple[float, float]  # (x, z) of the wrist_flex axis in the forearm frame
    wrist: float  # wrist_flex axis to the wrist_roll frame, along x
    tip: float  # wrist_roll frame to the jaw tips, along x


GEOMETRY: dict[str, ArmGeometry] = {
    "so100": ArmGeometry(0.045, (0.030, 0.075), (0.028, 0.1126), (0.1349, 0.0052), 0.060, 0.090),
    "so101": ArmGeometry(0.046, (0.030, 0.074), (0.028, 0.1126), (0.1349, 0.0050), 0.061, 0.098),
}

_PRINTED = (0.95, 0.45, 0.10, 1.0)  # orange PLA
_SERVO = (0.10, 0.10, 0.10, 1.0)
# The fixed jaw's inner face sits this far (m) from the centre line: half a 3 cm cube + 5 mm of clearance, so an
# approach that is a few mm off does not land the fixed jaw on the cube (closing pushes the cube across instead).
_JAW_GAP_HALF = 0.020
_JAW_HINGE = (0.012, 0.020)  # (x, y) of the moving jaw's hinge in the gripper frame
CUBE_HALF_NOMINAL = 0.015  # m: the object size the jaws are shaped for (the scene's 3 cm cubes)
GRASP_ANGLE = math.radians(25.0)  # jaw opening (from closed) at which the pad lies flat on a 3 cm cube


def links_for(arm: str = "so100") -> tuple[Link, ...]:
    """The kinematic tree of an arm, base first, in joint order."""
    g = GEOMETRY[arm]
    gripper_lower = _joint(arm, "gripper").lower
    ux, uz = g.upper_arm
    fx, fz = g.forearm
    hx, hy = _JAW_HINGE
    # The moving jaw's pad is parallel to the fixed jaw when the jaws hold a cube (at GRASP_ANGLE), so the grip is
    # face to face rather than on an edge. Its pose is written in the jaw frame, i.e. rotated back by that angle.
    grasp = gripper_lower + GRASP_ANGLE
    pad_len = g.tip - 0.035
    pad_centre = (0.035 + pad_len / 2 - hx, -_JAW_GAP_HALF + 2 * CUBE_HALF_NOMINAL + 0.003 - hy)
    pad_pos = (
        math.cos(-grasp) * pad_centre[0] - math.sin(-grasp) * pad_centre[1],
        math.sin(-grasp) * pad_centre[0] + math.cos(-grasp) * pad_centre[1],
        0.0,
    )
    return (
        Link(
            "base_link",
            None,
            None,
            (0, 0, 0),
            (0, 0, 0),
            0.5,
            (Box((0.045, 0.045, g.base_height / 2), (0, 0, g.base_height / 2), _PRINTED),),
        ),
        Link(
            "shoulder_link",
            "base_link",
            "shoulder_pan",
            (0, 0, g.base_height),
            (0, 0, 1),
            0.12,
            (Box((0.025, 0.025, g.shoulder[1] / 2), (g.shoulder[0] / 2, 0, g.shoulder[1] / 2), _SERVO),),
        ),
        Link(
            "upper_arm_link",
            "shoulder_link",
            "shoulder_lift",
            (g.shoulder[0], 0, g.shoulder[1]),
            (0, 1, 0),
            0.10,
            (Box((0.016, 0.022, uz / 2), (ux / 2, 0, uz / 2), _PRINTED),),
        ),
        Link(
            "lower_arm_link",
            "upper_arm_link",
            "elbow_flex",
            (ux, 0, uz),
            (0, 1, 0),
            0.10,
            (Box((fx / 2, 0.018, 0.014), (fx / 2, 0, fz / 2), _PRINTED),),
        ),
        Link(
            "wrist_link",
            "lower_arm_link",
            "wrist_flex",
            (fx, 0, fz),
            (0, 1, 0),
            0.05,
            (Box((g.wrist / 2, 0.018, 0.014), (g.wrist / 2, 0, 0), _SERVO),),
        ),
        Link(
            "gripper_link",
            "wrist_link",
            "wrist_roll",
            (g.wrist, 0, 0),
            (1, 0, 0),
            0.06,
            (
                Box((0.012, 0.024, 0.016), (0.006, 0, 0), _PRINTED),
                Box((g.tip / 2, 0.004, 0.012), (g.tip / 2, -_JAW_GAP_HALF - 0.004, 0), _PRINTED),
            ),
        ),
        Link(
            "jaw_link",
            "gripper_link",
            "gripper",
            (hx, hy, 0),
            (0, 0, 1),
            0.03,
            (Box((pad_len / 2, 0.003, 0.010), pad_pos, _PRINTED, yaw=-grasp),),
        ),
    )


def _joint(arm: str, name: str) -> JointSpec:
    for spec in joints_for(arm):
        if spec.name == name:
            return spec
    raise KeyError(name)


def tip_offset(arm: str = "so100") -> tuple[float, float, float]:
    """`gripper_tip` in the gripper_link frame: on the jaws' centre line, at the jaw tips."""
    return (GEOMETRY[arm].tip, 0.0, 0.0)


def grasp_offset(arm: str = "so100") -> tuple[float, float, float]:
    """Where a cube's centre sits when held: between the jaws, 1.2 cm back from the tips (so the tips stay clear
    of the table when a cube resting on it is grasped at its centre)."""
    return (GEOMETRY[arm].tip - 0.012, 0.0, 0.0)


# ----------------------------------------------------------------------------------------------- kinematics


def _rot(axis: tuple[float, float, float], angle: float) -> np.ndarray:
    x, y, z = axis
    c, s = math.cos(angle), math.sin(angle)
    k = np.array([[0, -z, y], [z, 0, -x], [-y, x, 0]], dtype=float)
    return np.eye(3) + s * k + (1 - c) * (k @ k)


def forward_kinematics(positions: np.ndarray | list[float], arm: str = "so100") -> dict[str, np.ndarray]:
    """Homogeneous transforms (4x4, base_link frame, m) of every link and of `gripper_tip`/`grasp`.

    `positions`: the 6 joint positions (rad, joints.py order). Raises ValueError on a wrong length or NaN.
    """
    specs = joints_for(arm)
    q = np.asarray(positions, dtype=float).reshape(-1)
    if q.shape != (len(specs),) or not np.all(np.isfinite(q)):
        raise ValueError(f"forward_kinematics wants {len(specs)} finite joint positions, got {positions!r}")
    by_joint = {spec.name: q[i] for i, spec in enumerate(specs)}
    frames: dict[str, np.ndarray] = {}
    for link in links_for(arm):
        t = np.eye(4)
        if link.parent is not None:
            local = np.eye(4)
            local[:3, 3] = link.origin
            if link.joint is not None:
                local[:3, :3] = _rot(link.axis, by_joint[link.joint])
            t = frames[link.parent] @ local
        frames[link.name] = t
    for name, offset in ((END_EFFECTOR, tip_offset(arm)), (GRASP_SITE, grasp_offset(arm))):
        local = np.eye(4)
        local[:3, 3] = offset
        frames[name] = frames["gripper_link"] @ local
    return frames


# ----------------------------------------------------------------------------------------------- generators


def _f(values: tuple[float, ...] | list[float]) -> str:
    return " ".join(f"{v:.6g}" if abs(v) > 1e-12 else "0" for v in values)


def _box_inertia(mass: float, half: tuple[float, float, float]) -> tuple[float, float, float]:
    x, y, z = (2 * h for h in half)
    return (mass * (y * y + z * z) / 12, mass * (x * x + z * z) / 12, mass * (x * x + y * y) / 12)


def generate_urdf(arm: str = "so100") -> str:
    """The URDF (robot_description) of an arm, with boxes, inertias, limits and the `gripper_tip` frame."""
    specs = {s.name: s for s in joints_for(arm)}
    out = [
        '<?xml version="1.0"?>',
        "<!-- GENERATED by so100_driver.description (python -m so100_driver.description). Do not edit. -->",
        f'<robot name="{arm}">',
    ]
    for link in links_for(arm):
        first = link.boxes[0]
        ixx, iyy, izz = _box_inertia(link.mass, first.half)
        out += [
            f'  <link name="{link.name}">',
            "    <inertial>",
            f'      <origin xyz="{_f(first.pos)}"/>',
            f'      <mass value="{link.mass:.6g}"/>',
            f'      <inertia ixx="{ixx:.6g}" ixy="0" ixz="0" iyy="{iyy:.6g}" iyz="0" izz="{izz:.6g}"/>',
            "    </inertial>",
        ]
        for tag in ("visual", "collision"):
            for box in link.boxes:
                size = _f(tuple(2 * h for h in box.half))
                out += [
                    f"    <{tag}>",
                    f'      <origin xyz="{_f(box.pos)}" rpy="0 0 {box.yaw:.6g}"/>',
                    f'      <geometry><box size="{size}"/></geometry>',
                ]
                if tag == "visual":
                    out.append(
                        f'      <material name="rgba_{_f(box.rgba).replace(" ", "_")}">'
                        f'<color rgba="{_f(box.rgba)}"/></material>'
                    )
                out.append(f"    </{tag}>")
        out.append("  </link>")
        if link.parent is not None and link.joint is not None:
            s = specs[link.joint]
            out += [
                f'  <joint name="{s.name}" type="revolute">',
                f'    <parent link="{link.parent}"/>',
                f'    <child link="{link.name}"/>',
                f'    <origin xyz="{_f(link.origin)}" rpy="0 0 0"/>',
                f'    <axis xyz="{_f(link.axis)}"/>',
                f'    <limit lower="{s.lower:.17g}" upper="{s.upper:.17g}" effort="{s.max_effort:.6g}" '
                f'velocity="{s.max_velocity:.6g}"/>',
                "  </joint>",
            ]
    for name, offset in ((END_EFFECTOR, tip_offset(arm)), (GRASP_SITE, grasp_offset(arm))):
        out += [
            f'  <link name="{name}"/>',
            f'  <joint name="{name}_joint" type="fixed">',
            '    <parent link="gripper_link"/>',
            f'    <child link="{name}"/>',
            f'    <origin xyz="{_f(offset)}" rpy="0 0 0"/>',
            "  </joint>",
        ]
    out += ["</robot>", ""]
    return "\n".join(out)


def generate_mjcf(arm: str = "so100") -> str:
    """The robot-only MJCF: bodies, hinge joints with the joints.py limits, servo-like position actuators.

    Servo behaviour: the actuator force is clamped to the servo's stall torque (`forcerange`); the finite speed is
    applied by whoever sets the control (SimEnv ramps the control toward the goal at the joint's max velocity, as
    the STS3215's own speed profile does), and `damping`/`armature` stand for the gearbox.
    """
    specs = {s.name: s for s in joints_for(arm)}
    links = links_for(arm)
    children: dict[str | None, list[Link]] = {}
    for link in links:
        children.setdefault(link.parent, []).append(link)

    out = [
        "<!-- GENERATED by so100_driver.description (python -m so100_driver.description). Do not edit. -->",
        f'<mujoco model="{arm}">',
        '  <compiler angle="radian" autolimits="true"/>',
        "  <default>",
        f'    <default class="{arm}">',
        '      <joint damping="0.6" armature="0.01" frictionloss="0.02"/>',
        '      <position kp="50" kv="0.5"/>',
        '      <geom type="box" friction="1.2 0.02 0.001" condim="4" solref="0.004 1"/>',
        "    </default>",
        "  </default>",
        "  <worldbody>",
    ]

    def emit(link: Link, depth: int) -> None:
        pad = "  " * depth
        first = link.boxes[0]
        ixx, iyy, izz = _box_inertia(link.mass, first.half)
        out.append(f'{pad}<body name="{link.name}" pos="{_f(link.origin)}" childclass="{arm}">')
        out.append(
            f'{pad}  <inertial pos="{_f(first.pos)}" mass="{link.mass:.6g}" '
            f'diaginertia="{ixx:.6g} {iyy:.6g} {izz:.6g}"/>'
        )
        if link.joint is not None:
            s = specs[link.joint]
            out.append(
                f'{pad}  <joint name="{s.name}" axis="{_f(link.axis)}" range="{s.lower:.17g} {s.upper:.17g}" '
                f'actuatorfrcrange="{-s.max_effort:.6g} {s.max_effort:.6g}"/>'
            )
        for i, box in enumerate(link.boxes):
            out.append(
                f'{pad}  <geom name="{link.name}_{i}" size="{_f(box.half)}" pos="{_f(box.pos)}" '
                f'euler="0 0 {box.yaw:.6g}" rgba="{_f(box.rgba)}"/>'
            )
        if link.name == "gripper_link":
            out.append(
                f'{pad}  <site name="{END_EFFECTOR}" pos="{_f(tip_offset(arm))}" size="0.004" '
                'rgba="1 0 0 0.6" group="4"/>'
            )
            out.append(
                f'{pad}  <site name="{GRASP_SITE}" pos="{_f(grasp_offset(arm))}" size="0.004" '
                'rgba="0 1 0 0.6" group="4"/>'
            )
            # Looks along the jaws (camera -z = gripper +x), image up = gripper +z.
            out.append(f'{pad}  <camera name="wrist" pos="0.02 0 0.04" xyaxes="0 -1 0 0.5 0 0.866" fovy="75"/>')
        for child in children.get(link.name, []):
            emit(child, depth + 1)
        out.append(f"{pad}</body>")

    for root in children[None]:
        emit(root, 2)
    out += ["  </worldbody>", "  <contact>"]
    # Neighbouring links overlap at their joints by construction; the jaws must still touch the cube.
    for link in links:
        if link.parent is not None:
            out.append(f'    <exclude body1="{link.parent}" body2="{link.name}"/>')
    out += ["  </contact>", "  <actuator>"]
    for s in joints_for(arm):
        out.append(
            f'    <position name="{s.name}" joint="{s.name}" class="{arm}" ctrlrange="{s.lower:.17g} '
            f'{s.upper:.17g}" forcerange="{-s.max_effort:.6g} {s.max_effort:.6g}"/>'
        )
    out += [
        "  </actuator>",
        "  <keyframe>",
        f'    <key name="home" qpos="{_f([0.0] * len(specs))}" ctrl="{_f([0.0] * len(specs))}"/>',
        "  </keyframe>",
        "</mujoco>",
        "",
    ]
    return "\n".join(out)


def urdf_path(arm: str = "so100") -> Path:
    """The generated URDF file: the source tree in develop mode, else the package's share directory."""
    local = URDF_DIR / f"{arm}.urdf"
    if local.is_file():
        return local
    from ament_index_python.packages import get_package_share_directory

    return Path(get_package_share_directory("so100_driver")) / "urdf" / f"{arm}.urdf"


def generated_files() -> dict[Path, str]:
    """Every file the generator owns -> its expected content."""
    files: dict[Path, str] = {}
    for arm in GEOMETRY:
        files[URDF_DIR / f"{arm}.urdf"] = generate_urdf(arm)
        files[MODELS_DIR / f"{arm}.xml"] = generate_mjcf(arm)
    from so100_driver.sim.scene import generate_scene  # the scene builds on the robot; imported late, no cycle

    for arm in GEOMETRY:
        files[MODELS_DIR / f"scene_{arm}.xml"] = generate_scene(arm)
    return files


def regenerate(files: dict[Path, str], description: str, argv: list[str] | None = None) -> int:
    """The CLI of every generator: write the files that changed, or with --check only report them (exit 1)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--check", action="store_true", help="only report files that are out of date (exit 1)")
    args = parser.parse_args(argv)
    stale = []
    for path, text in files.items():
        if path.exists() and path.read_text() == text:
            continue
        stale.append(path)
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote {path}")
    if args.check and stale:
        print("out of date:", *map(str, stale), sep="\n  ")
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    return regenerate(generated_files(), "Regenerate the SO-100/SO-101 URDF and MJCF files.", argv)


if __name__ == "__main__":
    raise SystemExit(main())
