"""Resources: the run's settings, and the prior model loaded once per process for all partitions."""

from __future__ import annotations

import logging
from typing import Callable, Optional

import dagster as dg

from tledit_pipeline.prior import Prior, cached_prior, model_version
from tledit_pipeline.settings import Settings


class TleditResource(dg.ConfigurableResource):
    """Every setting of a run (see tledit_pipeline.settings); built from TLEDIT_* variables or CLI flags."""

    home: str
    source: str
    model: str
    text_field: str
    model_cache: Optional[str] = None
    refresh_cron: str = "@daily"
    trust_remote_code: bool = False
    allow_pickle: bool = False
    threshold: float
    top_k: int
    beta: float
    seed: int
    strategy: str = "top_k"
    top_p: float = 0.9
    exclude_original: bool = False
    window: int
    overlap: int
    candidates: int
    batch_tokens: int
    device: str
    dtype: str
    prefix_tokens: int = 32
    max_new_tokens: int = 128
    synthetic_sample: float = 0.25
    synthetic_seed: int = 0
    synthetic_batch: int = 32
    min_tail_coverage: float = 0.98
    max_js_divergence: float = 0.01

    @classmethod
    def from_settings(cls, s: Settings) -> "TleditResource":
        return cls(**s.flat())

    def settings(self) -> Settings:
        return Settings.from_env(env={}, **self.model_dump())


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
    to_run_log = not context.has_partition_key_range or len(context.partition_keys) == 1

    def report(msg: str) -> None:
        if to_run_log:
            context.log.info(msg)
        term.info("[%s] %s", key, msg)

    return report


def prior_code_version(settings: Settings) -> str:
    """The prior's part of a model-running asset's code version: its name and a hash of its files."""
    return f"model={settings.model}@{model_version(settings.model, settings.models_dir)}"
