"""Benchmarks of the engine: `make bench` (scoring throughput) and `make scale` (per-shard costs). Not part of the installed package."""
