"""Call-attached data in Redis, one JSON document per call id.

The route creates the document; later stages (AMI tracking, agents' edits) change it
under a version check. Creation uses SET NX so that a retried write after a Redis
hiccup never overwrites what an agent has since added.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import redis.asyncio as redis

KEY_PREFIX = "cti:call:"


def call_key(call_id: str) -> str:
    return f"{KEY_PREFIX}{call_id}"


class CallDataStore:
    def __init__(self, client: redis.Redis, ttl_s: int) -> None:
        self._redis = client
        self._ttl_s = ttl_s

    async def create_many(self, documents: Sequence[Mapping[str, Any]]) -> None:
        """Create each document (keyed by its ``call_id``) unless it already exists."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for doc in documents:
                pipe.set(call_key(doc["call_id"]), json.dumps(doc), nx=True, ex=self._ttl_s)
            await pipe.execute()

    async def get(self, call_id: str) -> dict[str, Any] | None:
        raw = await self._redis.get(call_key(call_id))
        return None if raw is None else json.loads(raw)
