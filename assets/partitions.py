"""One partition per source shard file; the shard sensor and `tledit run` register new ones."""

import dagster as dg

SHARDS = "shards"
shards = dg.DynamicPartitionsDefinition(name=SHARDS)
