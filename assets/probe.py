"""collapse_probe: the same small LM trained on raw, edited, synthetic and mixed text (opt-in; docs/probe.md)."""

import time

import dagster as dg

from assets.lineage import run_settings
from assets.partitions import SHARDS
from assets.resources import TleditResource, prior_code_version, reporter
from assets.staleness import CODE_VERSION_TAG
from tledit_pipeline.charts import bar_chart_svg, line_chart_svg, svg_markdown
from tledit_pipeline.database import amend_database, connect
from tledit_pipeline.generations import text_asset, variant
from tledit_pipeline.prior import pick_device
from tledit_pipeline.probe import (
    PAPER_TABLE1,
    PROBE_ASSET,
    SYNTHETIC_SHARE,
    build_sets,
    final_ppl,
    heldout_tokens,
    n_params,
    prior_tokenizer,
    probe_view,
    read_variants,
    report_lines,
    run_probe,
    write_probe,
)
from tledit_pipeline.settings import Settings

ENGINE_VERSION = "2"  # 2: vocabulary and budget independent of the edited text
PROBE = dg.AssetKey(PROBE_ASSET)


def edited_assets(settings: Settings) -> dict[str, str]:
    """The edited training sets: variant -> the lake asset holding its text. The one place that knows them.

    Generation 1 is edited_corpus; with iterative generations (`--generations N`, N > 1) the last one,
    edited_corpus_g{N}, is trained on too, as variant edited_g{N}.
    """
    out = {variant(1): text_asset(1)}
    if settings.generations > 1:
        out[variant(settings.generations)] = text_asset(settings.generations)
    return out


def code_version(settings: Settings) -> str:
    """The probe's settings, the variants it trains on and the tokenizer (the prior's files) change its numbers."""
    return (
        f"probe-{ENGINE_VERSION}|{settings.collapse.version()}|{','.join(edited_assets(settings))}|{prior_code_version(settings)}"
    )


def build(settings: Settings) -> dg.AssetsDefinition:
    variants = edited_assets(settings)

    @dg.asset(
        name=PROBE_ASSET,
        group_name="diagnostics",
        kinds={"pytorch", "duckdb"},
        deps=["raw_corpus", *variants.values(), "synthetic_corpus"],
        code_version=code_version(settings),
    )
    def collapse_probe(context: dg.AssetExecutionContext, tledit: TleditResource) -> dg.MaterializeResult:
        """Held-out perplexity of one small LM trained from scratch on each corpus variant (same budget, steps, seed)."""
        s = run_settings(tledit, PROBE_ASSET, settings, code_version)
        p = s.collapse
        t0 = time.perf_counter()
        keys = sorted(context.instance.get_dynamic_partitions(SHARDS))
        raw, edited, synthetic = read_variants(s.home, keys, variants)
        data = build_sets(raw, edited, synthetic, prior_tokenizer(s.model, s.models_dir, s.trust_remote_code), p.probe_heldout)
        device = pick_device(s.scoring.device)
        report = reporter(context)
        report(
            f"probe: {len(data.sets)} training sets of {data.budget:,} tokens, {len(data.heldout_docs)} held-out documents, "
            f"{p.probe_seeds} seed(s) x {p.probe_steps} steps on {device}"
        )
        table = run_probe(data, p, device, report)
        meta = {
            "settings": p.version(),
            "variants": list(data.sets),
            "train_tokens": data.budget,
            "train_documents": len(data.train_docs),
            "heldout_tokens": heldout_tokens(data.heldout, p.probe_context),
            "heldout_documents": len(data.heldout_docs),
            "vocab": data.vocab,
            "edited_unknown_tokens": data.unknown,
            "params": n_params(data.vocab, p.probe_context),
            "steps": p.probe_steps,
            "device": device,
            "shards": ",".join(keys),
            "seconds": round(time.perf_counter() - t0, 1),
        }
        path = write_probe(s.home, table, meta)
        _add_view(s)
        est = final_ppl(table)
        return dg.MaterializeResult(
            metadata={
                **{f"{v}/heldout_ppl": round(e.mean, 4) for v, e in est.items()},
                **{
                    k: meta[k]
                    for k in (
                        "train_tokens",
                        "heldout_tokens",
                        "train_documents",
                        "heldout_documents",
                        "vocab",
                        "params",
                        "seconds",
                        "device",
                    )
                },
                "seeds": p.probe_seeds,
                "shards": meta["shards"],
                "probe_settings": meta["settings"],
                "table": dg.MetadataValue.md("```\n" + "\n".join(report_lines(table, meta)) + "\n```"),
                "synthetic_share_curve": dg.MetadataValue.md(_share_chart(est)),
                "by_variant": dg.MetadataValue.md(
                    svg_markdown(
                        bar_chart_svg(
                            {v: (e.mean, e.sd) for v, e in est.items()},
                            "Held-out perplexity per training set (mean, +-sd over seeds)",
                            "held-out perplexity",
                        ),
                        "held-out perplexity per variant",
                    )
                ),
                "training_curves": dg.MetadataValue.md(_curves(table)),
                "path": dg.MetadataValue.path(str(path)),
            }
        )

    return collapse_probe


def _add_view(s: Settings) -> None:
    """Adds the collapse_probe view when the DuckDB file lacks it (a view reads the replaced lake file by itself)."""
    if s.duckdb_path.exists():
        with connect(s.home, read_only=True) as con:
            if con.execute(f"SELECT count(*) FROM duckdb_views() WHERE view_name = '{PROBE_ASSET}'").fetchone()[0]:
                return
    with amend_database(s.home) as con:
        probe_view(con, s.home)


def _share_chart(est) -> str:
    shares = [(SYNTHETIC_SHARE[v] * 100, est[v].mean / est["raw"].mean) for v in SYNTHETIC_SHARE if v in est]
    paper = [(k * 100, v / PAPER_TABLE1[0.0]) for k, v in PAPER_TABLE1.items()]
    svg = line_chart_svg(
        {"this probe": shares, "paper (GPT-2, Table 1)": paper},
        "Held-out perplexity against the synthetic share, relative to 0 %",
        "synthetic share of the training set (%)",
        "perplexity / perplexity at 0 %",
    )
    rows = ["| synthetic share | variant | held-out ppl | sd | paper (Pile, Table 1) |", "|---|---|---|---|---|"]
    for v, share in SYNTHETIC_SHARE.items():
        if v in est:
            rows.append(f"| {share:.0%} | {v} | {est[v].mean:.3f} | {est[v].sd:.3f} | {PAPER_TABLE1[share]:.2f} |")
    return svg_markdown(svg, "held-out perplexity vs synthetic share") + "\n\n" + "\n".join(rows)


def _curves(table) -> str:
    """Held-out perplexity against the step, mean over seeds, one line per training set."""
    sums: dict[str, dict[int, list[float]]] = {}
    for v, step, ppl in zip(
        table.column("variant").to_pylist(),
        table.column("step").to_pylist(),
        table.column("heldout_ppl").to_pylist(),
        strict=True,
    ):
        sums.setdefault(v, {}).setdefault(step, []).append(ppl)
    series = {v: [(step, sum(x) / len(x)) for step, x in sorted(steps.items())] for v, steps in sums.items()}
    svg = line_chart_svg(
        series, "Training curves: held-out perplexity (mean over seeds)", "step", "held-out perplexity", log_y=True
    )
    return svg_markdown(svg, "training curves") + "\n\nTraining loss per step is in the table collapse_probe (train_loss)."


def probe_out_of_date(instance: dg.DagsterInstance, asset_graph, keys: list[str]) -> str:
    """Why collapse_probe needs training again ('' when current): missing, new code or settings, newer corpus."""
    built = instance.get_latest_materialization_event(PROBE)
    if built is None or built.asset_materialization is None:
        return "collapse_probe missing"
    current = asset_graph.get(PROBE).code_version
    if current and (built.asset_materialization.tags or {}).get(CODE_VERSION_TAG) != current:
        return "collapse_probe has a new code version"
    parents = asset_graph.get(PROBE).parent_keys
    newest = max((e.timestamp for k in parents if (e := instance.get_latest_materialization_event(k))), default=0.0)
    if newest > built.timestamp:
        return "corpus variants were materialized after it"
    shown = built.asset_materialization.metadata.get("shards")
    if shown is not None and shown.value != ",".join(sorted(keys)):
        return "the registered shards changed"
    return ""
