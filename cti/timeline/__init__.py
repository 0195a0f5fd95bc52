"""The call timeline: every event of every call in PostgreSQL (``interaction_events``).

:mod:`cti.timeline.summary` (pure) orders a call's events and sums them up;
:mod:`cti.timeline.store` owns the table: it writes the events in batches, puts each
ended call's summary on its interaction record, and answers the questions the sidebar
asks of the past (a call's events, whether an agent was on it).
"""
