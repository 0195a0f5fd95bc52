"""The live wallboard: per-queue and per-agent figures, computed once per event by the
AMI leader, kept in Redis and pushed to every open wallboard (docs/architecture.md)."""
