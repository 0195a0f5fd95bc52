"""The plain data the routing decision works on.

Everything here is immutable and free of I/O, so the rule engine can be driven
exhaustively by unit tests and property tests.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from zoneinfo import ZoneInfo

from cti.routing.hours import OpeningHours, TimeWindow
from cti.routing.phone import CallerNumber

TIERS = ("platinum", "gold", "silver", "bronze")
STATUSES = ("active", "delinquent", "suspended", "closed")
UNKNOWN_TIER = "unknown"
#: A customer's account number, as stored (cti/db/migrations/001_routing.sql checks the same).
ACCOUNT_NUMBER = re.compile(r"^[A-Za-z0-9-]{1,32}\Z")


class RouteKind(StrEnum):
    QUEUE = "queue"
    SELFSERVICE = "selfservice"
    AFTERHOURS = "afterhours"


@dataclass(frozen=True, slots=True)
class Customer:
    id: int
    account_number: str
    name: str
    tier: str
    status: str
    language: str


@dataclass(frozen=True, slots=True)
class DialledNumber:
    """A number callers dial (DNIS) and the line of business behind it."""

    dnis: str
    service: str
    default_queue: str
    timezone: ZoneInfo
    hours: OpeningHours | None  # None: always open

    def is_open(self, now: datetime) -> bool:
        return self.hours is None or self.hours.is_open(now.astimezone(self.timezone))


@dataclass(frozen=True, slots=True)
class Match:
    """The conditions of a rule; ``None`` means "any"."""

    services: frozenset[str] | None = None
    tiers: frozenset[str] | None = None
    statuses: frozenset[str] | None = None
    languages: frozenset[str] | None = None
    intents: frozenset[str] | None = None
    known: bool | None = None
    open: bool | None = None
    days: frozenset[int] | None = None  # 0 = Monday, in the number's time zone
    time: TimeWindow | None = None  # in the number's time zone


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    match: Match
    route: RouteKind
    queue: str | None = None  # None: the dialled number's default queue
    priority: int = 0
    enabled: bool = True


@dataclass(frozen=True, slots=True)
class CallFacts:
    """What we know about a call when Asterisk asks where it should go."""

    caller: CallerNumber
    dnis: str
    number: DialledNumber | None
    customer: Customer | None
    now: datetime  # timezone-aware
    ivr: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Decision:
    route: RouteKind
    queue: str | None
    priority: int
    rule: str
    tier: str
    customer_id: int | None
    service: str | None
