"""The agent's sidebar (issue 5): its HTTP and WebSocket API, served by ``cti serve``
or by ``cti screenpop`` alone (docs/screenpop-api.md), and the page in ``static/``."""
