"""Asterisk Manager Interface: the sans-I/O framer (:mod:`cti.ami.protocol`) and the
asyncio client that keeps one connection alive (:mod:`cti.ami.client`, one session in
:mod:`cti.ami.connection`).

A transport adapter: nothing here imports the call model or any other part of the core.
What the core consumes and how (``CallModelSink``, the events to ask for) lives in
:mod:`cti.calls`, and the composition root wires the two."""

from cti.ami.client import (
    AmiActionError,
    AmiAuthError,
    AmiClient,
    AmiClientStats,
    AmiConnectionLost,
    AmiError,
    AmiFilter,
    AmiNotConnected,
    AmiTimeout,
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
    "EventSink",
    "Message",
    "MessageKind",
    "ParserStats",
    "encode_action",
    "event_filter",
]
