"""Thin rclpy adapters over the ROS-free policy, execution and data code."""
