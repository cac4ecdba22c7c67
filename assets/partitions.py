"""One partition per source shard file; the shard sensor and `tledit run` register new ones."""

import dagster as dg

SHARDS = "shards"
shards = dg.DynamicPartitionsDefinition(name=SHARDS)

# The per-shard chain, in dependency order; distribution_health is the one unpartitioned asset.
PER_SHARD = ["raw_corpus", "token_scores", "edited_corpus", "synthetic_corpus", "ngram_profile"]
