"""A launch whose resource settings differ from the definitions' is refused, so the recorded code version
always describes the bytes in the lake (what the UI's launchpad does, through Dagster's own API)."""

import dagster as dg
import pytest

from assets.definitions import build_defs
from assets.edited import code_version as edited_version
from assets.lineage import LineageError, run_settings
from assets.partitions import SHARDS
from assets.resources import TleditResource
from tledit_pipeline.lake import partition_file, partition_meta
from tledit_pipeline.settings import Settings


def test_run_settings_name_only_what_moves_the_version(tmp_path):
    defined = Settings(home=tmp_path / "a")
    # A different home, source or check bound is not part of edited_corpus's version: allowed.
    other = TleditResource.from_settings(defined.with_overrides(home=str(tmp_path / "b"), max_js_divergence=0.5))
    assert run_settings(other, "edited_corpus", defined, edited_version).home == tmp_path / "b"
    launched = TleditResource.from_settings(defined.with_overrides(beta=2.0, min_tail_coverage=0.5))
    with pytest.raises(LineageError) as err:
        run_settings(launched, "edited_corpus", defined, edited_version)
    msg = str(err.value)
    assert "\n" not in msg and "beta=2.0 (definitions: 1.5)" in msg and "TLEDIT_BETA=2.0" in msg
    assert "min_tail_coverage" not in msg


def _launch(defs, instance, asset: str, key: str, config: dict | None = None):
    """What the launchpad does: the asset job, one partition, the resource's config from the run config."""
    job = defs.resolve_implicit_global_asset_job_def()
    run_config = {"resources": {"tledit": {"config": config}}} if config else None
    return job.execute_in_process(
        instance=instance,
        partition_key=key,
        asset_selection=[dg.AssetKey(asset)],
        run_config=run_config,
        raise_on_error=False,
    )


def test_launchpad_threshold_change_is_refused_and_records_nothing(tmp_path, small_source, tiny_model_dir):
    settings = Settings(home=tmp_path / "home", source=str(small_source), model=str(tiny_model_dir))
    defs = build_defs(settings)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(SHARDS, ["alpha"])
        for asset in ("raw_corpus", "token_scores", "edited_corpus"):
            assert _launch(defs, instance, asset, "alpha").success
        before = partition_file(settings.home, "edited_corpus", "alpha").read_bytes()
        recorded = instance.get_latest_materialization_event(dg.AssetKey("edited_corpus"))

        result = _launch(defs, instance, "edited_corpus", "alpha", {**settings.flat(), "threshold": 0.9})
        assert not result.success
        failure = next(e for e in result.all_events if e.is_step_failure)
        error = failure.step_failure_data.error
        while error.cause is not None:  # as `tledit run` prints it: the innermost error's line
            error = error.cause
        text = f"{error.cls_name}: {error.message}"
        assert "LineageError" in text and "threshold=0.9 (definitions: 0.99)" in text and "TLEDIT_THRESHOLD=0.9" in text
        # Nothing recorded, nothing written: the lake and the event log still agree.
        assert instance.get_latest_materialization_event(dg.AssetKey("edited_corpus")).run_id == recorded.run_id
        assert partition_file(settings.home, "edited_corpus", "alpha").read_bytes() == before
        assert partition_meta(settings.home, "edited_corpus", "alpha")["edit"] == settings.edit.version()

        # Definitions loaded with the new threshold record the version of what ran.
        redefined = build_defs(settings.with_overrides(threshold=0.9))
        assert _launch(redefined, instance, "edited_corpus", "alpha").success
        event = instance.get_latest_materialization_event(dg.AssetKey("edited_corpus"))
        assert event.asset_materialization.tags["dagster/code_version"] == edited_version(settings.with_overrides(threshold=0.9))
        assert partition_meta(settings.home, "edited_corpus", "alpha")["edit"].startswith("p=0.9,")
