"""PostgreSQL plumbing every feature shares: migrations (``migrate.py``) and batched
inserts (``bulk.py``). Features keep their own SQL (cti.calldata, cti.timeline,
cti.interactions, cti.routing.plan_store, cti.screenpop.agents); ``customers.py`` and
``demo.py`` are still here until they move to their features."""
