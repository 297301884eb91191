"""ROS 2 driver for the SO-100 / SO-101 arm (Feetech STS3215 servos) and its MuJoCo simulation."""
