"""LeRobot-format datasets: reading, writing, recording."""
