"""Capped exponential backoff with jitter, for every reconnect loop in the daemon.

Jitter (±20 %) keeps many daemons from reconnecting in lock-step after a shared
outage; the cap keeps recovery quick once the peer is back.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field


@dataclass(slots=True)
class Backoff:
    initial: float = 0.5
    cap: float = 30.0
    jitter: float = 0.2
    _next: float = field(init=False, default=0.0)
    _random: random.Random = field(default_factory=random.Random, repr=False)

    def __post_init__(self) -> None:
        self._next = self.initial

    def reset(self) -> None:
        self._next = self.initial

    def next_delay(self) -> float:
        delay = self._next * (1 + self._random.uniform(-self.jitter, self.jitter))
        self._next = min(self._next * 2, self.cap)
        return delay

    async def wait(self, stop: asyncio.Event) -> bool:
        """Sleep for the next delay, cut short by ``stop``. True if we should go on."""
        try:
            await asyncio.wait_for(stop.wait(), self.next_delay())
        except TimeoutError:
            return True
        return False
