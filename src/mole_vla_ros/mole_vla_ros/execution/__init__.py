"""ROS-free execution logic the nodes adapt: the async chunk queue, observation freshness, task rules."""
