"""Who calls which number under load: the call mix of the demo data, for load generators.

``cti loadtest`` (real SIP calls through SIPp) and ``bench/route_bench.py`` (FastAGI
requests straight at the daemon) draw their callers here, so that both load the
daemon with the same kind of traffic: mostly known demo customers (``cti db
seed-demo`` gives customer N the phone ``+1212`` + N in 7 digits, which a trunk sends
in national form), some unknown numbers, some withheld ones and, for FastAGI,
some with no number at all.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass

WITHHELD = "anonymous"  # the number Asterisk reports for a withheld caller id
NO_NUMBER = "unknown"  # what it reports when the call came without one
UNKNOWN_PREFIX = "305"  # no demo customer has a 305 number


def demo_customer_number(index: int) -> str:
    """Demo customer ``index``'s phone in national form (``+1212`` + 7 digits)."""
    return f"212{index:07d}"


@dataclass(frozen=True, slots=True)
class Caller:
    number: str  # agi_callerid / the SIP From user
    name: str  # agi_calleridname


@dataclass(frozen=True, slots=True)
class CallMix:
    """Shares of the callers who are not known customers (the rest are), and the
    dialled numbers with their weights."""

    unknown_share: float
    withheld_share: float
    no_number_share: float = 0.0
    dialled: tuple[tuple[str, float], ...] = (("5550100", 1.0),)

    def __post_init__(self) -> None:
        shares = (self.unknown_share, self.withheld_share, self.no_number_share)
        if min(shares) < 0 or sum(shares) > 1:
            raise ValueError("caller shares must be >= 0 and add up to at most 1")
        if not self.dialled or min(weight for _, weight in self.dialled) <= 0:
            raise ValueError("at least one dialled number, every weight > 0")

    @property
    def known_share(self) -> float:
        return 1 - self.unknown_share - self.withheld_share - self.no_number_share

    def caller(self, rng: random.Random, customers: int) -> Caller:
        """A caller: a known demo customer 1..``customers``, or one of the others."""
        draw = rng.random()
        if draw < self.withheld_share:
            return Caller(WITHHELD, "Anonymous")
        draw -= self.withheld_share
        if draw < self.no_number_share:
            return Caller(NO_NUMBER, "unknown")
        draw -= self.no_number_share
        if draw < self.unknown_share:
            return Caller(f"{UNKNOWN_PREFIX}{rng.randrange(10**7):07d}", "unknown")
        return Caller(demo_customer_number(rng.randint(1, customers)), "unknown")

    def number_dialled(self, rng: random.Random) -> str:
        numbers = [number for number, _ in self.dialled]
        cumulative = list(itertools.accumulate(weight for _, weight in self.dialled))
        return rng.choices(numbers, cum_weights=cumulative)[0]
