"""f2stream.devices.parameter_file.parse_parameter_file: CSV and JSON parameter files, all or nothing."""

from __future__ import annotations

import orjson
import pytest

from f2stream.codec.model import Parameter
from f2stream.devices.parameter_file import ParameterFileError, parse_parameter_file

DEVICE = "f2-e4fd45f654be"
HEADER = "device_id,mode,component_type,component_number,encoding,unit,scale_factor"
FULL_HEADER = (
    "device_id,mode,component_type,component_number,encoding,unit,scale_factor,data_point,field,byte_offset,"
    "data_type,byte_order,word_order,decimals,true_words,false_words"
)
STRIKE_ROW = "e4fd45f654be,access-control-mode,strike,1,boolean,state,1"


def csv(*lines: str) -> bytes:
    return ("\n".join(lines) + "\n").encode()


def error_of(name: str, content: bytes) -> str:
    with pytest.raises(ParameterFileError) as caught:
        parse_parameter_file(name, content)
    return str(caught.value)


# --- CSV --------------------------------------------------------------------------------------------------------


def test_csv_seed_columns() -> None:
    content = csv(
        HEADER,
        "e4:fd:45:f6:54:be,access-control-mode,door-sensors,,boolean_map,state,1.0",
        "E4-FD-45-F6-54-BE,sensor-mode,sensor,3,hex_to_float,celsius,0.1",
        "e4fd.45f6.54be,access-control-mode,reader,1,raw_string,text,",
    )
    assert parse_parameter_file("seed.csv", content) == [
        Parameter(DEVICE, "access-control-mode", "door-sensors", None, "boolean_map", "state", 1.0),
        Parameter(DEVICE, "sensor-mode", "sensor", "3", "hex_to_float", "celsius", 0.1),
        Parameter(DEVICE, "access-control-mode", "reader", "1", "raw_string", "text", 1.0),
    ]


def test_csv_all_columns() -> None:
    content = csv(
        FULL_HEADER,
        "F2-E4FD45F654BE,access-control-mode,strike,1,boolean,state,,,,,,,,,Engaged|ON,free",
        "f2-e4fd45f654be,access-control-mode,strike,1,number,V,0.001,voltage,u_in,,,,,2,,",
        "e4fd45f654be,sensor-mode,sensor,3,hex_to_float,celsius,0.1,temperature,,4,float32,little,little,1,,",
    )
    assert parse_parameter_file("device.csv", content) == [
        Parameter(
            DEVICE, "access-control-mode", "strike", "1", "boolean", "state", 1.0,
            true_words=frozenset({"engaged", "on"}), false_words=frozenset({"free"}),
        ),
        Parameter(
            DEVICE, "access-control-mode", "strike", "1", "number", "V", 0.001,
            data_point="voltage", field="u_in", decimals=2,
        ),
        Parameter(
            DEVICE, "sensor-mode", "sensor", "3", "hex_to_float", "celsius", 0.1,
            data_point="temperature", byte_offset=4, data_type="float32", byte_order="little", word_order="little",
            decimals=1,
        ),
    ]  # fmt: skip


def test_csv_empty_cells_are_null() -> None:
    (parameter,) = parse_parameter_file("p.csv", csv(FULL_HEADER, f"{STRIKE_ROW},,,,,,,,,"))
    assert parameter == Parameter(DEVICE, "access-control-mode", "strike", "1", "boolean", "state", 1.0)
    assert parameter.data_point is None
    assert parameter.true_words is None
    assert parameter.false_words is None


def test_csv_word_lists() -> None:
    header = HEADER + ",true_words,false_words"
    (parameter,) = parse_parameter_file("p.csv", csv(header, f"{STRIKE_ROW},engaged|| Held ,free"))
    assert parameter.true_words == frozenset({"engaged", "held"})
    assert parameter.false_words == frozenset({"free"})


def test_csv_with_a_byte_order_mark_and_crlf() -> None:
    content = ("\ufeff" + HEADER + "\r\n" + STRIKE_ROW + "\r\n").encode()
    assert parse_parameter_file("p.csv", content) == [
        Parameter(DEVICE, "access-control-mode", "strike", "1", "boolean", "state", 1.0)
    ]


@pytest.mark.parametrize(
    "spelling",
    [
        "e4:fd:45:f6:54:be",
        "E4:FD:45:F6:54:BE",
        "e4-fd-45-f6-54-be",
        "e4fd.45f6.54be",
        "E4FD45F654BE",
        "f2-e4fd45f654be",
    ],
)
def test_csv_any_mac_spelling_becomes_the_canonical_id(spelling: str) -> None:
    row = STRIKE_ROW.replace("e4fd45f654be", spelling)
    assert [p.device_id for p in parse_parameter_file("p.csv", csv(HEADER, row))] == [DEVICE]


# --- JSON -------------------------------------------------------------------------------------------------------


def test_json_list_of_objects() -> None:
    rows = [
        {
            "device_id": "E4:FD:45:F6:54:BE",
            "mode": "access-control-mode",
            "component_type": "strike",
            "component_number": 1,
            "encoding": "boolean",
            "unit": "state",
            "scale_factor": 1,
            "true_words": ["Engaged"],
            "false_words": ["free"],
        },
        {
            "device_id": "e4fd45f654be",
            "mode": "sensor-mode",
            "component_type": "sensor",
            "component_number": None,
            "encoding": "hex_to_float",
            "unit": "celsius",
            "scale_factor": 0.1,
            "data_point": "temperature",
            "byte_offset": 2,
            "data_type": "int16",
            "decimals": 1,
        },
        {"device_id": "f2-02f200000001", "mode": "alarm-mode", "component_type": "siren", "encoding": "boolean"},
    ]
    assert parse_parameter_file("p.json", orjson.dumps(rows)) == [
        Parameter(
            DEVICE, "access-control-mode", "strike", "1", "boolean", "state", 1.0,
            true_words=frozenset({"engaged"}), false_words=frozenset({"free"}),
        ),
        Parameter(
            DEVICE, "sensor-mode", "sensor", None, "hex_to_float", "celsius", 0.1,
            data_point="temperature", byte_offset=2, data_type="int16", decimals=1,
        ),
        Parameter("f2-02f200000001", "alarm-mode", "siren", None, "boolean", None, 1.0),
    ]  # fmt: skip


def test_json_round_trips_as_row() -> None:
    parameter = Parameter(
        DEVICE, "sensor-mode", "sensor", "3", "hex_to_float", "celsius", 0.1,
        data_point="t", byte_offset=0, data_type="uint32", byte_order="big", word_order="little", decimals=2,
        true_words=frozenset({"a"}), false_words=frozenset({"b"}),
    )  # fmt: skip
    assert parse_parameter_file("p.json", orjson.dumps([parameter.as_row()])) == [parameter]


def test_the_same_key_on_two_devices_is_fine() -> None:
    content = csv(HEADER, STRIKE_ROW, STRIKE_ROW.replace("e4fd45f654be", "02f200000001"))
    assert [p.device_id for p in parse_parameter_file("p.csv", content)] == [DEVICE, "f2-02f200000001"]


def test_different_data_points_of_one_component_are_fine() -> None:
    header = HEADER + ",data_point,field"
    content = csv(header, f"{STRIKE_ROW},,", f"{STRIKE_ROW},voltage,voltage", f"{STRIKE_ROW},current,current")
    assert [p.data_point for p in parse_parameter_file("p.csv", content)] == [None, "voltage", "current"]


# --- bad files: nothing is loaded -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "where", "what"),
    [
        pytest.param(csv(HEADER + ",colour", STRIKE_ROW + ",red"), "line 2", "unknown column 'colour'", id="unknown"),
        pytest.param(csv(HEADER, STRIKE_ROW, STRIKE_ROW + ",extra"), "line 3", "unknown column", id="extra-cell"),
        pytest.param(
            csv("mode,component_type,encoding", "access-control-mode,strike,boolean"),
            "line 2",
            "column 'device_id' is missing",
            id="missing-device-id",
        ),
        pytest.param(
            csv("device_id,component_type,encoding", "e4fd45f654be,strike,boolean"), "line 2", "mode", id="no-mode"
        ),
        pytest.param(
            csv("device_id,mode,component_type", "e4fd45f654be,access-control-mode,strike"),
            "line 2",
            "encoding",
            id="no-encoding",
        ),
        pytest.param(
            csv(HEADER, STRIKE_ROW, STRIKE_ROW.replace("boolean", "float").replace(",1,", ",2,")),
            "line 3",
            "encoding 'float' is not one of boolean, boolean_map, hex_to_float, number, raw_string",
            id="bad-encoding",
        ),
        pytest.param(
            csv(HEADER, STRIKE_ROW.replace("access-control-mode", "door-mode")),
            "line 2",
            "mode 'door-mode' is not one of access-control-mode, alarm-mode, sensor-mode",
            id="bad-mode",
        ),
        pytest.param(
            csv(HEADER, STRIKE_ROW.replace("strike", "lock")), "line 2", "component type 'lock'", id="bad-component"
        ),
        pytest.param(
            csv(HEADER + ",data_type", STRIKE_ROW + ",int64"),
            "line 2",
            "data type 'int64' is not one of float32, int16, int32, uint16, uint32",
            id="bad-data-type",
        ),
        pytest.param(
            csv(HEADER + ",byte_order", STRIKE_ROW + ",middle"), "line 2", "byte order 'middle'", id="bad-byte-order"
        ),
        pytest.param(
            csv(HEADER + ",word_order", STRIKE_ROW + ",BIG"), "line 2", "word order 'BIG'", id="bad-word-order"
        ),
        pytest.param(
            csv(HEADER, STRIKE_ROW, STRIKE_ROW.replace("e4fd45f654be", "e4:fd:45:f6:54")),
            "line 3",
            "'e4:fd:45:f6:54' is not a MAC address",
            id="bad-mac",
        ),
        pytest.param(
            csv(HEADER, STRIKE_ROW.replace("e4fd45f654be", "")),
            "line 2",
            "column 'device_id' is missing or empty",
            id="no-mac",
        ),
        pytest.param(
            csv(HEADER, STRIKE_ROW.replace("state,1", "state,ten")), "line 2", "could not convert", id="bad-scale"
        ),
        pytest.param(
            csv(HEADER + ",byte_offset", STRIKE_ROW + ",two"),
            "line 2",
            "byte_offset 'two' is not a whole number",
            id="bad-offset",
        ),
        pytest.param(
            csv(HEADER + ",decimals", STRIKE_ROW + ",1.5"),
            "line 2",
            "decimals '1.5' is not a whole number",
            id="bad-decimals",
        ),
    ],
)
def test_bad_csv_rows_name_the_line(content: bytes, where: str, what: str) -> None:
    message = error_of("params.csv", content)
    assert message.startswith(f"params.csv {where}: ")
    assert what in message
    assert message.endswith("; nothing was loaded")


@pytest.mark.parametrize(
    ("rows", "where", "what"),
    [
        pytest.param(
            [{"device_id": DEVICE, "mode": "alarm-mode", "component_type": "siren", "encoding": "boolean", "x": 1}],
            "item 1",
            "unknown column 'x'",
            id="unknown",
        ),
        pytest.param(
            [
                {"device_id": DEVICE, "mode": "alarm-mode", "component_type": "siren", "encoding": "boolean"},
                {"mode": "alarm-mode", "component_type": "siren", "encoding": "boolean"},
            ],
            "item 2",
            "column 'device_id' is missing",
            id="missing-device-id",
        ),
        pytest.param(
            [{"device_id": DEVICE, "mode": "alarm-mode", "component_type": "siren", "encoding": "bool"}],
            "item 1",
            "encoding 'bool'",
            id="bad-encoding",
        ),
        pytest.param(
            [{"device_id": DEVICE, "mode": "alarm", "component_type": "siren", "encoding": "boolean"}],
            "item 1",
            "mode 'alarm'",
            id="bad-mode",
        ),
        pytest.param(
            [
                {"device_id": DEVICE, "mode": "alarm-mode", "component_type": "siren", "encoding": "boolean"},
                {"device_id": DEVICE, "mode": "sensor-mode", "component_type": "sensor", "encoding": "hex_to_float"}
                | {"data_type": "double"},
            ],
            "item 2",
            "data type 'double'",
            id="bad-data-type",
        ),
        pytest.param(
            [{"device_id": "gateway", "mode": "alarm-mode", "component_type": "siren", "encoding": "boolean"}],
            "item 1",
            "'gateway' is not a MAC address",
            id="bad-mac",
        ),
        pytest.param(
            [
                {"device_id": DEVICE, "mode": "alarm-mode", "component_type": "siren", "encoding": "boolean"},
                {"device_id": DEVICE, "mode": "alarm-mode", "component_type": "strike", "encoding": "boolean"},
                {"device_id": DEVICE, "mode": "alarm-mode", "component_type": "reader", "encoding": "boolean"}
                | {"true_words": 5},
            ],
            "item 3",
            "not iterable",
            id="words-not-a-list",
        ),
    ],
)
def test_bad_json_items_name_the_item(rows: list[dict[str, object]], where: str, what: str) -> None:
    message = error_of("params.json", orjson.dumps(rows))
    assert message.startswith(f"params.json {where}: ")
    assert what in message
    assert message.endswith("; nothing was loaded")


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        pytest.param("p.csv", b"", "p.csv holds no rows; nothing was loaded", id="empty-csv"),
        pytest.param("p.csv", csv(HEADER), "p.csv holds no rows; nothing was loaded", id="header-only"),
        pytest.param("p.json", b"[]", "p.json holds no rows; nothing was loaded", id="empty-json-list"),
        pytest.param(
            "p.json",
            b"{}",
            "p.json must hold a JSON list of objects, one per row; nothing was loaded",
            id="json-object",
        ),
        pytest.param(
            "p.json",
            b"[1, 2]",
            "p.json must hold a JSON list of objects, one per row; nothing was loaded",
            id="json-numbers",
        ),
        pytest.param(
            "p.txt", csv(HEADER, STRIKE_ROW), "p.txt: give a .csv or .json file; nothing was loaded", id="txt"
        ),
        pytest.param(
            "p", csv(HEADER, STRIKE_ROW), "p: give a .csv or .json file; nothing was loaded", id="no-extension"
        ),
        pytest.param(
            "p.csv.bak",
            csv(HEADER, STRIKE_ROW),
            "p.csv.bak: give a .csv or .json file; nothing was loaded",
            id="backup",
        ),
    ],
)
def test_bad_files(name: str, content: bytes, message: str) -> None:
    assert error_of(name, content) == message


@pytest.mark.parametrize("content", [b"", b"{", b"device_id,mode\n", b"[{'a': 1}]"])
def test_not_json(content: bytes) -> None:
    message = error_of("p.json", content)
    assert message.startswith("p.json is not JSON (") and message.endswith("; nothing was loaded")


def test_duplicate_rows_are_refused() -> None:
    content = csv(HEADER, STRIKE_ROW, STRIKE_ROW.replace("e4fd45f654be", "E4:FD:45:F6:54:BE").replace(",1\n", ",2\n"))
    assert (
        error_of("p.csv", content)
        == "p.csv line 3: same device, component and data point as line 2; nothing was loaded"
    )


def test_duplicate_json_items_are_refused() -> None:
    row = {"device_id": DEVICE, "mode": "alarm-mode", "component_type": "siren", "encoding": "boolean"}
    content = orjson.dumps([row, row | {"device_id": "e4fd45f654be", "unit": "state"}])
    assert (
        error_of("p.json", content)
        == "p.json item 2: same device, component and data point as item 1; nothing was loaded"
    )


def test_the_first_bad_row_is_reported() -> None:
    content = csv(HEADER, STRIKE_ROW, STRIKE_ROW.replace("strike", "lock"), STRIKE_ROW.replace("boolean", "bool"))
    assert error_of("p.csv", content).startswith("p.csv line 3: component type 'lock'")


def test_duplicate_rows_name_the_line() -> None:
    content = csv(HEADER, STRIKE_ROW, STRIKE_ROW.replace("e4fd45f654be", "E4:FD:45:F6:54:BE"))
    assert "line 3" in error_of("p.csv", content)


def test_a_csv_that_is_not_utf8_is_a_parameter_file_error() -> None:
    content = (HEADER + "\n" + STRIKE_ROW.replace("state", "°C") + "\n").encode("latin-1")
    message = error_of("p.csv", content)
    assert "nothing was loaded" in message


@pytest.mark.parametrize(
    ("name", "content"), [("p.json", b"{"), ("p.json", b"{}"), ("p.json", b"[1]"), ("p.txt", b"a")]
)
def test_file_level_errors_say_nothing_was_loaded(name: str, content: bytes) -> None:
    assert "nothing was loaded" in error_of(name, content)


@pytest.mark.parametrize("scale", ["nan", "inf", "-inf"])
def test_a_non_finite_scale_is_refused(scale: str) -> None:
    message = error_of("p.csv", csv(HEADER, STRIKE_ROW.replace("state,1", f"state,{scale}")))
    assert message.startswith("p.csv line 2: ")


@pytest.mark.parametrize("offset", [-2, 1.5])
def test_a_byte_offset_must_be_a_whole_non_negative_number(offset: float) -> None:
    row = {
        "device_id": DEVICE,
        "mode": "sensor-mode",
        "component_type": "sensor",
        "encoding": "hex_to_float",
        "byte_offset": offset,
    }
    assert error_of("p.json", orjson.dumps([row])).startswith("p.json item 1: ")
