"""Many shards per run, lineage per shard: single-run backfills over ranges of shards, the plan as runs, the
batched event log, and distribution_health rebuilt from stored per-shard rows (one changed shard redoes one)."""

import dagster as dg
import duckdb
import pytest

from assets import staleness
from assets.cli import main
from assets.dagster_internals import SqliteEventLogStorage
from assets.definitions import build_defs
from assets.partitions import PER_SHARD, SHARDS_PER_RUN
from assets.staleness import Batch, batches
from tests.conftest import THREE_SHARDS as SHARDS
from tests.conftest import plan_from_indexes, write_jsonl
from tledit_pipeline.database import connect
from tledit_pipeline.settings import Settings
from tledit_pipeline.source import discover_shards


def _instance(home):
    return dg.DagsterInstance.from_config(str(home / "dagster_home"))


def _runs_with(instance, asset):
    return [r for r in instance.get_runs() if r.asset_selection and dg.AssetKey(asset) in r.asset_selection]


def _first_run(tmp_path, source, model, monkeypatch):
    """`tledit run` of every shard from nothing (a short synthetic baseline); returns the data directory."""
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "unused"))
    home = tmp_path / "home"
    args = ["run", "--home", str(home), "--source", str(source), "--model", str(model)]
    assert main([*args, "--synthetic-sample", "1.0", "--max-new-tokens", "8"]) == 0
    return home


@pytest.mark.slow
def test_one_run_per_range_with_lineage_per_shard(tmp_path, three_shards, tiny_model_dir, capsys, monkeypatch):
    home = _first_run(tmp_path, three_shards, tiny_model_dir, monkeypatch)
    assert "[run 1/1] 3 shards s0 .. s2: materializing raw_corpus, token_scores" in capsys.readouterr().out
    instance = _instance(home)
    graph = build_defs(Settings.load(env={}, home=str(home))).resolve_asset_graph()
    (run,) = _runs_with(instance, "raw_corpus")  # the whole chain of all three shards in one run
    assert run.tags["dagster/asset_partition_range_start"] == "s0" and run.tags["dagster/asset_partition_range_end"] == "s2"
    for asset in PER_SHARD:  # still one materialization per shard, each with its own metadata
        records = instance.fetch_materializations(dg.AssetKey(asset), limit=10).records
        assert sorted(r.partition_key for r in records) == SHARDS
        assert {r.run_id for r in records} == {run.run_id}
        code = graph.get(dg.AssetKey(asset)).code_version
        assert all(r.asset_materialization.tags["dagster/code_version"] == code for r in records)
    raw = {
        r.partition_key: r.asset_materialization.metadata
        for r in instance.fetch_materializations(dg.AssetKey("raw_corpus"), limit=10).records
    }
    assert {k: m["source_file"].value.rsplit("/", 1)[1] for k, m in raw.items()} == {k: f"{k}.jsonl" for k in SHARDS}
    assert all(m["documents"].value == 2 for m in raw.values())
    # Each shard's check verdicts are recorded per shard, in the same run.
    evaluations = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)
    by_check: dict[str, set] = {}
    for e in evaluations:
        data = e.get_dagster_event().event_specific_data
        by_check.setdefault(data.check_name, set()).add(data.partition)
    assert by_check == {
        name: set(SHARDS)
        for name in (
            "every_token_scored",
            "every_raw_document_edited",
            "edited_keeps_the_tail",
            "synthetic_collapse_signal",
        )
    }

    # A threshold backfill: one run for edited_corpus and ngram_profile of every shard, lineage per shard.
    assert main(["run", "--home", str(home), "--threshold", "0.5"]) == 0
    out = capsys.readouterr().out
    assert (
        "[run 1/1] 3 shards s0 .. s2: materializing edited_corpus, ngram_profile  (edited_corpus has a new code version)" in out
    )
    (backfill,) = _runs_with(instance, "edited_corpus")[:1]
    edited = instance.fetch_materializations(dg.AssetKey("edited_corpus"), limit=3).records
    assert {r.run_id for r in edited} == {backfill.run_id} and sorted(r.partition_key for r in edited) == SHARDS
    assert all("p=0.5," in r.asset_materialization.metadata["edit_settings"].value for r in edited)
    # And then nothing is stale: the next run plans nothing.
    assert main(["run", "--home", str(home)]) == 0
    assert "plan: 0 of 3 shard(s) missing or stale" in capsys.readouterr().out


@pytest.mark.slow
def test_one_changed_shard_redoes_its_own_health_rows_only(tmp_path, three_shards, tiny_model_dir, capsys, monkeypatch):
    from tledit_pipeline.database import refresh_views
    from tledit_pipeline.health import build_health_table
    from tledit_pipeline.lake import partition_file

    home = _first_run(tmp_path, three_shards, tiny_model_dir, monkeypatch)
    stamps = {k: partition_file(home, "shard_health", k).stat().st_mtime_ns for k in SHARDS}
    write_jsonl(three_shards / "s1.jsonl", [{"text": "Out, damned spot! Out, I say! One, two: why, then, 'tis time to do't."}])
    # The plan reads the event log's indexes (code versions, source stamps), not the records; with a storage
    # that does not index them it reads the records and plans the same.
    settings = Settings.load(env={}, home=str(home))
    graph = build_defs(settings).resolve_asset_graph()
    found = discover_shards(settings.source, settings.home)
    instance = _instance(home)
    indexed = plan_from_indexes(instance, graph, settings, found, monkeypatch)
    with monkeypatch.context() as m:
        m.setattr(type(instance.event_log_storage), "get_asset_tags_to_index", SqliteEventLogStorage.get_asset_tags_to_index)
        assert staleness.plan(instance, graph, settings, found) == indexed
    capsys.readouterr()
    assert main(["run", "--home", str(home)]) == 0
    assert "[run 1/1] s1: materializing raw_corpus" in capsys.readouterr().out
    after = {k: partition_file(home, "shard_health", k).stat().st_mtime_ns for k in SHARDS}
    assert after["s0"] == stamps["s0"] and after["s2"] == stamps["s2"] and after["s1"] != stamps["s1"]

    # The table built from stored rows is the table computed from scratch over the whole lake.
    con = connect(home)
    stored = con.execute("SELECT variant, shard, metric, value FROM distribution_health ORDER BY ALL").fetchall()
    con.close()
    scratch = duckdb.connect()
    refresh_views(scratch, home, SHARDS)
    full = build_health_table(scratch)
    want = {(v, s, m): x for v, s, m, x in full.iter_rows()}
    got = {(v, s, m): x for v, s, m, x in stored if m not in ("scored_tokens", "edit_scored_tokens")}
    assert got.keys() == want.keys()
    assert all(got[k] == pytest.approx(want[k], rel=1e-12, abs=1e-12) for k in want)
    assert {(v, s) for v, s, m, _ in stored if m == "rare_bigrams"} >= {("raw", k) for k in [*SHARDS, "__all__"]}


def test_the_plan_becomes_contiguous_ranges_of_at_most_the_policy_size(tmp_path, small_source, tiny_model_dir):
    graph = build_defs(Settings(home=tmp_path, source=str(small_source), model=str(tiny_model_dir))).resolve_asset_graph()
    order = [f"k{i:04d}" for i in range(SHARDS_PER_RUN + 10)]
    chain, edit = tuple(PER_SHARD), ("edited_corpus", "ngram_profile")
    work = {k: (chain, "raw_corpus missing") for k in order}
    work["k0003"] = ((), "")  # up to date: splits the range
    work["k0005"] = (edit, "edited_corpus has a new code version")
    runs = batches(work, order, graph)
    assert runs[0] == Batch(chain, ["k0000", "k0001", "k0002"], "raw_corpus missing")
    assert runs[1].keys == ["k0004"] and runs[2].keys[0] == "k0006"
    assert [len(r.keys) for r in runs[2:4]] == [SHARDS_PER_RUN, SHARDS_PER_RUN + 10 - 6 - SHARDS_PER_RUN]
    assert runs[-1] == Batch(edit, ["k0005"], "edited_corpus has a new code version")
