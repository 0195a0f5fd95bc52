"""Asterisk Manager Interface: the sans-I/O framer (:mod:`cti.ami.protocol`) and the
asyncio client that keeps one connection alive (:mod:`cti.ami.client`)."""

from cti.ami.client import (
    CALL_CENTRE_EVENTS,
    DEFAULT_FILTERS,
    AmiActionError,
    AmiAuthError,
    AmiClient,
    AmiClientStats,
    AmiConnectionLost,
    AmiError,
    AmiFilter,
    AmiNotConnected,
    AmiTimeout,
    CallModelSink,
    EventSink,
    event_filter,
)
from cti.ami.protocol import (
    ActionEncodingError,
    ActionIdGenerator,
    AmiParser,
    Message,
    MessageKind,
    ParserStats,
    encode_action,
)

__all__ = [
    "CALL_CENTRE_EVENTS",
    "DEFAULT_FILTERS",
    "ActionEncodingError",
    "ActionIdGenerator",
    "AmiActionError",
    "AmiAuthError",
    "AmiClient",
    "AmiClientStats",
    "AmiConnectionLost",
    "AmiError",
    "AmiFilter",
    "AmiNotConnected",
    "AmiParser",
    "AmiTimeout",
    "CallModelSink",
    "EventSink",
    "Message",
    "MessageKind",
    "ParserStats",
    "encode_action",
    "event_filter",
]
