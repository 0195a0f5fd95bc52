"""Agent states and the wrap-up cti owns (issue 11).

* :mod:`cti.agents.state`: the pure state machine (:class:`AgentBoard`);
* :mod:`cti.agents.store`: its Redis keys (current states, pending wrap-ups) and the
  PostgreSQL state log;
* :mod:`cti.agents.wrapup`: the service that pauses an agent in Asterisk for wrap-up
  and ends it on the disposition or at the deadline (the AMI leader only).
"""
