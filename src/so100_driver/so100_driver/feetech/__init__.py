"""Feetech STS3215 serial bus: the control table (tables.py) and the protocol layer over scservo_sdk (bus.py)."""
