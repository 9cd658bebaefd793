"""Parameters covering every encoding and codec column on two devices, and topics that use them.

Shared by the decoder's property tests and the decode stage's tests.
"""

from __future__ import annotations

from f2stream.codec.model import Parameter, ParameterIndex

DEVICE = "f2-e4fd45f654be"
SENSOR_DEVICE = "f2-02f200000001"
UNKNOWN_DEVICE = "f2-0000000000ff"
STAMP = "2025-01-31 12:00:00.123456"
TIME = "2025-01-31T12:00:00.123456+00:00"
RECEIVED = "2025-01-31T12:00:01.000000+00:00"


def param(device: str, mode: str, component_type: str, number: str | None, encoding: str, **extra: object) -> Parameter:
    return Parameter.from_row(
        {
            "device_id": device,
            "mode": mode,
            "component_type": component_type,
            "component_number": number,
            "encoding": encoding,
            "unit": extra.pop("unit", "u"),
            "scale_factor": extra.pop("scale_factor", 1.0),
            **extra,
        }
    )


ACM = "access-control-mode"
#: Every encoding and codec column, on two devices.
PARAMETERS = (
    param(DEVICE, ACM, "strike", None, "boolean", unit="state"),
    param(DEVICE, ACM, "strike", None, "number", unit="V", field="voltage", data_point="voltage", decimals=2),
    param(DEVICE, ACM, "strike", "2", "number", unit="A", field="current", data_point="current", scale_factor=1e300),
    param(DEVICE, ACM, "door-sensors", None, "boolean_map", unit="state", true_words=["ajar"], false_words=["shut"]),
    param(DEVICE, ACM, "reader", "1", "raw_string", unit="text"),
    param(DEVICE, ACM, "reader", "1", "number", unit="dBm", field="signal_strength", data_point="signal_strength"),
    param(DEVICE, ACM, "exit-buttons", None, "boolean", unit="pressed", true_words=["pushed"]),
    param(DEVICE, "alarm-mode", "siren", "1", "boolean", false_words=["silent"]),
    param(DEVICE, "alarm-mode", "motion-sensor", "1", "boolean", unit="presence"),
    param(DEVICE, "sensor-mode", "sensor", "3", "hex_to_float", unit="celsius", scale_factor=0.1),
    param(SENSOR_DEVICE, "sensor-mode", "sensor", None, "hex_to_float", data_point="t", data_type="float32"),
    param(SENSOR_DEVICE, "sensor-mode", "sensor", None, "hex_to_float", data_point="u", byte_offset=4,
          data_type="uint16", byte_order="little", decimals=1, scale_factor=0.1),
    param(SENSOR_DEVICE, "sensor-mode", "sensor", None, "hex_to_float", data_point="i", byte_offset=2,
          data_type="int32", word_order="little"),
    param(SENSOR_DEVICE, "sensor-mode", "sensor", "1", "hex_to_float", data_point="big", data_type="float32",
          scale_factor=1e300),
)  # fmt: skip
INDEX = ParameterIndex(PARAMETERS, {DEVICE: 3, SENSOR_DEVICE: 4})

TOPICS = [
    f"stat/{DEVICE}/{ACM}/1/strike-1",
    f"stat/{DEVICE}/{ACM}/1/strike-2",
    f"stat/{DEVICE}/{ACM}/1/door-sensors",
    f"tele/{DEVICE}/{ACM}/2/reader-1",
    f"stat/{DEVICE}/{ACM}/1/exit-buttons",
    f"stat/{DEVICE}/alarm-mode/3/siren-1",
    f"stat/{DEVICE}/alarm-mode/3/motion-sensor-1",
    f"cmnd/{DEVICE}/sensor-mode/4/sensor-3",
    f"cmnd/{SENSOR_DEVICE}/sensor-mode/1/sensor-1",
    f"cmnd/{SENSOR_DEVICE}/sensor-mode/2/sensor-7",
]
