"""collapse_probe: the same small LM trained on raw, edited, synthetic and mixed text (opt-in; docs/probe.md)."""

import time
from dataclasses import replace

import dagster as dg
import numpy as np
import pyarrow as pa

from assets.lineage import run_settings
from assets.partitions import SHARDS
from assets.resources import TleditResource, prior_code_version, reporter
from assets.staleness import whole_asset_out_of_date
from tledit_pipeline.charts import bar_chart_svg, line_chart_svg, svg_markdown
from tledit_pipeline.database import add_file_view
from tledit_pipeline.edited import edit_from_lake
from tledit_pipeline.generations import text_asset, variant
from tledit_pipeline.lake import partition_file
from tledit_pipeline.prior import pick_device
from tledit_pipeline.probe import (
    PAPER_TABLE1,
    PROBE_ASSET,
    SYNTHETIC_SHARE,
    build_sets,
    final_ppl,
    heldout_tokens,
    n_params,
    other_documents,
    prior_codec,
    read_variants,
    report_lines,
    run_probe,
    write_probe,
)
from tledit_pipeline.settings import Settings

# 2: vocabulary and budget independent of the edited text; 3: synthetic re-tokenized, a held-out split per
# seed, t-based intervals, raw_other, the training-length axis, the edited arm at a stronger p
ENGINE_VERSION = "3"
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


def strong_variant(settings: Settings) -> str | None:
    """The edited arm at probe_edit_threshold (the sweep's strongest point), made from the stored scores."""
    p = settings.collapse.probe_edit_threshold
    return f"edited_p{p:g}" if p else None


def code_version(settings: Settings) -> str:
    """The probe's settings, the variants it trains on and the tokenizer (the prior's files) change its numbers;
    with an edited arm at another p, the edit's other settings too."""
    strong = f"|{settings.edit.version()}" if strong_variant(settings) else ""
    return (
        f"probe-{ENGINE_VERSION}|{settings.collapse.version()}|{','.join(edited_assets(settings))}{strong}|"
        f"{prior_code_version(settings)}"
    )


def strong_edit(s: Settings, keys: list[str]) -> pa.Table:
    """The corpus edited at probe_edit_threshold, every shard (shard, doc_id, text): from stored scores, no model."""
    e = replace(s.edit, threshold=s.collapse.probe_edit_threshold)
    parts = []
    for key in sorted(keys):
        if partition_file(s.home, "token_scores", key).exists():
            table, _ = edit_from_lake(s.home, key, e)
            parts.append(table.select(["shard", "doc_id", "text"]))
    return pa.concat_tables(parts)


def build(settings: Settings) -> dg.AssetsDefinition:
    variants = edited_assets(settings)

    @dg.asset(
        name=PROBE_ASSET,
        group_name="diagnostics",
        kinds={"pytorch", "duckdb"},
        deps=["raw_corpus", *variants.values(), "synthetic_corpus", *(["token_scores"] if strong_variant(settings) else [])],
        code_version=code_version(settings),
    )
    def collapse_probe(context: dg.AssetExecutionContext, tledit: TleditResource) -> dg.MaterializeResult:
        """Held-out perplexity of one small LM trained from scratch on each corpus variant (same budget, steps, seed)."""
        s = run_settings(tledit, PROBE_ASSET, settings, code_version)
        p = s.collapse
        t0 = time.perf_counter()
        keys = sorted(context.instance.get_dynamic_partitions(SHARDS))
        raw, edited, synthetic = read_variants(s.home, keys, variants)
        strong = strong_variant(s)
        if strong:
            edited[strong] = strong_edit(s, keys)
        tokenize, decode = prior_codec(s.model, s.models_dir, s.trust_remote_code)
        other = other_documents(p.probe_other) if p.probe_other else None
        # Each seed its own held-out split (and so its own training documents): the seeds measure the data's variance.
        datas = {
            seed: build_sets(raw, edited, synthetic, tokenize, p.probe_heldout, seed, decode=decode, other=other)
            for seed in range(p.probe_seeds)
        }
        data = datas[0]
        device = pick_device(s.scoring.device)
        report = reporter(context)
        report(
            f"probe: {len(data.sets)} training sets of ~{data.budget:,} tokens, ~{len(data.heldout_docs)} held-out documents "
            f"per seed, {p.probe_seeds} seed(s) x {p.probe_steps} steps on {device}"
        )
        table = run_probe(datas, p, device, report)
        per_seed = list(datas.values())
        meta = {
            "settings": p.version(),
            "variants": list(data.sets),
            "train_tokens": round(float(np.mean([d.budget for d in per_seed]))),
            "train_tokens_by_seed": [d.budget for d in per_seed],
            "train_documents": len(data.train_docs),
            "heldout_tokens": round(float(np.mean([heldout_tokens(d.heldout, p.probe_context) for d in per_seed]))),
            "heldout_tokens_by_seed": [heldout_tokens(d.heldout, p.probe_context) for d in per_seed],
            "heldout_documents": len(data.heldout_docs),
            "heldout_documents_by_seed": [len(d.heldout_docs) for d in per_seed],
            "vocab": data.vocab,
            "edited_unknown_tokens": data.unknown,
            "synthetic_retokenized_share": round(data.retokenized / max(data.synthetic_tokens, 1), 5),
            "other": p.probe_other or "",
            "params": n_params(data.vocab, p.probe_context),
            "steps": p.probe_steps,
            "long_steps": p.probe_long_steps,
            "device": device,
            "shards": ",".join(keys),
            "seconds": round(time.perf_counter() - t0, 1),
        }
        path = write_probe(s.home, table, meta)
        add_file_view(s.home, PROBE_ASSET, path)
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
                        "synthetic_retokenized_share",
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
                            {v: (e.mean, e.ci95) for v, e in est.items()},
                            "Held-out perplexity per training set (mean, t-based 95 % interval over seeds)",
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


def _share_chart(est) -> str:
    shares = [(SYNTHETIC_SHARE[v] * 100, est[v].mean / est["raw"].mean) for v in SYNTHETIC_SHARE if v in est]
    paper = [(k * 100, v / PAPER_TABLE1[0.0]) for k, v in PAPER_TABLE1.items()]
    svg = line_chart_svg(
        {"this probe": shares, "paper (GPT-2, Table 1)": paper},
        "Held-out perplexity against the synthetic share, relative to 0 %",
        "synthetic share of the training set (%)",
        "perplexity / perplexity at 0 %",
    )
    rows = ["| synthetic share | variant | held-out ppl | 95 % +- | paper (Pile, Table 1) |", "|---|---|---|---|---|"]
    for v, share in SYNTHETIC_SHARE.items():
        if v in est:
            rows.append(f"| {share:.0%} | {v} | {est[v].mean:.3f} | {est[v].ci95:.3f} | {PAPER_TABLE1[share]:.2f} |")
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
    why, built = whole_asset_out_of_date(instance, asset_graph, PROBE)
    if why:
        return why
    shown = built.asset_materialization.metadata.get("shards")
    if shown is not None and shown.value != ",".join(sorted(keys)):
        return "the registered shards changed"
    return ""
