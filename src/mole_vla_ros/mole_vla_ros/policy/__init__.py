"""The MoLe-VLA model in pure PyTorch (no ROS import anywhere below this package)."""
