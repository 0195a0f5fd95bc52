"""Asterisk Manager Interface: the sans-I/O framer (:mod:`cti.ami.protocol`)."""

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
    "AmiParser",
    "Message",
    "MessageKind",
    "ParserStats",
    "encode_action",
]
