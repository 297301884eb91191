"""STS3215 (Feetech STS/SMS series) control table as data: register name -> (address, size in bytes).

Source: Feetech's STS/SMS memory table,
http://doc.feetech.cn/#/prodinfodownload?srcType=FT-SMS-STS-emanual-229f4476422d4059abfb1cb0 , as transcribed in
LeRobot's `src/lerobot/motors/feetech/tables.py` (STS_SMS_SERIES_CONTROL_TABLE); the addresses below were checked
against that file. Multi-byte values are little-endian on the wire (scservo_sdk `PacketHandler(0)`).
"""

from __future__ import annotations

# name: (address, size). EEPROM registers (below 40) survive power-off and need Lock=0 to write.
CONTROL_TABLE: dict[str, tuple[int, int]] = {
    # EEPROM
    "Firmware_Major_Version": (0, 1),
    "Firmware_Minor_Version": (1, 1),
    "Model_Number": (3, 2),
    "ID": (5, 1),
    "Baud_Rate": (6, 1),
    "Return_Delay_Time": (7, 1),
    "Response_Status_Level": (8, 1),
    "Min_Position_Limit": (9, 2),
    "Max_Position_Limit": (11, 2),
    "Max_Temperature_Limit": (13, 1),
    "Max_Voltage_Limit": (14, 1),
    "Min_Voltage_Limit": (15, 1),
    "Max_Torque_Limit": (16, 2),
    "Phase": (18, 1),
    "Unloading_Condition": (19, 1),
    "LED_Alarm_Condition": (20, 1),
    "P_Coefficient": (21, 1),
    "D_Coefficient": (22, 1),
    "I_Coefficient": (23, 1),
    "Minimum_Startup_Force": (24, 2),
    "CW_Dead_Zone": (26, 1),
    "CCW_Dead_Zone": (27, 1),
    "Protection_Current": (28, 2),
    "Angular_Resolution": (30, 1),
    "Homing_Offset": (31, 2),
    "Operating_Mode": (33, 1),
    "Protective_Torque": (34, 1),
    "Protection_Time": (35, 1),
    "Overload_Torque": (36, 1),
    # SRAM
    "Torque_Enable": (40, 1),
    "Acceleration": (41, 1),
    "Goal_Position": (42, 2),
    "Goal_Time": (44, 2),
    "Goal_Velocity": (46, 2),
    "Torque_Limit": (48, 2),
    "Lock": (55, 1),
    "Present_Position": (56, 2),
    "Present_Velocity": (58, 2),
    "Present_Load": (60, 2),
    "Present_Voltage": (62, 1),
    "Present_Temperature": (63, 1),
    "Status": (65, 1),
    "Moving": (66, 1),
    "Present_Current": (69, 2),
}

# Sign-magnitude registers: the bit that holds the sign (LeRobot's STS_SMS_SERIES_ENCODINGS_TABLE). Present_Load
# carries its direction in bit 10 (magnitude 0..1000 in 0.1 % of max torque), per the Feetech memory table.
SIGN_BITS: dict[str, int] = {"Homing_Offset": 11, "Goal_Velocity": 15, "Present_Velocity": 15, "Present_Load": 10}

STS3215_MODEL_NUMBER = 777
RESOLUTION = 4096  # ticks per turn
MAX_TICK = RESOLUTION - 1

BAUD_RATES: dict[int, int] = {
    1_000_000: 0,
    500_000: 1,
    250_000: 2,
    128_000: 3,
    115_200: 4,
    57_600: 5,
    38_400: 6,
    19_200: 7,
}

# Status-packet error bits (scservo_sdk protocol_packet_handler ERRBIT_*).
ERROR_BITS: dict[int, str] = {
    1: "input voltage error",
    2: "angle sensor error",
    4: "overheat",
    8: "overcurrent",
    32: "overload",
}

# Units of the telemetry registers.
VELOCITY_TICKS_PER_S = 1.0  # Present_Velocity counts ticks/s (0.732 rpm per 50 ticks/s on STS3215)
VOLTAGE_SCALE = 0.1  # Present_Voltage: 0.1 V
LOAD_SCALE = 0.001  # Present_Load: 0.1 % of max torque -> fraction


def describe_error(error: int) -> str:
    """Status error byte -> 'overload, overheat' (or '' when clear)."""
    names = [name for bit, name in ERROR_BITS.items() if error & bit]
    unknown = error & ~sum(ERROR_BITS)
    if unknown:
        names.append(f"unknown error bits 0x{unknown:02x}")
    return ", ".join(names)


def encode_sign_magnitude(value: int, sign_bit: int) -> int:
    if abs(value) >= 1 << sign_bit:
        raise ValueError(f"{value} does not fit a sign-magnitude field with the sign in bit {sign_bit}")
    return (1 << sign_bit) | -value if value < 0 else value


def decode_sign_magnitude(raw: int, sign_bit: int) -> int:
    magnitude = raw & ((1 << sign_bit) - 1)
    return -magnitude if raw & (1 << sign_bit) else magnitude
