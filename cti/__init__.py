"""CTI middleware for Asterisk: value-based routing, call tracking, screen pops."""

__version__ = "0.1.0"
