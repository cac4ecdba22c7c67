"""One partition per source shard file; the shard sensor and `tledit run` register new ones."""

import dagster as dg

from tledit_pipeline.generations import generation_of, later_assets

SHARDS = "shards"
shards = dg.DynamicPartitionsDefinition(name=SHARDS)

# The per-shard chain, in dependency order; distribution_health is the one unpartitioned asset.
PER_SHARD = ["raw_corpus", "token_scores", "edited_corpus", "synthetic_corpus", "ngram_profile"]


def per_shard(generations: int = 1) -> list[str]:
    """The per-shard chain with later generations' assets (token_scores_g1, edited_corpus_g2, ...) after edited_corpus."""
    return PER_SHARD[:3] + later_assets(generations) + PER_SHARD[3:]


def chain(asset_graph) -> list[str]:
    """The per-shard chain of a built asset graph: its partitioned assets, in dependency order."""
    names = {k.to_user_string() for k in asset_graph.get_all_asset_keys() if asset_graph.get(k).partitions_def is not None}
    generations = max([g for n in names if n.startswith("edited_corpus") and (g := generation_of(n))] or [1])
    return [n for n in per_shard(generations) if n in names]


# Every per-shard asset, whatever the number of generations: what the sensor and the schedule may target
# (the unpartitioned distribution_health and collapse_probe are not).
PER_SHARD_SELECTION = dg.AssetSelection.all() - dg.AssetSelection.assets("distribution_health", "collapse_probe")
