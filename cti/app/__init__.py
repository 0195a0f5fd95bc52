"""The composition root: the one place that reads the configuration, opens the
connections and wires the components, for ``cti serve`` and ``cti screenpop``.

Only :mod:`cti.cli` imports it. Everything else receives what it uses (a pool, a
client, a callable) and never reaches for the configuration or for this package:
the adapters (cti.agi, cti.ami, cti.screenpop) and the core know nothing of it.

* :mod:`cti.app.resources`: the connections, each opened and closed by a context manager;
* :mod:`cti.app.supervisor`: the tasks and the one shutdown order;
* :mod:`cti.app.calldata`, :mod:`cti.app.routing`, :mod:`cti.app.following`,
  :mod:`cti.app.sidebar`: one builder per component;
* :mod:`cti.app.service`: which components a process runs, started and stopped.
"""
