"""The call data every service serves: the store, its history writer, the service that
edits it and tells the agents on the call, and ends the editor's wrap-up when they save
a disposition (one wiring for ``cti serve`` and ``cti screenpop``)."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg
import redis.asyncio as redis

from cti.agents.store import AgentStore
from cti.app.supervisor import Supervisor
from cti.batch_writer import BatchWriter, DeadLetterSink
from cti.calldata.history import HistoryRecord, history_batch_writer
from cti.calldata.service import CallDataService
from cti.calldata.store import CallDataStore
from cti.calls.publisher import EventPublisher
from cti.config import Config


@dataclass(frozen=True, slots=True)
class CallData:
    store: CallDataStore
    history: BatchWriter[HistoryRecord]
    #: Publishes call events; fenced by the AMI lease for the followed calls' events,
    #: unfenced for edits of call data.
    events: EventPublisher
    service: CallDataService


def open_call_data(
    supervisor: Supervisor,
    config: Config,
    *,
    pool: asyncpg.Pool,
    redis_client: redis.Redis,
    dead_letters: DeadLetterSink | None,
) -> CallData:
    history: BatchWriter[HistoryRecord] = BatchWriter(
        "call-data-history", history_batch_writer(pool), dead_letters=dead_letters
    )
    supervisor.writer("call-data-history-writer", history.run)
    store = CallDataStore(redis_client, config.call_data_ttl_s, pool=pool, history=history)
    events = EventPublisher(
        redis_client, ttl_s=config.call_data_ttl_s, retention_s=config.stream_retention_s
    )
    # Saving a disposition ends the agent's wrap-up (the AMI leader acts on it).
    agents = AgentStore(redis_client)
    service = CallDataService(store, events, on_disposition=[agents.disposition_saved])
    return CallData(store, history, events, service)
