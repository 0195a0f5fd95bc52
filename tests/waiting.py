"""Waiting on a condition with a deadline: the tests' only way to synchronise."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable


async def until(condition: Callable[[], object], within_s: float = 15.0, every_s: float = 0.02):
    """Return ``condition()`` (sync or async) once it is truthy; fail after ``within_s``.

    The default deadline is generous: it only bounds a test that would otherwise hang,
    and a loaded machine must not fail a test by it.

    Polling is deliberate: the conditions are other processes' states (a row written,
    a key in Redis) that offer no event to wait on.
    """
    async with asyncio.timeout(within_s):
        while True:
            value = condition()
            if inspect.isawaitable(value):
                value = await value
            if value:
                return value
            await asyncio.sleep(every_s)
