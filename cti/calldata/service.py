"""Reading and editing a call's data, as agents do: the store plus the news of it.

Every accepted edit is announced as a ``data_changed`` event to everyone who has had
the call (cti.calls.publisher), so the other sidebars on the call refresh. Any daemon
instance may do this (no AMI lease needed): the event's fingerprint is its version, so
it is published once however often it is retried.

An edit that sets the call's disposition is also told to each ``on_disposition``
hook (``(agent device, call id)``, after it is saved): the agent's wrap-up ends on it
(cti.agents, wired in cti/app/calldata.py). A hook that fails is logged; the edit stands.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import structlog
from redis.exceptions import RedisError

from cti.calldata.document import CallDocument
from cti.calldata.store import CallDataStore
from cti.calls.events import data_changed
from cti.calls.publisher import EventPublisher

log = structlog.get_logger(__name__)

#: ``(agent device, call id)``: the agent saved the call's disposition.
DispositionHook = Callable[[str, str], Awaitable[object]]


class CallDataService:
    def __init__(
        self,
        store: CallDataStore,
        publisher: EventPublisher,
        on_disposition: Sequence[DispositionHook] = (),
    ) -> None:
        self.store = store
        self._publisher = publisher
        self._on_disposition = tuple(on_disposition)

    async def get(self, call_id: str) -> CallDocument | None:
        return await self.store.get(call_id)

    async def update(
        self,
        call_id: str,
        if_version: int,
        change: Mapping[str, Any],
        by: str,
        *,
        agent: str | None = None,
    ) -> CallDocument:
        """Store the edit (errors as :meth:`CallDataStore.update`), then announce it.
        ``agent``: the editor's device, for the disposition hooks.

        The edit is saved before it is announced; if the announcement fails the edit
        still stands (the other sidebars see it on their next read)."""
        document = await self.store.update(call_id, if_version, change, by)
        event = data_changed(
            document["call_id"], document.get("uniqueid", ""), document["version"], by, time.time()
        )
        try:
            await self._publisher.publish_many([event], owner="")
        except (RedisError, OSError) as exc:
            log.warning(
                "call data saved but its change not announced", call_id=call_id, error=repr(exc)
            )
        if agent is not None and change.get("disposition"):
            for hook in self._on_disposition:
                try:
                    await hook(agent, document["call_id"])
                except (RedisError, OSError) as exc:
                    log.warning("disposition hook failed", call_id=call_id, error=repr(exc))
        return document
