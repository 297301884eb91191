"""The MoLe-VLA model in pure PyTorch (no ROS import anywhere below this package)."""

from .config import CheckpointError, MoLeConfig
from .policy import ChunkPrediction, MoLePolicy

__all__ = ["CheckpointError", "ChunkPrediction", "MoLeConfig", "MoLePolicy"]
