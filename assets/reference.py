"""reference_perplexity: every variant's text scored by one reference model (opt-in: the reference_model setting)."""

import time

import dagster as dg
import pyarrow as pa

from assets.lineage import run_settings
from assets.partitions import SHARDS
from assets.resources import TleditResource, reporter
from assets.staleness import whole_asset_out_of_date
from tledit_pipeline.database import connect
from tledit_pipeline.lake import is_shard_key, partition_file, write_partition
from tledit_pipeline.prior import cached_prior, model_version
from tledit_pipeline.reference import REFERENCE_ASSET, markdown, quantiles, shard_reference
from tledit_pipeline.settings import Settings

ENGINE_VERSION = "1"
REFERENCE = dg.AssetKey(REFERENCE_ASSET)


def reference_name(settings: Settings) -> str:
    """The model the reference setting names (`prior`: the run's prior)."""
    ref = settings.reference_model or ""
    return settings.model if ref == "prior" else ref


def code_version(settings: Settings) -> str:
    """The reference model (and its files), the scoring settings, and what made the texts it reads."""
    ref = reference_name(settings)
    return (
        f"reference-{ENGINE_VERSION}|model={ref}@{model_version(ref, settings.models_dir)}|{settings.scoring.version()}|"
        f"{settings.edit.version()}|{settings.synthetic.version()}"
    )


def build(settings: Settings) -> list[dg.AssetsDefinition]:
    """The asset, when the reference_model setting names a model; none otherwise."""
    if not settings.reference_model:
        return []

    @dg.asset(
        name=REFERENCE_ASSET,
        group_name="reference",
        kinds={"pytorch", "parquet"},
        deps=["raw_corpus", "edited_corpus", "synthetic_corpus"],
        pool="prior",
        code_version=code_version(settings),
    )
    def reference_perplexity(context: dg.AssetExecutionContext, tledit: TleditResource) -> dg.MaterializeResult:
        """Per-document perplexity of raw, edited, synthetic and raw_matched text, scored alike by the reference model."""
        s = run_settings(tledit, REFERENCE_ASSET, settings, code_version)
        t0 = time.perf_counter()
        keys = sorted(k for k in context.instance.get_dynamic_partitions(SHARDS) if is_shard_key(k))
        keys = [k for k in keys if partition_file(s.home, "edited_corpus", k).exists()]
        name = reference_name(s)
        model = cached_prior(name, str(s.models_dir), s.scoring.device, s.scoring.dtype, s.trust_remote_code, s.allow_pickle)
        tables = []
        for key in keys:
            table = shard_reference(model, s.home, key, s.scoring)
            write_partition(s.home, REFERENCE_ASSET, key, table, meta={"model": name})
            tables.append(table)
            reporter(context)(f"reference perplexity: {key} scored by {name}")
        q = quantiles(pa.concat_tables(tables))
        own = _prior_own(s)
        label = f"{name} (the prior)" if name == s.model else name
        return dg.MaterializeResult(
            metadata={
                "scored_by": label,
                "perplexity_by_reference": dg.MetadataValue.md(markdown(q, label, own)),
                **{f"{v}/ppl_p50": round(m["ppl_p50"], 4) for v, m in q.items()},
                "shards": len(keys),
                "seconds": round(time.perf_counter() - t0, 1),
            }
        )

    return [reference_perplexity]


def _prior_own(s: Settings) -> dict[str, dict[str, float]] | None:
    """distribution_health's own perplexities ('__all__'), to show beside the reference's; None before it exists."""
    try:
        with connect(s.home, read_only=True) as con:
            rows = con.execute(
                "SELECT variant, metric, value FROM distribution_health WHERE shard = '__all__' AND metric LIKE 'ppl_p%'"
            ).fetchall()
    except Exception:  # no DuckDB file or table yet: the reference's own table stands alone
        return None
    out: dict[str, dict[str, float]] = {}
    for v, m, x in rows:
        out.setdefault(v, {})[m] = x
    return out


def reference_out_of_date(instance: dg.DagsterInstance, asset_graph) -> str:
    """Why reference_perplexity needs scoring again ('' when current): missing, a new code version, newer texts."""
    return whole_asset_out_of_date(instance, asset_graph, REFERENCE)[0]
