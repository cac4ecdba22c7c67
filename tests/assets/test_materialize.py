"""Materialize every asset for one partition, then the health asset, against a temporary instance."""

import dagster as dg
import pytest

from assets.checks import CHECKS
from assets.definitions import PER_SHARD, build_assets, build_defs, build_resources
from assets.partitions import SHARDS
from tledit_pipeline.database import connect
from tledit_pipeline.prior import pick_dtype
from tledit_pipeline.settings import Settings


@pytest.fixture
def settings(tmp_path, small_source, tiny_model_dir):
    # The whole shard in the baseline (default: a quarter), short continuations: a quick test.
    return Settings(home=tmp_path / "home", source=str(small_source), model=str(tiny_model_dir)).with_overrides(
        synthetic_sample=1.0, max_new_tokens=24
    )


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
        assert set(checks) == {
            "every_raw_document_edited",
            "every_token_scored",
            "edited_keeps_the_tail",
            "synthetic_collapse_signal",
        }
        assert all(c.passed for name, c in checks.items() if name != "synthetic_collapse_signal")
        # The baseline's check only warns: its verdict never fails the run, and it shows the numbers.
        collapse = checks["synthetic_collapse_signal"]
        assert collapse.severity == dg.AssetCheckSeverity.WARN
        assert {"tail_coverage", "js_divergence_vs_raw", "raw_matched/top64_share"} <= set(collapse.metadata)

        mats = {m.asset_key.to_user_string(): m for m in result.get_asset_materialization_events()}
        shares = mats["edited_corpus"].materialization.metadata  # reported with the shard's edit, not as a check
        assert 0 <= shares["changed_share"].value <= shares["eligible_share"].value <= 1
        assert set(mats) == set(PER_SHARD)
        scores_md = mats["token_scores"].materialization.metadata
        assert scores_md["tokens"].value > 300 and scores_md["dtype"].value == pick_dtype("cpu")  # auto: bf16 where native
        assert "P >= 0.99" in scores_md["probability_histogram"].value

        health = run(settings, instance, ["distribution_health"])
        assert health.success
        md = health.get_asset_materialization_events()[0].materialization.metadata
        assert "| metric |" in md["overall"].value and "█" in md["probability_histogram"].value
        for chart in ("rank_frequency", "perplexity"):
            assert "](data:image/svg+xml;base64," in md[chart].value
        assert "synthetic:tail_coverage" in md["per_shard"].value
        overall = {c.check_name: c for c in health.get_asset_check_evaluations()}
        assert overall["edited_health_overall"].passed
        assert overall["synthetic_collapse_overall"].severity == dg.AssetCheckSeverity.WARN

        # The lineage is recorded in the instance, per partition.
        assert instance.get_latest_materialization_event(dg.AssetKey("edited_corpus")).dagster_event.partition == "beta"

    con = connect(settings.home)
    raw = con.execute("SELECT count(*) FROM raw_corpus").fetchone()[0]
    edited = con.execute("SELECT count(*) FROM edited_corpus").fetchone()[0]
    assert raw == edited == 2
    assert (
        con.execute(
            "SELECT count(*) FROM edited_corpus e JOIN raw_corpus r USING (shard, doc_id) WHERE e.n_changed = 0 AND e.text <> r.text"
        ).fetchone()[0]
        == 0
    )
    # Every token is scored, the first too: the prior reads each document after its document-start token.
    assert con.execute("SELECT count(*) FROM token_scores WHERE logprob IS NULL").fetchone()[0] == 0
    cols = [r[0] for r in con.execute("DESCRIBE raw_corpus").fetchall()]
    assert cols[:3] == ["shard", "doc_id", "text"] and {"lang", "n"} <= set(cols)
    have = {
        v: {
            m
            for (m,) in con.execute(
                "SELECT metric FROM distribution_health WHERE shard = '__all__' AND variant = ?", [v]
            ).fetchall()
        }
        for v in ("raw", "edited", "synthetic", "raw_matched")
    }
    ngram = {
        "tail_coverage",
        "tail_mass",
        "distinct_1",
        "distinct_2",
        "distinct_3",
        "top64_share",
        "hashed_entropy",
        "hashed_effective_buckets",
        "js_divergence_vs_raw",
    }
    probs = {f"prob_bin_{i:02d}" for i in range(10)} | {"prob_bin_099"}
    ppl = {"ppl_p10", "ppl_p50", "ppl_p90"}
    assert ngram | probs | ppl <= have["raw"]
    assert ngram | {"eligible_share", "changed_share"} <= have["edited"]
    assert ngram | probs | ppl <= have["synthetic"]
    assert ngram | ppl <= have["raw_matched"]
    value = dict(
        ((v, m), x)
        for v, m, x in con.execute("SELECT variant, metric, value FROM distribution_health WHERE shard = '__all__'").fetchall()
    )
    assert value[("raw", "tail_coverage")] == 1.0 and value[("raw", "js_divergence_vs_raw")] == 0.0
    # The baseline covers every document of the shard (default sample 1.0); its rows match raw's ids.
    assert con.execute("SELECT count(*) FROM synthetic_corpus s JOIN raw_corpus r USING (shard, doc_id)").fetchone()[0] == raw


def test_edit_settings_are_in_the_code_version(settings):
    def version(s):
        defs = build_defs(s)
        return defs.resolve_assets_def("edited_corpus").code_versions_by_key[dg.AssetKey("edited_corpus")]

    base = version(settings)
    assert version(settings.with_overrides(threshold=0.95)) != base
    assert version(settings.with_overrides(beta=1.0)) != base
    assert version(settings.with_overrides(seed=7)) != base
    assert version(settings.with_overrides(window=1024)) == base  # scoring settings belong to token_scores
    assert version(settings.with_overrides(prefix_tokens=8)) == base  # the baseline's settings belong to synthetic


def test_synthetic_settings_are_in_its_code_version(settings):
    def version(s):
        return build_defs(s).resolve_assets_def("synthetic_corpus").code_versions_by_key[dg.AssetKey("synthetic_corpus")]

    base = version(settings)
    for change in (
        {"prefix_tokens": 8},
        {"max_new_tokens": 64},
        {"synthetic_sample": 0.5},
        {"synthetic_seed": 3},
        {"synthetic_temperature": 0.7},
        {"synthetic_top_p": 0.9},
        {"synthetic_segment": 64},
    ):
        assert version(settings.with_overrides(**change)) != base, change
    assert version(settings.with_overrides(synthetic_batch=4)) == base  # batch size does not change the samples
    assert version(settings.with_overrides(threshold=0.5)) == base


def test_bad_shard_fails_with_a_clear_message(settings, small_source):
    (small_source / "broken.jsonl.gz").write_bytes(b"\x1f\x8b\x08\x00 not gzip data")  # unreadable as a whole
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(SHARDS, ["broken"])
        result = dg.materialize(
            build_assets(settings),
            selection=["raw_corpus"],
            partition_key="broken",
            instance=instance,
            resources=build_resources(settings),
            raise_on_error=False,
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
            [*build_assets(settings), *CHECKS],
            selection=["edited_corpus"],
            partition_key="alpha",
            instance=instance,
            resources=build_resources(settings),
            raise_on_error=False,
        )
        assert not result.success
        error = next(e for e in result.all_events if e.is_step_failure).step_failure_data.error
        while error.cause is not None:
            error = error.cause
        assert "token_scores were computed from other raw_corpus bytes" in error.message


def test_a_bad_edit_is_stopped_by_the_blocking_health_check(settings):
    """Thresholds a user sets: an edit that changes anything at all fails max_js_divergence = 0."""
    bad = settings.with_overrides(threshold=0.01, max_js_divergence=0.0, min_tail_coverage=1.0)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(SHARDS, ["beta"])
        result = dg.materialize(
            [*build_assets(bad), *CHECKS],
            selection=PER_SHARD,
            partition_key="beta",
            instance=instance,
            resources=build_resources(bad),
            raise_on_error=False,
        )
        checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
        verdict = checks["edited_keeps_the_tail"]
        assert not verdict.passed and verdict.severity == dg.AssetCheckSeverity.ERROR
        assert verdict.metadata["js_divergence_vs_raw"].value > 0.0
        assert verdict.metadata["max_js_divergence"].value == 0.0
        assert not result.success  # blocking: the run stops here
