"""Resources: the run's settings, and the prior model loaded once per process for all partitions."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import create_model

from assets.partitions import for_each_shard, record_shards
from tledit_pipeline.prior import Prior, cached_prior, model_version
from tledit_pipeline.settings import SPECS, Settings, Spec
from tledit_pipeline.steps import ShardJob, run_job


class _TleditConfig(dg.ConfigurableResource):
    """Every setting of a run; its fields are derived from the declarations in tledit_pipeline.settings."""

    @classmethod
    def from_settings(cls, s: Settings) -> "TleditResource":
        return cls(**s.flat())

    def settings(self) -> Settings:
        return Settings.from_env(env={}, **self.model_dump())


def _config_field(spec: Spec) -> tuple[Any, Any]:
    kind = str if spec.type is Path else spec.type
    return (kind | None if spec.optional else kind), spec.plain(spec.default)


# One config field per declared setting, so the UI's launchpad shows each (pydantic builds the class).
TleditResource = create_model(
    "TleditResource", __base__=_TleditConfig, __module__=__name__, **{s.name: _config_field(s) for s in SPECS}
)


class PriorResource(dg.ConfigurableResource):
    """Loads the prior on first use; later partitions in the same process reuse it."""

    model: str
    models_dir: str
    device: str = "auto"
    dtype: str = "auto"
    trust_remote_code: bool = False
    allow_pickle: bool = False

    @classmethod
    def from_settings(cls, s: Settings) -> "PriorResource":
        return cls(
            model=s.model,
            models_dir=str(s.models_dir),
            device=s.scoring.device,
            dtype=s.scoring.dtype,
            trust_remote_code=s.trust_remote_code,
            allow_pickle=s.allow_pickle,
        )

    def load(self) -> Prior:
        return cached_prior(self.model, self.models_dir, self.device, self.dtype, self.trust_remote_code, self.allow_pickle)


def reporter(context: dg.AssetExecutionContext, key: str | None = None) -> Callable[[str], None]:
    """Progress lines go to the `tledit` logger (the CLI's terminal) and, in a one-shard run, to the run
    log (UI). A run over many shards keeps its event log to one line per step: each shard's numbers are in
    its materialization's metadata, and a log event per progress line would cost more than the work."""
    term = logging.getLogger("tledit")
    key = key or (context.partition_key if context.has_partition_key else "all")
    to_run_log = not context.has_partition_key_range

    def report(msg: str) -> None:
        if to_run_log:
            context.log.info(msg)
        term.info("[%s] %s", key, msg)

    return report


def prior_code_version(settings: Settings) -> str:
    """The prior's part of a model-running asset's code version: its name and a hash of its files."""
    return f"model={settings.model}@{model_version(settings.model, settings.models_dir)}"


def prior_step(
    context: dg.AssetExecutionContext, s: Settings, prior: PriorResource, job: Callable[[str], ShardJob], version: str
) -> int:
    """A ranged step of the prior (token_scores, synthetic_corpus, token_scores_g*) on the run's engine:
    in this process (`local`), or streamed to the Ray cluster's scoring actors (`ray`, tledit_pipeline.cluster).
    Either way one materialization per shard with the same metadata; returns how many shards were done."""
    keys = list(context.partition_keys)
    if s.engine != "ray":
        return len(for_each_shard(context, lambda key: run_job(prior.load, s, job(key), reporter(context, key))))
    from assets.staleness import latest_materializations
    from tledit_pipeline import cluster

    jobs = [job(k) for k in keys]
    pool = cluster.pool(s, model_version(s.model, s.models_dir))
    # Which run recorded each shard last: a receipt of a run that never recorded its shards is reused.
    recorded = {k: r.run_id for k, r in latest_materializations(context.instance, jobs[0].asset, keys).items()} if jobs else {}
    return len(record_shards(context, pool.run(s, jobs, version, context.run_id, recorded), len(keys)))
