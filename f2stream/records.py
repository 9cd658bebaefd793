"""Records on the Kafka topics."""

from __future__ import annotations

from typing import Optional

import faust

__all__ = ["Measurement", "ParameterSet"]


class Measurement(faust.Record, serializer="json", include_metadata=False):
    """One decoded value: a row of `iot_measurements`, a record of `decoded_iot_data`.

    Times are ISO 8601 strings in UTC with microseconds, so that they survive
    JSON exactly and a re-delivered message yields the same primary key.
    """

    time: str
    device_id: str
    mode: str
    connector: int
    component: str
    data_point: str
    value: Optional[float]  # noqa: UP045  # faust reads these annotations at run time
    text_value: Optional[str]  # noqa: UP045
    unit: Optional[str]  # noqa: UP045
    source_topic: str
    received_at: str
    param_version: Optional[int] = None  # noqa: UP045


class ParameterSet(faust.Record, serializer="json", include_metadata=False):
    """A device's effective parameters at one version: a record of `device_parameters`.

    `parameters` holds rows as :meth:`f2stream.parameters.Parameter.as_row`
    writes them; an empty list means the device has no parameters any more.
    """

    device_id: str
    version: int
    parameters: list  # type: ignore[type-arg]  # faust cannot read list[dict[str, Any]]
