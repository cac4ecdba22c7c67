"""Materialize every asset for one partition, then the health asset, against a temporary instance."""

import dagster as dg
import duckdb
import pytest

from assets.definitions import PER_SHARD, build_assets, build_defs, build_resources
from assets.checks import CHECKS
from assets.partitions import SHARDS
from tledit_pipeline.settings import Settings


@pytest.fixture
def settings(tmp_path, small_source, tiny_model_dir):
    return Settings(home=tmp_path / "home", source=str(small_source), model=str(tiny_model_dir))


def run(settings, instance, selection, partition_key=None):
    return dg.materialize(
        [*build_assets(settings), *CHECKS],
        selection=selection,
        partition_key=partition_key,
        instance=instance,
        resources=build_resources(settings),
    )


def test_whole_graph_for_one_partition(settings):
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(SHARDS, ["alpha", "beta"])
        result = run(settings, instance, PER_SHARD, "beta")
        assert result.success
        checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
        assert set(checks) == {"every_raw_document_edited", "edit_shares", "every_token_scored"}
        assert all(c.passed for c in checks.values())
        shares = checks["edit_shares"].metadata
        assert 0 <= shares["changed_share"].value <= shares["eligible_share"].value <= 1

        mats = {m.asset_key.to_user_string(): m for m in result.get_asset_materialization_events()}
        assert set(mats) == set(PER_SHARD)
        scores_md = mats["token_scores"].materialization.metadata
        assert scores_md["tokens"].value > 300 and scores_md["dtype"].value == "float32"
        assert "P >= 0.99" in scores_md["probability_histogram"].value

        health = run(settings, instance, ["distribution_health"])
        assert health.success
        md = health.get_asset_materialization_events()[0].materialization.metadata
        assert "| metric |" in md["overall"].value and "█" in md["probability_histogram"].value

        # The lineage is recorded in the instance, per partition.
        assert instance.get_latest_materialization_event(dg.AssetKey("edited_corpus")).dagster_event.partition == "beta"

    con = duckdb.connect(str(settings.duckdb_path), read_only=True)
    raw = con.execute("SELECT count(*) FROM raw_corpus").fetchone()[0]
    edited = con.execute("SELECT count(*) FROM edited_corpus").fetchone()[0]
    assert raw == edited == 2
    assert con.execute(
        "SELECT count(*) FROM edited_corpus e JOIN raw_corpus r USING (shard, doc_id) WHERE e.n_changed = 0 AND e.text <> r.text"
    ).fetchone()[0] == 0
    assert con.execute("SELECT count(*) FROM token_scores WHERE pos > 0 AND logprob IS NULL").fetchone()[0] == 0
    assert con.execute("SELECT count(*) FROM token_scores WHERE pos = 0 AND logprob IS NOT NULL").fetchone()[0] == 0
    cols = [r[0] for r in con.execute("DESCRIBE raw_corpus").fetchall()]
    assert cols[:3] == ["shard", "doc_id", "text"] and {"lang", "n"} <= set(cols)
    metrics = {r[0] for r in con.execute("SELECT DISTINCT metric FROM distribution_health").fetchall()}
    assert {"distinct_1", "distinct_2", "distinct_3", "top64_share", "eligible_share", "changed_share", "prob_bin_099"} <= metrics
    assert con.execute("SELECT count(DISTINCT variant) FROM distribution_health WHERE shard = '__all__'").fetchone()[0] == 2


def test_edit_settings_are_in_the_code_version(settings):
    def version(s):
        defs = build_defs(s)
        return defs.resolve_assets_def("edited_corpus").code_versions_by_key[dg.AssetKey("edited_corpus")]

    base = version(settings)
    assert version(settings.with_overrides(threshold=0.95)) != base
    assert version(settings.with_overrides(beta=1.0)) != base
    assert version(settings.with_overrides(seed=7)) != base
    assert version(settings.with_overrides(window=1024)) == base  # scoring settings belong to token_scores


def test_bad_shard_fails_with_a_clear_message(settings, small_source):
    (small_source / "broken.jsonl.gz").write_bytes(b"\x1f\x8b\x08\x00 not gzip data")  # unreadable as a whole
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(SHARDS, ["broken"])
        result = dg.materialize(
            build_assets(settings), selection=["raw_corpus"], partition_key="broken", instance=instance,
            resources=build_resources(settings), raise_on_error=False,
        )
        assert not result.success
        failure = next(e for e in result.all_events if e.is_step_failure)
        error = failure.step_failure_data.error
        while error.cause is not None:
            error = error.cause
        assert "broken.jsonl.gz" in error.message and "'broken'" in error.message


def test_edit_refuses_scores_of_other_raw_bytes(settings, small_source):
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(SHARDS, ["alpha"])
        assert run(settings, instance, PER_SHARD, "alpha").success
        # The source changes and raw_corpus is refreshed, but token_scores is not.
        (small_source / "alpha.jsonl").write_text('{"text": "Entirely different words now."}\n')
        assert run(settings, instance, ["raw_corpus"], "alpha").success
        result = dg.materialize(
            [*build_assets(settings), *CHECKS], selection=["edited_corpus"], partition_key="alpha",
            instance=instance, resources=build_resources(settings), raise_on_error=False,
        )
        assert not result.success
        error = next(e for e in result.all_events if e.is_step_failure).step_failure_data.error
        while error.cause is not None:
            error = error.cause
        assert "token_scores were computed from other raw_corpus bytes" in error.message
