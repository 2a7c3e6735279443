"""Domain types shared by the services, and their conversion to and from protobuf.

Business logic works on these; generated protobuf classes stay at each service's edge.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from geomesh.v1 import types_pb2


@dataclass(frozen=True, slots=True)
class BBox:
    """WGS84 degrees, CRS84 axis order."""

    west: float
    south: float
    east: float
    north: float

    def intersects(self, other: BBox) -> bool:
        return (
            self.west <= other.east and other.west <= self.east and self.south <= other.north and other.south <= self.north
        )

    @classmethod
    def from_proto(cls, message: types_pb2.BBox) -> BBox:
        return cls(message.west, message.south, message.east, message.north)

    def to_proto(self) -> types_pb2.BBox:
        return types_pb2.BBox(west=self.west, south=self.south, east=self.east, north=self.north)


@dataclass(frozen=True, slots=True)
class TimeRange:
    """A time interval; None is an open end."""

    start: datetime | None = None
    end: datetime | None = None

    def intersects(self, other: TimeRange) -> bool:
        return (self.start is None or other.end is None or self.start <= other.end) and (
            self.end is None or other.start is None or other.start <= self.end
        )

    @classmethod
    def from_proto(cls, message: types_pb2.TimeRange) -> TimeRange:
        start = message.start.ToDatetime(tzinfo=UTC) if message.HasField("start") else None
        end = message.end.ToDatetime(tzinfo=UTC) if message.HasField("end") else None
        return cls(start, end)

    def to_proto(self) -> types_pb2.TimeRange:
        message = types_pb2.TimeRange()
        if self.start is not None:
            message.start.FromDatetime(self.start)
        if self.end is not None:
            message.end.FromDatetime(self.end)
        return message


def optional_bbox(message: object, field: str = "bbox") -> BBox | None:
    """The bbox field of a request message, or None when it is not set."""
    return BBox.from_proto(getattr(message, field)) if message.HasField(field) else None  # type: ignore[attr-defined]


def optional_time(message: object, field: str = "temporal") -> TimeRange | None:
    """The time range field of a request message, or None when it is not set."""
    return TimeRange.from_proto(getattr(message, field)) if message.HasField(field) else None  # type: ignore[attr-defined]


def parse_datetime(text: str) -> datetime:
    """RFC 3339 / ISO 8601 text to an aware UTC datetime (naive input is taken as UTC)."""
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
