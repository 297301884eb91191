"""The named QoS profiles of the suite, chosen by intent once; nodes take these, they never build their own.

- SENSOR_DATA: camera images. Best effort, shallow: a late frame is worthless, a retransmitted one is worse.
- RELIABLE: commands, action chunks, chunk requests, joint states. Every message counts, so reliable with a
  short queue (depth 10) that absorbs a burst without hiding a stalled reader for long.
- LATEST_VALUE: topics whose last value is the state (the instruction, robot_description). Transient local with
  depth 1 so a node that starts late still receives the value published before it joined.
- RECORD_IMAGES / RECORD_STREAM: what a recorder subscribes with. Same reliability as what it records (so it
  matches any camera and any joint-state publisher), but deep: a recorder that falls behind for a moment (an
  encoder burst, a loaded CPU) must catch up, not lose the samples a shallow KEEP_LAST queue would overwrite.
"""

from __future__ import annotations

from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)

SENSOR_DATA: QoSProfile = qos_profile_sensor_data

RELIABLE: QoSProfile = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=10,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.VOLATILE,
)

LATEST_VALUE: QoSProfile = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=1,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
)

RECORD_IMAGES: QoSProfile = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=60,  # 2 s at 30 fps
    reliability=ReliabilityPolicy.BEST_EFFORT,
    durability=DurabilityPolicy.VOLATILE,
)

RECORD_STREAM: QoSProfile = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=400,  # 2 s of a 200 Hz leader arm
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.VOLATILE,
)
