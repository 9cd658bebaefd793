"""Payload codecs: JSON payloads, device timestamps, boolean words, Modbus RTU frames.

Pure functions: bytes and values in, typed values out; no I/O, no clock. Every
failure is a :class:`~f2stream.errors.BadMessage` with a reason.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, Final

import orjson

from f2stream.errors import BadMessage
from f2stream.records import format_time

__all__ = [
    "DEFAULT_FALSE_WORDS",
    "DEFAULT_TRUE_WORDS",
    "ModbusFrame",
    "check_field_name",
    "check_number",
    "check_text",
    "crc16_modbus",
    "device_time",
    "encode_modbus_frame",
    "parse_json_object",
    "parse_modbus_frame",
    "parse_timestamp",
    "to_boolean",
]

#: Words read as true by the boolean encodings (compared case-insensitively).
DEFAULT_TRUE_WORDS: Final = frozenset(
    {"true", "1", "on", "yes", "open", "opened", "locked", "active", "detected", "pressed", "alarm"}
)
#: Words read as false by the boolean encodings (compared case-insensitively).
DEFAULT_FALSE_WORDS: Final = frozenset(
    {"false", "0", "off", "no", "closed", "unlocked", "inactive", "idle", "clear", "released", "normal"}
)

_MODBUS_READ_FUNCTIONS: Final = frozenset({0x03, 0x04})
_MAX_TEXT: Final = 1024
_MAX_FIELD_NAME: Final = 64


def parse_json_object(payload: bytes) -> dict[str, Any]:
    """Parse a payload that must be a JSON object.

    Raises:
        BadMessage: `bad_json` when it is not JSON, `bad_payload` when it is not an object.
    """
    try:
        value = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise BadMessage("bad_json", f"payload is not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise BadMessage("bad_payload", f"payload is a JSON {type(value).__name__}, expected an object")
    return value


def parse_timestamp(value: object) -> datetime:
    """Parse a device timestamp into an aware UTC datetime.

    Accepts `YYYY-MM-DD HH:MM:SS[.ffffff]` (read as UTC) and ISO 8601 with a zone.

    Raises:
        BadMessage: `bad_timestamp`.
    """
    if not isinstance(value, str):
        raise BadMessage(
            "bad_timestamp", f"timestamp is {_kind(value)}, expected a string like 2025-01-31 12:00:00.000000"
        )
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise BadMessage("bad_timestamp", f"timestamp {value[:64]!r} is not YYYY-MM-DD HH:MM:SS.ffffff") from exc
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError as exc:
        raise BadMessage("bad_timestamp", f"timestamp {value[:64]!r} is outside the years 1 to 9999 in UTC") from exc


def device_time(value: object) -> str:
    """A device timestamp as the topics spell a time: `format_time(parse_timestamp(value))`, in less time.

    The spelling devices send, `YYYY-MM-DD HH:MM:SS.ffffff` (read as UTC), is
    parsed and formatted once per second it names; any other goes the long way.

    Raises:
        BadMessage: `bad_timestamp`.
    """
    if type(value) is str and len(value) == 26 and value[19] == "." and value.isascii():
        fraction = value[20:]
        if fraction.isdigit():
            second = _utc_second(value[:19])
            if second is not None:
                return f"{second}.{fraction}+00:00"
    return format_time(parse_timestamp(value))


@lru_cache(maxsize=4096)
def _utc_second(text: str) -> str | None:
    """`YYYY-MM-DDTHH:MM:SS` for a zoneless `YYYY-MM-DD HH:MM:SS` (or with a T); None for any other text."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    # Only the exact spelling of a naive time to the second: then text + ".ffffff" is that time plus the fraction.
    if moment.tzinfo is not None or moment.isoformat(sep=text[10]) != text:
        return None
    return moment.isoformat()


def to_boolean(
    value: object,
    true_words: frozenset[str] = DEFAULT_TRUE_WORDS,
    false_words: frozenset[str] = DEFAULT_FALSE_WORDS,
) -> bool:
    """Read a JSON value as a boolean: true/false, 1/0, or one of the words.

    Raises:
        BadMessage: `bad_value` for anything else.
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in true_words:
            return True
        if word in false_words:
            return False
    raise BadMessage("bad_value", f"{_show(value)} is not a boolean word (true words: {', '.join(sorted(true_words))})")


def check_text(value: object, field: str) -> str:
    """Return a value as text fit for the database (no NUL, at most 1024 characters).

    Raises:
        BadMessage: `bad_value`.
    """
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise BadMessage("bad_value", f"{field} is {_kind(value)}, expected a string")
    text = value if isinstance(value, str) else str(value)
    if "\x00" in text:
        raise BadMessage("bad_value", f"{field} contains a NUL character")
    if len(text) > _MAX_TEXT:
        raise BadMessage("bad_value", f"{field} is {len(text)} characters long, at most {_MAX_TEXT} are kept")
    return text


def check_field_name(name: str) -> str:
    """Return a payload field name fit to be a data point (1 to 64 characters, no NUL).

    Raises:
        BadMessage: `bad_value`.
    """
    if not 0 < len(name) <= _MAX_FIELD_NAME or "\x00" in name:
        raise BadMessage("bad_value", f"field name {name[:64]!r} must be 1 to {_MAX_FIELD_NAME} characters without NUL")
    return name


def check_number(value: object, field: str) -> float:
    """Return a JSON number as a finite float.

    Raises:
        BadMessage: `bad_value` for non-numbers, NaN and infinities.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadMessage("bad_value", f"{field} is {_kind(value)}, expected a number")
    number = float(value)
    if not math.isfinite(number):
        raise BadMessage("bad_value", f"{field} is {number}, expected a finite number")
    return number


@dataclass(frozen=True, slots=True)
class ModbusFrame:
    """A Modbus RTU read response whose CRC checked out."""

    address: int
    function: int
    data: bytes

    def value(self, offset: int, data_type: str, byte_order: str = "big", word_order: str = "big") -> float:
        """Read a number from the data bytes at a byte offset.

        Args:
            offset: where the value starts in the data (after the byte count).
            data_type: int16, uint16, int32, uint32 or float32.
            byte_order: order of the two bytes inside each 16-bit word (Modbus: big).
            word_order: order of the two words of a 32-bit value (big: high word first).

        Raises:
            BadMessage: `bad_frame` when the frame is too short; `bad_value` for a NaN or infinite float32.
        """
        size = 2 if data_type in ("int16", "uint16") else 4
        chunk = self.data[offset : offset + size]
        if offset < 0 or len(chunk) < size:
            raise BadMessage(
                "bad_frame", f"{data_type} at byte {offset} needs {size} bytes, the frame holds {len(self.data)}"
            )
        words = [chunk[i : i + 2] for i in range(0, size, 2)]
        if byte_order == "little":
            words = [w[::-1] for w in words]
        if word_order == "little":
            words.reverse()
        raw = b"".join(words)
        if data_type == "float32":
            number: float = struct.unpack(">f", raw)[0]
            if not math.isfinite(number):
                raise BadMessage("bad_value", f"float32 at byte {offset} is {number}, expected a finite number")
            return number
        return int.from_bytes(raw, "big", signed=not data_type.startswith("u"))

    def register(self, index: int) -> int:
        """Return register `index` (0-based) as a signed 16-bit big-endian integer.

        Raises:
            BadMessage: `bad_frame` when the frame has no such register.
        """
        start = 2 * index
        if start + 2 > len(self.data):
            raise BadMessage("bad_frame", f"frame holds {len(self.data) // 2} registers, register {index} asked for")
        return int.from_bytes(self.data[start : start + 2], "big", signed=True)


def _crc_table() -> tuple[int, ...]:
    """What the eight shift-and-xor steps of CRC-16/MODBUS make of each byte value."""
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC_TABLE: Final = _crc_table()


def crc16_modbus(data: bytes) -> int:
    """CRC-16/MODBUS (poly 0xA001 reflected, init 0xFFFF), a byte at a time by table."""
    crc = 0xFFFF
    for byte in data:
        crc = (crc >> 8) ^ _CRC_TABLE[(crc ^ byte) & 0xFF]
    return crc


def parse_modbus_frame(text: object) -> ModbusFrame:
    """Parse a hex string holding a Modbus RTU read response (function 03 or 04).

    Layout: address, function, byte count N, N data bytes, CRC low byte, CRC high byte.
    Spaces between bytes are optional.

    Raises:
        BadMessage: `bad_frame` for bad hex, length or function; `bad_crc` for a CRC mismatch.
    """
    if not isinstance(text, str):
        raise BadMessage("bad_frame", f"data is {_kind(text)}, expected hex bytes like '01 03 02 00 EB F8 0B'")
    try:
        raw = bytes.fromhex(text)
    except ValueError as exc:
        raise BadMessage("bad_frame", f"data {text[:64]!r} is not hex bytes") from exc
    if len(raw) < 5:
        raise BadMessage("bad_frame", f"frame is {len(raw)} bytes, a read response has at least 5")
    address, function, count = raw[0], raw[1], raw[2]
    if function not in _MODBUS_READ_FUNCTIONS:
        raise BadMessage("bad_frame", f"function {function:#04x} is not a register read (0x03 or 0x04)")
    if len(raw) != count + 5:
        raise BadMessage(
            "bad_frame",
            f"byte count says {count} data bytes, so {count + 5} bytes in all, but the frame has {len(raw)}",
        )
    if count % 2:
        raise BadMessage("bad_frame", f"byte count {count} is odd; registers are 2 bytes each")
    expected = crc16_modbus(raw[:-2])
    received = raw[-2] | raw[-1] << 8
    if expected != received:
        raise BadMessage("bad_crc", f"CRC is {received:#06x}, computed {expected:#06x}")
    return ModbusFrame(address=address, function=function, data=raw[3:-2])


def encode_modbus_frame(address: int, function: int, data: bytes) -> str:
    """Build the hex text of a read response with a valid CRC (the inverse of :func:`parse_modbus_frame`)."""
    body = bytes([address, function, len(data)]) + data
    crc = crc16_modbus(body)
    return (body + bytes([crc & 0xFF, crc >> 8])).hex(" ").upper()


def _kind(value: object) -> str:
    return "null" if value is None else f"a {type(value).__name__}"


def _show(value: object) -> str:
    return repr(value)[:64]
