"""The code location: assets by stage, checks, resources and the shard sensor, built from one Settings."""

from __future__ import annotations

import warnings

import dagster as dg

from assets import checks, diagnostics, edited, probe, raw, reference, schedules, scores, sensors, sweep, synthetic
from assets.partitions import PER_SHARD  # noqa: F401  (re-exported for the CLI and tests)
from assets.resources import PriorResource, TleditResource
from tledit_pipeline.generations import generation_of, later_assets
from tledit_pipeline.settings import Settings

warnings.filterwarnings("ignore", category=dg.PreviewWarning)
warnings.filterwarnings("ignore", category=dg.BetaWarning)


def build_assets(settings: Settings) -> list[dg.AssetsDefinition]:
    return [
        raw.build(settings),
        scores.build(settings),
        edited.build(settings),
        *generation_assets(settings),
        synthetic.build(settings),
        diagnostics.build_ngram_profile(settings),
        diagnostics.build_distribution_health(settings),
        probe.build(settings),
        *sweep.build(settings),
        *reference.build(settings),
    ]


def generation_assets(settings: Settings) -> list[dg.AssetsDefinition]:
    """One asset per generation beyond the first: token_scores_g1, edited_corpus_g2, token_scores_g2, ...

    An asset per generation (rather than a second partition dimension) keeps one shard = one partition
    everywhere and shows each generation as its own node in the lineage graph.
    """
    out = []
    for name in later_assets(settings.generations):
        g = generation_of(name)
        out.append(
            scores.build(settings, generation=g) if name.startswith("token_scores") else edited.build(settings, generation=g)
        )
    return out


def build_resources(settings: Settings) -> dict:
    return {"tledit": TleditResource.from_settings(settings), "prior": PriorResource.from_settings(settings)}


def build_defs(settings: Settings | None = None) -> dg.Definitions:
    """Settings default to the data directory's remembered ones (the last `tledit run`), then TLEDIT_*."""
    settings = settings or Settings.load()
    return dg.Definitions(
        assets=build_assets(settings),
        asset_checks=checks.CHECKS,
        resources=build_resources(settings),
        sensors=[sensors.shard_sensor, diagnostics.health_automation],
        schedules=[schedules.build(settings)],
    )


defs = build_defs()
