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
from tledit_pipeline.settings import SETTINGS_FILE, SPECS, Settings

# One instance for `tledit run`, `tledit ui` (make ui) and the daemon: runs, lineage and metadata in one
# place (its dagster.yaml: assets/instance.py).


# DuckDB 2 suggests con.sql() for Arrow output; its relations refuse to run while an execute() result is
# open, and the results we convert are small aggregates, so the copy is kept and this one advice silenced.
DUCKDB_ARROW_COPY = r"Arrow output on a DB-API result makes an extra copy"

PRIOR_STEPS = ("token_scores", "synthetic_corpus")  # and token_scores_g*: the steps the `ray` engine runs on a cluster
SUBMITTED_RUN_CONFIG = {"execution": {"config": {"in_process": {}}}}


class RunFailed(TleditError):
    pass


def _settings(args: argparse.Namespace) -> Settings:
    return Settings.load(**{spec.name: getattr(args, spec.name, None) for spec in SPECS})


# `tledit sweep` takes the data directory, the edit rule (the base every point varies) and the checks' bounds.
SWEEP_GROUPS = ("edit", "checks")


def add_setting_flags(parser: argparse.ArgumentParser, command: str) -> None:
    """One flag per declared setting that `command` takes (tledit_pipeline.settings is the only list)."""
    for spec in SPECS:
        takes = spec.group in SWEEP_GROUPS or spec.name == "home" if command == "sweep" else command in spec.commands
        if not takes:
            continue
        help_ = f"{spec.help} ({spec.env}, default {spec.doc_default()})".replace("%", "%%")
        kw: dict = {"dest": spec.name, "default": None, "help": help_}
        if spec.type is bool:
            kw["action"] = argparse.BooleanOptionalAction
        else:
            kw["type"] = str if spec.type is Path else spec.type
            kw["choices"] = spec.choices
        parser.add_argument(spec.flag, *spec.aliases, **kw)


def _materialize(defs, instance, selection: list[str], keys: list[str] | None = None):
    """One in-process run: the selected assets (and their checks) for one shard or a contiguous range."""
    import dagster as dg

    from assets.instance import owner_tags
    from assets.staleness import range_tags

    job = defs.resolve_implicit_global_asset_job_def()
    tags = owner_tags() | (range_tags(keys) if keys and len(keys) > 1 else {})  # owner: see recover_dead_runs
    return job.execute_in_process(
        instance=instance,
        partition_key=keys[0] if keys and len(keys) == 1 else None,
        tags=tags,
        asset_selection=[dg.AssetKey(k) for k in selection],
        # The terminal gets tledit's own progress lines; Dagster's event log goes to the instance (and UI).
        run_config={"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}},
        raise_on_error=False,
    )


def _materialize_whole_corpus(settings: Settings, defs, instance, asset: str, shards: int) -> tuple[bool, str]:
    """A whole-corpus asset (distribution_health, collapse_probe): apart from the prior's process for a large
    corpus (the apart_from_shards setting), else here. Returns (ok, failure line)."""
    if shards >= settings.apart_from_shards:
        return _materialize_apart(settings, instance, asset)
    return _outcome(_materialize(defs, instance, [asset]), asset)


def _outcome(result, asset: str) -> tuple[bool, str]:
    why = "" if result.success else f"{asset}: {_root_cause(result)} (run {result.run_id[:8]}, see `make ui`)"
    return result.success, why


def _materialize_apart(settings: Settings, instance, asset: str) -> tuple[bool, str]:
    """One run of an unpartitioned, whole-corpus asset in a fresh process: its memory never adds to the prior's
    and the ranges' in this one, so the peak of `tledit run` is the larger of the two, not their sum. The same
    in-process run as the ranges' (same instance, lineage, checks), with this run's exact settings (the graph
    and code versions depend on them; settings.json is only saved after success). Returns (ok, failure line)."""
    import multiprocessing

    # A plain spawned process rather than Dagster's multiprocess executor: that starts one interpreter per
    # step (each check is a step of its own), and its forkserver keeps the environment of its first use.
    ctx = multiprocessing.get_context("spawn")
    receive, send = ctx.Pipe(duplex=False)
    process = ctx.Process(target=_materialize_here, args=(settings.flat(), instance.get_ref(), asset, send), name=asset)
    process.start()
    send.close()
    try:
        outcome: tuple[bool, str] | None = receive.recv()
    except EOFError:  # the process died before it could report (killed, out of memory)
        outcome = None
    process.join()
    return outcome or (False, f"{asset}: its process ended with exit code {process.exitcode} before reporting")


def _materialize_here(settings: dict, instance_ref, asset: str, send) -> None:
    """The process of _materialize_apart: rebuild the definitions of these settings, run, report one line."""
    quiet()
    import dagster as dg

    from assets.definitions import build_defs

    try:
        with dg.DagsterInstance.from_ref(instance_ref) as instance:
            outcome = _outcome(_materialize(build_defs(Settings.from_env(env={}, **settings)), instance, [asset]), asset)
    except Exception as exc:  # before or around the run (definitions, instance): still one line for the user
        outcome = (False, f"{asset}: {exc}")
    send.send(outcome)
    send.close()


def shard_failures(result, keys: list[str]) -> dict[str, str]:
    """{shard: one line} for what failed in a run: shards a step named (ShardsFailed), shards whose blocking
    check failed (the check's own line), or, when the failure names no shard, every shard of the run."""
    from assets.partitions import failed_shards

    where = f"(run {result.run_id[:8]}, see `make ui`)"
    failed: dict[str, str] = {}
    for event in result.all_events:
        if event.is_step_failure:
            data = event.event_specific_data
            meta = getattr(getattr(data, "user_failure_data", None), "metadata", None) or {}
            for key, why in failed_shards(meta).items():
                failed.setdefault(key, f"{why} {where}")
    for c in result.get_asset_check_evaluations():
        if not c.passed and c.blocking and c.severity.value == "ERROR" and c.partition in keys:
            failed.setdefault(c.partition, f"{c.description or c.check_name + ' failed'} {where}")
    if not failed and not result.success:
        why = _root_cause(result)
        failed = {k: f"{why} {where}" for k in keys}
    return failed


def _root_cause(result) -> str:
    """The user's problem, not Dagster's wrapper: the innermost cause of the first failed step or check."""
    for c in result.get_asset_check_evaluations():
        if not c.passed and c.blocking and c.severity.value == "ERROR":
            return c.description or f"{c.check_name} failed"
    for event in result.all_events:
        error = getattr(event.event_specific_data, "error", None) if event.is_failure else None
        if error is None:
            continue
        while error.cause is not None:
            error = error.cause
        head, _, rest = error.message.strip().partition(": ")
        # Dagster formats "module.ClassName: message"; the user needs the message only.
        return rest if rest and error.cls_name and head.endswith(error.cls_name) else error.message.strip()
    return "run failed"


def cmd_run(args: argparse.Namespace) -> int:
    """Materialize only what is missing or stale (the UI's "materialize changed and missing").

    Shards that need the same assets run together: one run per contiguous range of at most
    SHARDS_PER_RUN shards, one materialization per shard. A shard that fails is
    reported by name and the rest of its run is planned and run again without it.
    """
    from assets.definitions import build_defs
    from assets.instance import prepare_instance, recover_dead_runs
    from assets.partitions import SHARDS, chain
    from assets.staleness import batches, health_out_of_date, plan
    from tledit_pipeline.database import connect
    from tledit_pipeline.lake import check_home
    from tledit_pipeline.prior import check_model
    from tledit_pipeline.source import FORMATS_READ, discover_source, write_not_taken

    settings = _settings(args)
    discovery = discover_source(settings.source, settings.home)
    found = discovery.shards
    if args.shard:
        unknown = set(args.shard) - {s.key for s in found}
        if unknown:
            raise TleditError(f"unknown shard(s) {sorted(unknown)}; the source has {[s.key for s in found]}")
        found = [s for s in found if s.key in args.shard]
    if not found:
        skipped = "".join(f"; {n.name}: {n.reason}" for n in discovery.not_taken)
        raise TleditError(f"no shard files ({FORMATS_READ}) in source {settings.source!r}{skipped}")
    check_model(settings.model, settings.allow_pickle)
    check_home(settings.home)
    instance = prepare_instance(settings)
    for line in recover_dead_runs(instance):  # a killed run's pool slot would make this run wait forever
        print(f"tledit: {line}", flush=True)
    known = set(instance.get_dynamic_partitions(SHARDS))
    new = [s.key for s in found if s.key not in known]
    if new:
        instance.add_dynamic_partitions(SHARDS, new)
    order = instance.get_dynamic_partitions(SHARDS)
    e = settings.edit
    print(f"tledit: {len(found)} shard(s) from {settings.source} -> {settings.home}  ({e.version()})", flush=True)
    if discovery.not_taken:
        names = ", ".join(n.name for n in discovery.not_taken)
        print(f"tledit: not taken (not corpus files; reasons in the summary): {names}", flush=True)
    defs = build_defs(settings)
    graph = defs.resolve_asset_graph()
    t0 = time.perf_counter()
    by_key = {s.key: s for s in found}
    if args.force:
        work = {s.key: (tuple(chain(graph)), "--force") for s in found}
    else:
        work = {w.key: (w.assets, w.reason) for w in plan(instance, graph, settings, found)}
    todo = [k for k, (assets, _) in work.items() if assets]
    print(f"plan: {len(todo)} of {len(found)} shard(s) missing or stale, {len(found) - len(todo)} up to date", flush=True)
    if settings.engine == "ray" and any(a in PRIOR_STEPS or a.startswith("token_scores_g") for k in todo for a in work[k][0]):
        from tledit_pipeline import cluster  # joined before any run: a bad address or an unreachable lake is one line

        cluster.connect(settings)
    write_not_taken(settings.home, discovery.not_taken)  # once the run can start: a refused run writes nothing
    if getattr(args, "submit", False):
        return submit(instance, graph, work, settings)
    failed: dict[str, str] = {}  # shard key -> what went wrong
    done_assets: list[str] = []
    while work:
        runs = batches(work, order, graph)
        retry: list[str] = []
        for i, b in enumerate(runs, 1):
            t = time.perf_counter()
            what = b.keys[0] if len(b.keys) == 1 else f"{len(b.keys)} shards {b.keys[0]} .. {b.keys[-1]}"
            print(f"[run {i}/{len(runs)}] {what}: materializing {', '.join(b.assets)}  ({b.reason})", flush=True)
            result = _materialize(defs, instance, list(b.assets), b.keys)
            bad = shard_failures(result, b.keys)
            for key, why in bad.items():  # one bad shard does not stop the others
                failed[key] = f"{key}: {why}"
                print(f"[run {i}/{len(runs)}] {key}: FAILED: {why}", file=sys.stderr, flush=True)
            done_assets += [m.asset_key.to_user_string() for m in result.get_asset_materialization_events()]
            if result.success:
                print(f"[run {i}/{len(runs)}] done in {time.perf_counter() - t:.1f}s", flush=True)
            else:  # the run's other shards: planned again, without the failed ones
                retry += [k for k in b.keys if k not in bad]
        if not retry:
            break
        work = {w.key: (w.assets, w.reason) for w in plan(instance, graph, settings, [by_key[k] for k in retry])}
    done = [s.key for s in found if s.key not in failed]
    if done:
        why = health_out_of_date(instance, graph, order, settings.home)
        if why:
            print(f"distribution_health: building DuckDB views and health table  ({why})", flush=True)
            ok, why_not = _materialize_whole_corpus(settings, defs, instance, "distribution_health", len(order))
            if not ok:
                raise RunFailed(why_not)
            done_assets.append("distribution_health")
        else:
            print("distribution_health: up to date", flush=True)
        probe_failed = (
            probe_step(instance, defs, graph, order, settings, done_assets) if settings.collapse.probe and not failed else ""
        )
        probe_failed = probe_failed or (
            reference_step(instance, defs, graph, settings, done_assets) if settings.reference_model else ""
        )
        settings.save()  # used successfully: `make ui`, the sensor and the next run see these settings
        with connect(settings.home, read_only=True) as con:
            summary(con, settings, time.perf_counter() - t0, done, done_assets, discovery.not_taken)
    if failed:
        raise RunFailed(f"{len(failed)} of {len(found)} shard(s) failed:\n  " + "\n  ".join(failed.values()))
    if done and probe_failed:
        raise RunFailed(probe_failed)
    return 0


# --- collapse probe: opt-in (TLEDIT_PROBE=1 / --probe), a step of its own after distribution_health ---


def probe_step(instance, defs, graph, shards: list[str], settings: Settings, done_assets: list[str]) -> str:
    """Train the collapse probe when it is missing or out of date; returns what went wrong ('' if nothing)."""
    from assets.probe import probe_out_of_date

    why = probe_out_of_date(instance, graph, shards)
    if not why:
        print("collapse_probe: up to date", flush=True)
        return ""
    p = settings.collapse
    print(f"collapse_probe: training {p.probe_seeds} seed(s) x {p.probe_steps} steps per corpus variant  ({why})", flush=True)
    ok, why_not = _materialize_whole_corpus(settings, defs, instance, "collapse_probe", len(shards))
    if not ok:  # the corpus is built; the probe's verdict is reported after the summary
        print(f"collapse_probe: FAILED: {why_not}", file=sys.stderr, flush=True)
        return why_not
    done_assets.append("collapse_probe")
    return ""


def reference_step(instance, defs, graph, settings: Settings, done_assets: list[str]) -> str:
    """Score every variant with the reference model when reference_perplexity is missing or out of date (opt-in)."""
    from assets.reference import reference_out_of_date

    why = reference_out_of_date(instance, graph)
    if not why:
        print("reference_perplexity: up to date", flush=True)
        return ""
    print(f"reference_perplexity: scoring every variant with {settings.reference_model}  ({why})", flush=True)
    ok, why_not = _outcome(_materialize(defs, instance, ["reference_perplexity"]), "reference_perplexity")
    if not ok:
        print(f"reference_perplexity: FAILED: {why_not}", file=sys.stderr, flush=True)
        return why_not
    done_assets.append("reference_perplexity")
    return ""


def cmd_probe(args: argparse.Namespace) -> int:
    """The collapse probe's table (mean and sd over seeds per training set), then one JSON line (read-only)."""
    from tledit_pipeline.probe import read_probe, report_lines, summary_json

    settings = Settings.load(home=args.home)
    try:
        table, meta = read_probe(settings.home)
    except FileNotFoundError as exc:
        raise TleditError(str(exc)) from None
    print("\n".join(report_lines(table, meta)))
    print(summary_json(table, meta))
    return 0


# --- the edit sweep: several edit settings from the stored scores, each measured (assets/sweep.py) ---


def _floats(text: str | None, flag: str) -> list[float]:
    if not text:
        return []
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise TleditError(f"{flag} {text!r}: give numbers separated by commas, e.g. 0.5,0.9,0.99") from None


def _switches(text: str | None) -> list[bool]:
    from tledit_pipeline.settings import boolean

    try:
        return [boolean(x) for x in text.split(",") if x.strip()] if text else []
    except ValueError:
        raise TleditError(f"--exclude-originals {text!r}: give off,on (or one of them)") from None


def cmd_sweep(args: argparse.Namespace) -> int:
    """Materialize the sweep's points that are missing or stale (sweep_edited, one range per run), then
    edit_sweep; print the table of the requested points (whole corpus) and one JSON line. Never loads the prior."""
    from assets.definitions import build_defs
    from assets.instance import prepare_instance
    from assets.partitions import SHARDS
    from assets.sweep import SWEEP_POINTS, multi_key, runs, stale_points
    from tledit_pipeline.lake import is_shard_key, partition_file
    from tledit_pipeline.sweep import (
        SWEEP_TABLE,
        point_key,
        read_sweep,
        report_lines,
        summary_json,
        sweep_grid,
        wide_table,
    )

    settings = _settings(args)
    grid = sweep_grid(
        settings.edit,
        _floats(args.thresholds, "--thresholds"),
        top_ps=_floats(args.top_ps, "--top-ps"),
        drop_belows=_floats(args.drop_belows, "--drop-belows"),
        exclude_original=_switches(args.exclude_originals),
    )
    wanted = [point_key(e) for e in grid]
    instance = prepare_instance(settings)
    order = [k for k in instance.get_dynamic_partitions(SHARDS) if is_shard_key(k)]
    lacking = [k for k in order if not partition_file(settings.home, "ngram_profile", k).exists()]
    if not order or lacking:
        what = f"shard(s) {', '.join(lacking[:5])} have no ngram_profile" if lacking else "no shard is registered"
        raise TleditError(f"{what} in {settings.home}: a sweep edits stored scores; run `tledit run` first")
    known = set(instance.get_dynamic_partitions(SWEEP_POINTS))
    new = [p for p in wanted if p not in known]
    if new:
        instance.add_dynamic_partitions(SWEEP_POINTS, new)
    defs = build_defs(settings)
    graph = defs.resolve_asset_graph()
    t0 = time.perf_counter()
    stale = {p: "--force" for p in wanted} if args.force else stale_points(instance, graph, wanted, order)
    print(f"sweep: {len(wanted)} point(s) over {len(order)} shard(s), {len(stale)} missing or stale", flush=True)
    groups = runs(list(stale), instance.get_dynamic_partitions(SWEEP_POINTS))
    for i, group in enumerate(groups, 1):
        keys = [multi_key(group[0], order[0]), multi_key(group[-1], order[-1])]
        what = group[0] if len(group) == 1 else f"{len(group)} points {group[0]} .. {group[-1]}"
        print(f"[sweep {i}/{len(groups)}] {what} x {len(order)} shard(s): sweep_edited  ({stale[group[0]]})", flush=True)
        result = _materialize(defs, instance, ["sweep_edited"], keys if keys[0] != keys[1] else keys[:1])
        if not result.success:
            raise RunFailed(f"sweep_edited: {_root_cause(result)} (run {result.run_id[:8]}, see `make ui`)")
    if groups or not partition_file(settings.home, SWEEP_TABLE, "all").exists():
        ok, why = _outcome(_materialize(defs, instance, [SWEEP_TABLE]), SWEEP_TABLE)
        if not ok:
            raise RunFailed(why)
    health, _ = read_sweep(settings.home)
    rows = wide_table(health, wanted, checks=settings.checks)
    probe = None
    if args.sweep_probe:
        from tledit_pipeline.prior import pick_device
        from tledit_pipeline.probe import prior_codec
        from tledit_pipeline.sweep import probe_points

        p = settings.collapse
        print(
            f"sweep: collapse probe on raw and {len(wanted)} point(s), {p.probe_seeds} seed(s) x {p.probe_steps} steps",
            flush=True,
        )
        codec = prior_codec(settings.model, settings.models_dir, settings.trust_remote_code)
        probe = probe_points(settings.home, wanted, order, p, codec, pick_device(settings.scoring.device))
    print()
    print(
        f"edit sweep, whole corpus ({len(order)} shards; {time.perf_counter() - t0:.1f}s; table edit_sweep in {settings.duckdb_path})"
    )
    print("\n".join(report_lines(rows, probe)))
    print(summary_json(rows, probe))
    return 0


def submit(instance, asset_graph, work: dict[str, tuple[tuple[str, ...], str]], settings: Settings) -> int:
    """Hand the plan to the instance as one asset backfill: the daemon's backfill loop and run launcher run
    it (`make ui` or `dagster-daemon run` locally, the K8sRunLauncher on a cluster), one run per range of
    shards as each asset's backfill policy says, under the instance's run-queue limits."""
    import dagster as dg

    from assets.dagster_internals import AssetGraphSubset, AssetKeyPartitionKey, PartitionBackfill, make_new_backfill_id
    from assets.partitions import SHARDS
    from assets.staleness import HEALTH, health_out_of_date

    targets = {AssetKeyPartitionKey(dg.AssetKey(a), key) for key, (assets, _) in work.items() for a in assets}
    if targets or health_out_of_date(instance, asset_graph, instance.get_dynamic_partitions(SHARDS), settings.home):
        targets.add(AssetKeyPartitionKey(HEALTH, None))
    if not targets:
        print("nothing to submit: every shard and distribution_health are up to date", flush=True)
        return 0
    settings.save()  # the daemon's code location loads the data directory's settings: these
    backfill_id = make_new_backfill_id()
    shards_n = len({t.partition_key for t in targets if t.partition_key})
    instance.add_backfill(
        PartitionBackfill.from_asset_graph_subset(
            backfill_id=backfill_id,
            backfill_timestamp=time.time(),
            tags={"tledit/submitted_by": "tledit run --submit"},
            dynamic_partitions_store=instance,
            asset_graph_subset=AssetGraphSubset.from_asset_partition_set(targets, asset_graph),
            title=f"tledit run: {shards_n} shard(s)",
            description=f"missing or stale per `tledit run` ({settings.edit.version()})",
            # Each range's chain in one process (the prior loads once per run, not once per step process);
            # the run queue's max_concurrent_runs runs ranges side by side, one per core.
            run_config=SUBMITTED_RUN_CONFIG,
        )
    )
    print(
        f"submitted backfill {backfill_id}: {shards_n} shard(s){' and distribution_health' if HEALTH in {t.asset_key for t in targets} else ''}",
        flush=True,
    )
    print(
        f"  the daemon runs it (make ui, or dagster-daemon run with DAGSTER_HOME={settings.instance_dir});"
        " progress: http://127.0.0.1:3000/runs/b/" + backfill_id,
        flush=True,
    )
    return 0


def summary(
    con, settings: Settings, elapsed: float, keys: list[str], materialized: list[str] | None = None, not_taken=()
) -> None:
    """What a person wants after a run: counts, shares, and where to look next."""
    from tledit_pipeline.summary import not_taken_lines, run_totals

    t = run_totals(con, keys)
    scored, eligible, changed, deleted = max(t.scored, 1), t.eligible, t.changed, t.deleted
    print()
    print("ToEdit run complete")
    print(f"  shards          {len(keys)}")
    for line in not_taken_lines(not_taken):
        print(line)
    print(f"  documents       {t.documents:,} accepted, {t.rejected:,} rejected (see view rejected_documents)")
    print(f"  tokens          {t.tokens:,}")
    print(f"  eligible share  {eligible / scored:.2%}  (P >= {settings.edit.threshold})")
    print(f"  changed share   {changed / scored:.2%}  ({changed:,} tokens; {changed / max(eligible, 1):.1%} of eligible)")
    if settings.edit.drop_below > 0:
        print(f"  deleted share   {deleted / scored:.2%}  ({deleted:,} tokens with P < {settings.edit.drop_below})")
    if settings.generations > 1:
        print(
            f"  generations     {settings.generations}  (edited, "
            + ", ".join(f"edited_g{g}" for g in range(2, settings.generations + 1))
            + ": `tledit health`)"
        )
    if materialized is not None:
        counts = {a: materialized.count(a) for a in dict.fromkeys(materialized)}
        did = ", ".join(f"{a} x{n}" if n > 1 else a for a, n in counts.items()) or "nothing (all up to date)"
        print(f"  materialized    {did}")
    print(f"  time            {elapsed:.1f}s")
    print(f"  DuckDB          {settings.duckdb_path}")
    print(
        "                  views raw_corpus, token_scores, edited_corpus, synthetic_corpus, ngram_profile;"
        " table distribution_health (tledit health)"
    )
    print(f"  settings        {settings.home / SETTINGS_FILE}")
    print(f"  UI              make ui   (dagster dev, DAGSTER_HOME={settings.instance_dir}) -> http://127.0.0.1:3000")


def cmd_health(args: argparse.Namespace) -> int:
    """The '__all__' rows of distribution_health: metrics as rows, variants as columns (read-only)."""
    from tledit_pipeline.database import connect
    from tledit_pipeline.summary import corpus_health

    settings = Settings.load(home=args.home)
    try:
        con = connect(settings.home, read_only=True)
    except FileNotFoundError as exc:
        raise TleditError(str(exc)) from None
    with con:
        wide = corpus_health(con, str(settings.duckdb_path))
    cols = wide.columns[1:]
    width = max([len(m) for m in wide["metric"].to_list()] + [6])
    print(f"distribution_health, whole corpus ({settings.duckdb_path})")
    print(f"{'metric':<{width}}  " + "  ".join(f"{c:>12}" for c in cols))
    for row in wide.iter_rows(named=True):
        cells = ["" if row[c] is None else f"{row[c]:.4f}" for c in cols]
        print(f"{row['metric']:<{width}}  " + "  ".join(f"{x:>12}" for x in cells))
    return 0


def cmd_preview(args: argparse.Namespace) -> int:
    """One text scored and edited with the current settings, token by token (nothing is stored)."""

    from tledit_pipeline.preview import preview, render
    from tledit_pipeline.prior import cached_prior, check_model

    if (args.text is None) == (args.file is None):
        raise TleditError("give the text to preview, or --file F (one of the two)")
    if args.file is not None:
        try:
            text = Path(args.file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise TleditError(f"cannot read {args.file}: {exc}") from None
    else:
        text = args.text
    if not text.strip():
        raise TleditError("nothing to preview: the text is empty")
    settings = _settings(args)
    check_model(settings.model, settings.allow_pickle)
    prior = cached_prior(settings.model, str(settings.models_dir), settings.scoring.device, settings.scoring.dtype)
    colour = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
    print(f"prior {settings.model}  ({settings.edit.version()})")
    print(render(preview(prior, text, settings), settings.edit.threshold, colour=colour))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """The edited corpus in the source's schema, one file per shard (rejected rows are not exported)."""

    from tledit_pipeline.export import export_shard
    from tledit_pipeline.lake import check_home
    from tledit_pipeline.source import discover_shards
    from tledit_pipeline.storage import location

    settings = _settings(args)
    if not 1 <= args.generation <= settings.generations:
        raise TleditError(
            f"--generation {args.generation}: the runs of this data directory make generations 1..{settings.generations} "
            "(run `tledit run --generations N` first)"
        )
    keys = [s.key for s in discover_shards(settings.source, settings.home)]
    if args.shard:
        unknown = set(args.shard) - set(keys)
        if unknown:
            raise TleditError(f"unknown shard(s) {sorted(unknown)}; the source has {keys}")
        keys = [k for k in keys if k in args.shard]
    out = location(args.out)  # a folder, or an object-store prefix (s3://bucket/prefix)
    check_home(out)
    total = 0
    for key in keys:
        path, rows = export_shard(settings.home, key, out, args.format, settings.edit.version(), generation=args.generation)
        total += rows
        print(f"{key}: {rows:,} documents -> {path}", flush=True)
    which = "" if args.generation == 1 else f"generation {args.generation} "
    print(
        f"exported {total:,} {which}edited documents from {len(keys)} shard(s) to {out} ({args.format}; "
        f"text field {settings.text_field!r}; rejected rows are not exported)"
    )
    return 0


def cmd_shards(args: argparse.Namespace) -> int:
    from tledit_pipeline.source import discover_source

    settings = _settings(args)
    discovery = discover_source(settings.source, settings.home)
    for s in discovery.shards:
        print(f"{s.key}\t{s.path}")
    for n in discovery.not_taken:  # on stderr: stdout stays the list of shards
        print(f"not taken\t{n.location}\t{n.reason}", file=sys.stderr)
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    """`dagster dev` on the run's instance and settings (what `make ui` calls)."""
    from assets.instance import prepare_instance

    settings = _settings(args)
    prepare_instance(settings)
    os.environ["TLEDIT_HOME"] = str(settings.home)
    dagster = Path(sys.executable).parent / "dagster"
    workspace = Path(__file__).resolve().parent.parent / "workspace.yaml"
    os.chdir(workspace.parent)
    os.execv(str(dagster), [str(dagster), "dev", "-w", str(workspace), *args.dagster_args])


def cmd_move_instance(args: argparse.Namespace) -> int:
    """Move this data directory's local SQLite instance (runs, events, shards) to PostgreSQL, then use it."""
    import dagster as dg

    from assets.instance import copy_history, is_shared, prepare_instance

    settings = _settings(args)
    if not settings.dagster_postgres_url:
        raise TleditError("move-instance needs the PostgreSQL instance: --dagster-postgres-url or TLEDIT_DAGSTER_POSTGRES_URL")
    if not (settings.instance_dir / "dagster.yaml").exists():
        raise TleditError(f"no Dagster instance at {settings.instance_dir} to move")
    with dg.DagsterInstance.from_config(str(settings.instance_dir)) as source:
        if is_shared(source):
            raise TleditError(f"the instance at {settings.instance_dir} is not a local SQLite one (already moved?)")
        target = prepare_instance(settings)  # dagster.yaml now names PostgreSQL
        runs, events = copy_history(source, target)
    settings.save()  # later runs, `tledit ui` and the daemon use PostgreSQL (the URL is remembered, never the password)
    print(f"tledit: moved {runs} run(s), {events} event(s) to {settings.dagster_postgres_url}")
    print(f"tledit: the SQLite files stay in {settings.instance_dir} (history/, schedules/; remove them once satisfied)")
    return 0


def quiet() -> None:
    """The terminal gets tledit's progress lines and warnings, not the libraries' chatter."""
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    logging.getLogger("tledit").setLevel(logging.INFO)
    for name in ("transformers", "datasets", "huggingface_hub"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    # Dagster's preview/beta markers on features used on purpose (matched by text: importing Dagster here would
    # slow every command); every other warning is shown, once per place.
    warnings.filterwarnings("ignore", message=r".* is currently in (preview|beta)")
    warnings.filterwarnings("ignore", message=DUCKDB_ARROW_COPY)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tledit", description="Token-Level Editing (ToEdit) as a Dagster pipeline")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, fn, help_ in (
        ("run", cmd_run, "materialize what is missing or stale (new shards, changed files, changed settings)"),
        ("preview", cmd_preview, "show one text's token probabilities and its edit under the current settings"),
        ("export", cmd_export, "write the edited corpus in the source's schema, one file per shard"),
        ("shards", cmd_shards, "list the shards found at the source"),
        ("ui", cmd_ui, "open the Dagster UI (dagster dev) on this data directory's instance"),
        ("health", cmd_health, "print the whole corpus's distribution health (raw, edited, synthetic)"),
        ("probe", cmd_probe, "print the collapse probe's held-out perplexities (after `tledit run --probe`) and a JSON line"),
        (
            "move-instance",
            cmd_move_instance,
            "copy this data directory's local SQLite instance to PostgreSQL and use it from then on",
        ),
        ("sweep", cmd_sweep, "edit the corpus at several thresholds from its stored scores (no model) and measure each"),
    ):
        p = sub.add_parser(name, help=help_)
        p.set_defaults(fn=fn)
        add_setting_flags(p, name)
        if name == "ui":
            p.add_argument("dagster_args", nargs="*", help="passed to `dagster dev` (after --)")
        elif name == "preview":
            p.add_argument("text", nargs="?", help="the text to preview")
            p.add_argument("--file", help="preview this file's text instead")
        elif name == "export":
            p.add_argument("--out", required=True, help="output folder (one file per shard)")
            p.add_argument(
                "--format",
                choices=["source", "jsonl.gz", "parquet"],
                default="source",
                help="source: each shard in its own format and compression (default); or one format for every shard",
            )
            p.add_argument("--shard", action="append", help="only this shard key (repeatable)")
            p.add_argument(
                "--generation",
                type=int,
                default=1,
                help="which generation's edited text (1: edited_corpus; g: edited_corpus_g{g}; default 1)",
            )
        elif name == "sweep":
            p.add_argument(
                "--thresholds", required=True, help="thresholds p to sweep, comma-separated (e.g. 0.5,0.7,0.9,0.95,0.99)"
            )
            p.add_argument("--top-ps", help="also sweep the nucleus mass: each point with strategy top_p at each of these")
            p.add_argument("--drop-belows", help="also sweep low-probability deletion q (each below every threshold)")
            p.add_argument("--exclude-originals", help="also sweep exclude-original: off,on")
            p.add_argument("--force", action="store_true", help="re-materialize every requested point")
            p.add_argument(
                "--probe",
                dest="sweep_probe",
                action="store_true",
                help="also train the collapse probe on raw and every point (the data directory's probe settings) and "
                "print its held-out perplexity with a 95%% interval",
            )
        elif name == "run":
            p.add_argument("--shard", action="append", help="only this shard key (repeatable)")
            p.add_argument("--force", action="store_true", help="re-materialize every shard, not only missing or stale ones")
            p.add_argument(
                "--submit",
                action="store_true",
                help="hand the plan to the instance as a backfill that the daemon runs (make ui / dagster-daemon), and return",
            )
    args = parser.parse_args(argv)
    quiet()
    try:
        return args.fn(args)
    except TleditError as exc:
        print(f"tledit: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
