from so100_driver.testing.ros_harness import isolate_ros_environment

isolate_ros_environment()
