"""MoLe-VLA for ROS 2: a SmolVLA-style vision-language-action policy that skips backbone layers it does not need."""
