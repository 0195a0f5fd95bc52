"""The routing plan the tests run on: queues ``support`` and ``sales`` and the pause
reasons ``lunch`` (unproductive, at most 60 minutes) and ``training`` (productive).
A test that needs more (queue timers, say) builds its text from these pieces."""

from __future__ import annotations

from cti.routing.plan import loads
from cti.routing.table import RoutingTable

QUEUES_TEXT = """
[[queues]]
name = "support"
[[queues]]
name = "sales"
"""

PAUSE_REASONS_TEXT = """
[[pause_reasons]]
name = "lunch"
max_minutes = 60
[[pause_reasons]]
name = "training"
productive = true
"""

PLAN_TEXT = QUEUES_TEXT + PAUSE_REASONS_TEXT

#: The plan as the back end routes on it.
PLAN = RoutingTable.from_plan(loads(PLAN_TEXT))
