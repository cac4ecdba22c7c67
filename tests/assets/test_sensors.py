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
        assert sorted(r.partition_key for r in first.run_requests) == ["alpha", "beta"]
        assert first.dynamic_partitions_requests[0].partition_keys == ["alpha", "beta"]
        instance.add_dynamic_partitions("shards", ["alpha", "beta"])
        (small_source / "gamma.jsonl").write_text('{"text": "A new shard arrives."}\n')
        second = shard_sensor(ctx)
        assert [r.partition_key for r in second.run_requests] == ["gamma"]
