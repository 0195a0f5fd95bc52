"""Benchmarks of the cti daemon (see bench/README.md)."""
