"""The suite's named QoS profiles (defined once in so100_driver.qos, which the driver and the sim use too)."""

from so100_driver.qos import LATEST_VALUE, RECORD_IMAGES, RECORD_STREAM, RELIABLE, SENSOR_DATA

__all__ = ["LATEST_VALUE", "RECORD_IMAGES", "RECORD_STREAM", "RELIABLE", "SENSOR_DATA"]
