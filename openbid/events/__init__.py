"""Events: the schema every part of openbid logs to, the durable writer and the reader."""

from openbid.events.errors import EventLogError
from openbid.events.reader import EventReader
from openbid.events.schema import (
    EVENT_TYPES,
    SCHEMA_VERSION,
    AuctionEvent,
    BidEvent,
    ClickEvent,
    ConversionEvent,
    Event,
    ImpressionEvent,
    NoticeEvent,
    arrow_schema,
    now_micros,
)
from openbid.events.writer import EventLog

__all__ = [
    "EVENT_TYPES",
    "SCHEMA_VERSION",
    "AuctionEvent",
    "BidEvent",
    "ClickEvent",
    "ConversionEvent",
    "Event",
    "EventLog",
    "EventLogError",
    "EventReader",
    "ImpressionEvent",
    "NoticeEvent",
    "arrow_schema",
    "now_micros",
]
