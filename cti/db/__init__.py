"""PostgreSQL plumbing every feature shares: migrations (``migrate.py``), batched
inserts (``bulk.py``) and the dead letters of the record writers (``dead_letters.py``).
Features keep their own SQL (cti.calldata, cti.timeline, cti.interactions,
cti.customers, cti.routing.plan_store, cti.screenpop.agents, cti.demo.seed)."""
