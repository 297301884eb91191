"""ParameterDescriptor builders shared by the nodes, so every parameter carries a description and a range."""

from __future__ import annotations

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor


def floating(description: str, low: float, high: float, read_only: bool = False) -> ParameterDescriptor:
    return ParameterDescriptor(
        description=description,
        floating_point_range=[FloatingPointRange(from_value=float(low), to_value=float(high), step=0.0)],
        read_only=read_only,
    )


def integer(description: str, low: int, high: int, read_only: bool = False) -> ParameterDescriptor:
    return ParameterDescriptor(
        description=description,
        integer_range=[IntegerRange(from_value=int(low), to_value=int(high), step=1)],
        read_only=read_only,
    )


def text(description: str, read_only: bool = False) -> ParameterDescriptor:
    return ParameterDescriptor(description=description, read_only=read_only)


def choice(description: str, choices: tuple[str, ...], read_only: bool = False) -> ParameterDescriptor:
    return ParameterDescriptor(
        description=f"{description} One of: {', '.join(choices)}.",
        additional_constraints=f"one of {list(choices)}",
        read_only=read_only,
    )


def bus_parameters(port: str, calibration: str) -> list[tuple[str, object, ParameterDescriptor]]:
    """The Feetech bus parameters every node on a servo bus declares (the follower arm, the leader arm)."""
    return [
        ("port", port, text("serial port of the servo bus", read_only=True)),
        ("baudrate", 1_000_000, integer("bus baud rate (STS3215 default 1000000)", 9600, 1_000_000, read_only=True)),
        ("calibration_file", "", text(calibration, read_only=True)),
        ("arm_model", "so100", text("so100 or so101 (joint table)", read_only=True)),
    ]
