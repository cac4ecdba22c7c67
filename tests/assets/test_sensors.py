"""The shard sensor registers new source files as partitions and requests their runs, once."""

import dagster as dg

from assets.resources import TleditResource
from assets.sensors import shard_sensor
from tledit_pipeline.settings import Settings


def test_sensor_adds_new_shards_once(tmp_path, small_source, tiny_model_dir):
    settings = Settings(home=tmp_path / "home", source=str(small_source), model=str(tiny_model_dir))
    with dg.instance_for_test() as instance:
        ctx = dg.build_sensor_context(instance=instance, resources={"tledit": TleditResource.from_settings(settings)})
        first = shard_sensor(ctx)
        (request,) = first.run_requests  # both new shards in one run: a range
        assert (request.tags["dagster/asset_partition_range_start"], request.tags["dagster/asset_partition_range_end"]) == (
            "alpha",
            "beta",
        )
        assert first.dynamic_partitions_requests[0].partition_keys == ["alpha", "beta"]
        instance.add_dynamic_partitions("shards", ["alpha", "beta"])
        (small_source / "gamma.jsonl").write_text('{"text": "A new shard arrives."}\n')
        second = shard_sensor(ctx)
        assert [r.partition_key for r in second.run_requests] == ["gamma"]


def _materialize_raw(defs, instance, keys):
    job = defs.resolve_implicit_global_asset_job_def()
    for k in keys:
        assert job.execute_in_process(instance=instance, partition_key=k, asset_selection=[dg.AssetKey("raw_corpus")]).success


def test_sensor_reruns_only_the_shard_whose_file_changed(tmp_path, small_source, tiny_model_dir):
    from assets.definitions import build_defs

    settings = Settings(home=tmp_path / "home", source=str(small_source), model=str(tiny_model_dir))
    defs = build_defs(settings)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("shards", ["alpha", "beta"])
        _materialize_raw(defs, instance, ["alpha", "beta"])
        ctx = dg.build_sensor_context(
            instance=instance, definitions=defs, resources={"tledit": TleditResource.from_settings(settings)}
        )
        first = shard_sensor(ctx)
        assert first.run_requests == []  # files as recorded: nothing to do
        ctx.update_cursor(first.cursor)
        (small_source / "alpha.jsonl").write_text('{"text": "A changed first shard."}\n')
        second = shard_sensor(ctx)
        assert [r.partition_key for r in second.run_requests] == ["alpha"]
        assert second.run_requests[0].run_key.startswith("changed:alpha:")
        ctx.update_cursor(second.cursor)
        # Until it is re-materialized the run key stays the same, so the run is not requested twice.
        assert [r.run_key for r in shard_sensor(ctx).run_requests] in ([], [second.run_requests[0].run_key])


def test_refresh_schedule_requests_the_stale_part_of_each_chain(tmp_path, small_source, tiny_model_dir):
    from assets.definitions import build_defs

    settings = Settings(home=tmp_path / "home", source=str(small_source), model=str(tiny_model_dir), refresh_cron="0 4 * * *")
    defs = build_defs(settings)
    schedule = defs.resolve_schedule_def("refresh_schedule")
    assert schedule.cron_schedule == "0 4 * * *"
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("shards", ["alpha"])
        _materialize_raw(defs, instance, ["alpha"])
        (small_source / "gamma.jsonl").write_text('{"text": "A new shard arrives."}\n')
        import datetime

        ctx = dg.build_schedule_context(
            instance=instance,
            repository_def=defs.get_repository_def(),
            scheduled_execution_time=datetime.datetime(2026, 1, 2, 4, tzinfo=datetime.UTC),
            resources={"tledit": TleditResource.from_settings(settings)},
        )
        # One request per range of shards that need the same assets (beta and gamma: the whole chain).
        requests = {
            r.partition_key or (r.tags["dagster/asset_partition_range_start"], r.tags["dagster/asset_partition_range_end"]): r
            for r in schedule.evaluate_tick(ctx).run_requests
        }
        assert sorted(instance.get_dynamic_partitions("shards")) == ["alpha", "beta", "gamma"]
        assert set(requests) == {"alpha", ("beta", "gamma")}
        assert [k.path[0] for k in requests["alpha"].asset_selection] == [
            "token_scores",
            "edited_corpus",
            "synthetic_corpus",
            "ngram_profile",
        ]
        assert [k.path[0] for k in requests["beta", "gamma"].asset_selection] == [
            "raw_corpus",
            "token_scores",
            "edited_corpus",
            "synthetic_corpus",
            "ngram_profile",
        ]


def test_bad_refresh_cron_is_a_clear_error(tmp_path):
    import pytest

    from assets.definitions import build_defs
    from tledit_pipeline.settings import SettingsError

    with pytest.raises(SettingsError, match="TLEDIT_REFRESH_CRON='every day' is not a valid cron schedule"):
        build_defs(Settings(home=tmp_path, refresh_cron="every day"))


def test_health_follows_its_shards_by_automation_condition(tmp_path, small_source, tiny_model_dir):
    from assets.definitions import build_defs

    defs = build_defs(Settings(home=tmp_path / "home", source=str(small_source), model=str(tiny_model_dir)))
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("shards", ["alpha"])
        first = dg.evaluate_automation_conditions(defs=defs, instance=instance)
        assert first.total_requested == 0  # enabling it does not start a rebuild by itself
        # A shard's new n-gram profile (a run of the schedule or the sensor) triggers one rebuild.
        instance.report_runless_asset_event(dg.AssetMaterialization("ngram_profile", partition="alpha"))
        second = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=first.cursor)
        assert second.get_requested_partitions(dg.AssetKey("distribution_health")) == {None}
        third = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=second.cursor)
        assert third.total_requested == 0  # handled: not asked again until a shard is updated again
