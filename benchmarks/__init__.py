"""Benchmarks: chunkline against what a user would otherwise write (see README.md)."""
