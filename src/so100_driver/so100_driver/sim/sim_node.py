"""sim_node: the simulated SO-100 in one process, with the real arm's ROS interface plus a camera and a task.

Runs `ArmNode` (joint_states, joint_trajectory_controller/joint_trajectory, joint_command, torque/stop services)
over a `MujocoBackend`, and beside it `SimNode`:
- publishes, for each MJCF camera in `cameras`, `camera/<name>/image_raw` (sensor_msgs/Image, rgb8) and
  `camera/<name>/camera_info`, sensor-data QoS, stamped on the node clock, the clock of joint_states (every camera's
  frame of one instant carries the same stamp);
- subscribes `mole/active_instruction` (std_msgs/String, latched; the policy node publishes the task it executes,
  whether it came as a goal or on /mole/instruction): the text picks the task whose success is detected;
- publishes `/mole/task_success` (std_msgs/Bool, reliable) at `success_rate` Hz;
- serves `sim/reset` (std_srvs/Trigger): a new seeded episode.

`python -m so100_driver.sim.sim_node --ros-args --params-file config/sim.yaml`
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Bool, String
from std_srvs.srv import Trigger

from so100_driver import params, qos
from so100_driver.node_runner import run
from so100_driver.sim.env import SimConfig
from so100_driver.sim.mujoco_backend import Frame, MujocoBackend

# The active instruction is a latched value, the verdict a reliable stream, images best effort.
INSTRUCTION_QOS = qos.LATEST_VALUE
SUCCESS_QOS = qos.RELIABLE


def _float(description: str, low: float, high: float, read_only: bool = True) -> ParameterDescriptor:
    return params.floating(description, low, high, read_only=read_only)


def _int(description: str, low: int, high: int) -> ParameterDescriptor:
    return params.integer(description, low, high, read_only=True)


PARAMETERS = [
    ("seed", 0, _int("seed of the first episode (cube placement, task)", 0, 2**31 - 1)),
    ("arm_model", "so100", ParameterDescriptor(description="so100 or so101", read_only=True)),
    (
        "cameras",
        ["scene", "wrist"],
        ParameterDescriptor(description="MJCF cameras to publish (scene, wrist), in order", read_only=True),
    ),
    ("camera_width", 224, _int("image width, px", 16, 1280)),
    ("camera_height", 224, _int("image height, px", 16, 960)),
    ("camera_fps", 30.0, _float("image rate, frames per sim second (0 = no camera)", 0.0, 120.0)),
    (
        "camera_frame_id",
        "camera_link",
        ParameterDescriptor(description="images carry frame_id <camera>_<camera_frame_id>", read_only=True),
    ),
    ("sim_rate", 100.0, _float("sim loop rate: physics advanced in steps of 1/sim_rate s, Hz", 5.0, 500.0)),
    ("real_time_factor", 1.0, _float("sim seconds per wall second", 0.01, 100.0)),
    ("success_rate", 5.0, _float("/mole/task_success publish rate, Hz", 0.1, 100.0)),
    ("time_limit", 60.0, _float("episode length before sim/reset is due, s (informational)", 1.0, 3600.0)),
]


@dataclass(frozen=True)
class SimNodeConfig:
    seed: int
    arm_model: str
    cameras: list[str]
    camera_width: int
    camera_height: int
    camera_fps: float
    camera_frame_id: str
    sim_rate: float
    real_time_factor: float
    success_rate: float
    time_limit: float


class SimNode(Node):
    """Camera, task and episode reset around a MujocoBackend (which `create_nodes` shares with ArmNode)."""

    def __init__(self, **node_kwargs: object) -> None:
        super().__init__(node_kwargs.pop("node_name", "sim"), **node_kwargs)
        self.declare_parameters("", PARAMETERS)
        self.config = SimNodeConfig(**{name: self.get_parameter(name).value for name, _v, _d in PARAMETERS})
        cfg = self.config
        clock = self.get_clock()
        self.backend = MujocoBackend(
            SimConfig(
                arm=cfg.arm_model,
                control_hz=cfg.sim_rate,
                cameras=tuple(cfg.cameras) if cfg.camera_fps > 0 else (),
                width=cfg.camera_width,
                height=cfg.camera_height,
                time_limit=cfg.time_limit,
            ),
            seed=cfg.seed,
            real_time_factor=cfg.real_time_factor,
            camera_fps=cfg.camera_fps,
            clock_ns=lambda: clock.now().nanoseconds,
        )
        self.on_reset: list = []  # callables run after sim/reset (create_nodes re-syncs the ArmNode)
        self.image_pubs = {
            name: self.create_publisher(Image, f"camera/{name}/image_raw", qos.SENSOR_DATA) for name in cfg.cameras
        }
        self.info_pubs = {
            name: self.create_publisher(CameraInfo, f"camera/{name}/camera_info", qos.SENSOR_DATA)
            for name in cfg.cameras
        }
        self.success_pub = self.create_publisher(Bool, "/mole/task_success", SUCCESS_QOS)
        self.create_subscription(String, "mole/active_instruction", self._on_instruction, INSTRUCTION_QOS)
        self.create_service(Trigger, "sim/reset", self._on_reset)
        self.create_timer(1.0 / cfg.success_rate, self._publish_success)
        self._camera_infos = {name: self._make_camera_info(name) for name in cfg.cameras}
        self._instruction: str | None = None
        self._stop = threading.Event()
        self._camera_thread = None
        if cfg.camera_fps > 0:
            # Frames come from the sim thread as they are rendered; a thread hands them on without a timer's jitter.
            self._camera_thread = threading.Thread(target=self._camera_loop, name="sim-camera", daemon=True)
            self._camera_thread.start()
        self.get_logger().info(
            f"sim up: {cfg.arm_model}, seed {cfg.seed}, cameras {', '.join(cfg.cameras)} {cfg.camera_width}x"
            f"{cfg.camera_height} @ {cfg.camera_fps:g} fps, real-time factor {cfg.real_time_factor:g}, "
            f"task '{self.backend.instruction}'"
        )

    def _make_camera_info(self, name: str) -> CameraInfo:
        cfg = self.config
        model = self.backend.env.model
        fovy = math.radians(float(model.cam_fovy[model.camera(name).id]))
        # MuJoCo's pinhole: fovy spans the image height, square pixels, principal point at the centre.
        f = 0.5 * cfg.camera_height / math.tan(fovy / 2)
        cx, cy = (cfg.camera_width - 1) / 2, (cfg.camera_height - 1) / 2
        info = CameraInfo(width=cfg.camera_width, height=cfg.camera_height, distortion_model="plumb_bob")
        info.header.frame_id = f"{name}_{cfg.camera_frame_id}"
        info.d = [0.0] * 5
        info.k = [f, 0.0, cx, 0.0, f, cy, 0.0, 0.0, 1.0]
        info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
        info.p = [f, 0.0, cx, 0.0, 0.0, f, cy, 0.0, 0.0, 0.0, 1.0, 0.0]
        return info

    def _camera_loop(self) -> None:
        last = -1
        while not self._stop.is_set():
            frame = self.backend.wait_frame(after=last, timeout=0.5)
            if frame is None:
                continue
            last = frame.index
            self._publish_frame(frame)

    def _publish_frame(self, frame: Frame) -> None:
        cfg = self.config
        for name, image in frame.images.items():
            msg = Image(height=cfg.camera_height, width=cfg.camera_width, encoding="rgb8", is_bigendian=0)
            msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(frame.stamp_ns, 1_000_000_000)
            msg.header.frame_id = f"{name}_{cfg.camera_frame_id}"
            msg.step = cfg.camera_width * 3
            msg.data = image.tobytes()
            info = self._camera_infos[name]
            info.header.stamp = msg.header.stamp
            self.image_pubs[name].publish(msg)
            self.info_pubs[name].publish(info)

    def _on_instruction(self, msg: String) -> None:
        try:
            text = self.backend.set_task(msg.data)
        except ValueError as exc:
            self.get_logger().error(f"instruction ignored: {exc}")
            return
        self._instruction = msg.data
        self.get_logger().info(f"task set from instruction: '{text}'")

    def _publish_success(self) -> None:
        self.success_pub.publish(Bool(data=self.backend.success()))

    def _on_reset(self, _request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        # A heard instruction outlives the episode: the detector keeps checking what the user asked for.
        text = self.backend.reset(task=self._instruction)
        for callback in self.on_reset:
            callback()
        response.success = True
        response.message = f"episode seed {self.backend.seed}: {text}"
        self.get_logger().info(response.message)
        return response

    def destroy_node(self) -> None:
        self._stop.set()
        if self._camera_thread is not None:
            self._camera_thread.join(timeout=2.0)
        super().destroy_node()


def create_nodes(**node_kwargs: object) -> list[Node]:
    """SimNode and an ArmNode over its backend, sharing the node kwargs (namespace, parameter overrides...)."""
    from so100_driver.arm_node import ArmNode

    sim = SimNode(**dict(node_kwargs))
    try:
        arm = ArmNode(backend=sim.backend, **dict(node_kwargs))
    except BaseException:
        sim.backend.close()
        sim.destroy_node()
        raise

    def resync_arm() -> None:
        # The arm jumped home: hold where it now is instead of steering back to the old command.
        with arm._lock:
            arm.controller.set_torque(True)

    sim.on_reset.append(resync_arm)
    return [sim, arm]


def main(args: list[str] | None = None) -> int:
    return run(create_nodes, args, num_threads=4)


if __name__ == "__main__":
    raise SystemExit(main())
