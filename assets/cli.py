"""`tledit`: run the graph in process against the persistent Dagster instance, from a terminal."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import warnings
from pathlib import Path

from tledit_pipeline.errors import TleditError
from tledit_pipeline.settings import Settings

INSTANCE_YAML = """# written by tledit: the persistent instance shared by `tledit run` and `make ui`
telemetry:
  enabled: false
"""


def _settings(args: argparse.Namespace) -> Settings:
    return Settings.from_env(
        home=args.home,
        source=args.source,
        model=args.model,
        text_field=args.text_field,
        threshold=args.threshold,
        top_k=args.top_k,
        beta=args.beta,
        seed=args.seed,
        device=args.device,
        dtype=args.dtype,
    )


def prepare_instance(settings: Settings):
    """The Dagster instance under <home>/dagster_home, the same one `make ui` opens."""
    home = settings.dagster_home
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "dagster.yaml").exists():
        (home / "dagster.yaml").write_text(INSTANCE_YAML)
    os.environ["DAGSTER_HOME"] = str(home)
    from dagster import DagsterInstance

    return DagsterInstance.get()


def _materialize(defs, instance, selection, partition_key=None):
    import dagster as dg

    job = defs.resolve_implicit_global_asset_job_def()
    result = job.execute_in_process(
        instance=instance,
        partition_key=partition_key,
        asset_selection=[dg.AssetKey(k) for k in selection],
        # The terminal gets tledit's own progress lines; Dagster's event log goes to the instance (and UI).
        run_config={"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}},
        raise_on_error=False,
    )
    if not result.success:
        raise RunFailed(f"{partition_key or 'distribution_health'}: {_root_cause(result)} (run {result.run_id}, see `make ui`)")
    return result


def _root_cause(result) -> str:
    """The user's problem, not Dagster's wrapper: the innermost cause of the first failed step or check."""
    for event in result.all_events:
        error = getattr(event.event_specific_data, "error", None) if event.is_failure else None
        if error is None:
            continue
        while error.cause is not None:
            error = error.cause
        return error.message.strip()
    failed = [c.check_name for c in result.get_asset_check_evaluations() if not c.passed]
    return f"asset check(s) failed: {', '.join(failed)}" if failed else "run failed"


class RunFailed(TleditError):
    pass


def cmd_run(args: argparse.Namespace) -> int:
    from assets.definitions import PER_SHARD, build_defs
    from assets.partitions import SHARDS
    from tledit_pipeline.lake import connect
    from tledit_pipeline.source import discover_shards

    settings = _settings(args)
    instance = prepare_instance(settings)
    found = discover_shards(settings.source, settings.home)
    if args.shard:
        unknown = set(args.shard) - {s.key for s in found}
        if unknown:
            raise SystemExit(f"tledit: unknown shard(s) {sorted(unknown)}; found {[s.key for s in found]}")
        found = [s for s in found if s.key in args.shard]
    if not found:
        raise SystemExit(f"tledit: no shard files (.jsonl, .jsonl.gz, .parquet, .txt) in source {settings.source!r}")
    known = set(instance.get_dynamic_partitions(SHARDS))
    new = [s.key for s in found if s.key not in known]
    if new:
        instance.add_dynamic_partitions(SHARDS, new)
    print(f"tledit: {len(found)} shard(s) from {settings.source} -> {settings.home}  (p={settings.edit.threshold}, k={settings.edit.top_k}, beta={settings.edit.beta}, seed={settings.edit.seed})", flush=True)
    defs = build_defs(settings)
    t0 = time.perf_counter()
    for i, shard in enumerate(found, 1):
        t = time.perf_counter()
        print(f"[{i}/{len(found)}] {shard.key}: materializing {', '.join(PER_SHARD)}", flush=True)
        _materialize(defs, instance, PER_SHARD, shard.key)
        print(f"[{i}/{len(found)}] {shard.key}: done in {time.perf_counter() - t:.1f}s", flush=True)
    print("distribution_health: building DuckDB views and health table", flush=True)
    _materialize(defs, instance, ["distribution_health"])
    elapsed = time.perf_counter() - t0
    with connect(settings.home, read_only=True) as con:
        summary(con, settings, elapsed, [s.key for s in found])
    return 0


def summary(con, settings: Settings, elapsed: float, keys: list[str]) -> None:
    docs, rejected = con.execute(
        "SELECT (SELECT count(*) FROM raw_corpus WHERE list_contains($keys, shard)),"
        " (SELECT count(*) FROM rejected_documents WHERE list_contains($keys, shard))",
        {"keys": keys},
    ).fetchone()
    tokens, scored, eligible, changed = con.execute(
        "SELECT sum(n_tokens), sum(n_tokens - 1), sum(n_eligible), sum(n_changed) FROM edited_corpus"
        " WHERE list_contains($keys, shard)",
        {"keys": keys},
    ).fetchone()
    scored = max(scored or 0, 1)
    print()
    print("ToEdit run complete")
    print(f"  shards          {len(keys)}")
    print(f"  documents       {docs:,} accepted, {rejected:,} rejected (see view rejected_documents)")
    print(f"  tokens          {tokens:,}")
    print(f"  eligible share  {eligible / scored:.2%}  (P >= {settings.edit.threshold})")
    print(f"  changed share   {changed / scored:.2%}  ({changed:,} tokens; {changed / max(eligible, 1):.1%} of eligible)")
    print(f"  time            {elapsed:.1f}s")
    print(f"  DuckDB          {settings.duckdb_path}")
    print(f"                  views raw_corpus, token_scores, edited_corpus, ngram_profile; table distribution_health")
    print(f"  UI              make ui   (dagster dev, DAGSTER_HOME={settings.dagster_home}) -> http://127.0.0.1:3000")


def cmd_shards(args: argparse.Namespace) -> int:
    from tledit_pipeline.source import discover_shards

    settings = _settings(args)
    for s in discover_shards(settings.source, settings.home):
        print(f"{s.key}\t{s.path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tledit", description="Token-Level Editing (ToEdit) as a Dagster pipeline")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, fn, help_ in (
        ("run", cmd_run, "register shards and materialize the whole graph in process"),
        ("shards", cmd_shards, "list the shards found at the source"),
    ):
        p = sub.add_parser(name, help=help_)
        p.set_defaults(fn=fn)
        p.add_argument("--home", help="data directory (TLEDIT_HOME, default ./data)")
        p.add_argument("--source", help="'sample', a folder, a glob or a file (TLEDIT_SOURCE)")
        p.add_argument("--model", help="prior: bundled default, a Hugging Face id or a folder (TLEDIT_MODEL)")
        p.add_argument("--text-field", help="field holding the text (TLEDIT_TEXT_FIELD, default text)")
        p.add_argument("--threshold", type=float, help="threshold p (TLEDIT_THRESHOLD, default 0.99)")
        p.add_argument("--top-k", type=int, help="top-k k (TLEDIT_TOP_K, default 8)")
        p.add_argument("--beta", type=float, help="temperature beta (TLEDIT_BETA, default 1.5)")
        p.add_argument("--seed", type=int, help="seed (TLEDIT_SEED, default 0)")
        p.add_argument("--device", help="auto | cpu | cuda (TLEDIT_DEVICE)")
        p.add_argument("--dtype", help="auto | float32 | bfloat16 (TLEDIT_DTYPE)")
        if name == "run":
            p.add_argument("--shard", action="append", help="only this shard key (repeatable)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    term = logging.getLogger("tledit")
    term.setLevel(logging.INFO)
    for name in ("transformers", "datasets", "huggingface_hub"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    try:
        return args.fn(args)
    except TleditError as exc:
        print(f"tledit: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
