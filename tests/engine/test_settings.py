"""Settings: defaults, TLEDIT_* environment parsing, overrides, validation and the edit code version."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from tledit_pipeline.errors import TleditError
from tledit_pipeline.settings import EditSettings, ScoringSettings, Settings, SettingsError


def test_defaults():
    s = Settings.from_env(env={})
    assert s.edit == EditSettings()
    assert (s.edit.threshold, s.edit.top_k, s.edit.beta, s.edit.seed) == (0.99, 8, 1.5, 0)
    assert s.scoring == ScoringSettings()
    assert s.scoring.candidates >= s.edit.top_k
    assert s.source == "sample"
    assert s.text_field == "text"
    assert s.home.is_absolute()
    assert s.models_dir == s.home / "models"


def test_settings_error_is_a_user_facing_value_error():
    assert issubclass(SettingsError, TleditError)
    assert issubclass(SettingsError, ValueError)


def test_env_parsing_of_every_kind_of_value(tmp_path):
    env = {
        "TLEDIT_HOME": str(tmp_path / "home"),
        "TLEDIT_SOURCE": "/data/corpus",
        "TLEDIT_MODEL": "some/model",
        "TLEDIT_TEXT_FIELD": "content",
        "TLEDIT_MODEL_CACHE": str(tmp_path / "cache"),
        "TLEDIT_THRESHOLD": "0.95",
        "TLEDIT_TOP_K": "4",
        "TLEDIT_BETA": "2.5",
        "TLEDIT_SEED": "17",
        "TLEDIT_WINDOW": "1024",
        "TLEDIT_OVERLAP": "128",
        "TLEDIT_CANDIDATES": "12",
        "TLEDIT_BATCH_TOKENS": "4096",
        "TLEDIT_DEVICE": "cpu",
        "TLEDIT_DTYPE": "bfloat16",
    }
    s = Settings.from_env(env=env)
    assert s.home == (tmp_path / "home").absolute()
    assert s.source == "/data/corpus"
    assert s.model == "some/model"
    assert s.text_field == "content"
    assert s.model_cache == (tmp_path / "cache").absolute()
    assert s.models_dir == (tmp_path / "cache").absolute()
    assert s.edit == EditSettings(threshold=0.95, top_k=4, beta=2.5, seed=17)
    assert s.scoring == ScoringSettings(
        window=1024, overlap=128, candidates=12, batch_tokens=4096, device="cpu", dtype="bfloat16"
    )
    assert isinstance(s.edit.top_k, int) and isinstance(s.edit.threshold, float)


def test_empty_env_values_are_ignored():
    s = Settings.from_env(env={"TLEDIT_THRESHOLD": "", "TLEDIT_SEED": ""})
    assert s.edit == EditSettings()


def test_unrelated_env_variables_are_ignored():
    s = Settings.from_env(env={"THRESHOLD": "0.1", "TLEDIT_UNKNOWN": "x", "HOME": "/nowhere"})
    assert s.edit.threshold == 0.99


def test_relative_home_is_made_absolute():
    s = Settings.from_env(env={"TLEDIT_HOME": "some/relative/dir"})
    assert s.home.is_absolute()
    assert s.home == Path("some/relative/dir").absolute()
    assert s.duckdb_path == s.home / "tledit.duckdb"
    assert s.instance_dir == s.home / "dagster_home"


def test_overrides_win_over_env():
    env = {
        "TLEDIT_THRESHOLD": "0.5",
        "TLEDIT_SEED": "3",
        "TLEDIT_SOURCE": "from-env",
        "TLEDIT_WINDOW": "512",
        "TLEDIT_OVERLAP": "64",
    }
    s = Settings.from_env(env=env, threshold=0.7, seed=9, source="from-flag", window=256)
    assert s.edit.threshold == 0.7
    assert s.edit.seed == 9
    assert s.source == "from-flag"
    assert s.scoring.window == 256
    assert s.scoring.overlap == 64  # not overridden: the env value stays


def test_none_overrides_do_not_hide_env():
    s = Settings.from_env(env={"TLEDIT_THRESHOLD": "0.5"}, threshold=None, seed=None)
    assert s.edit.threshold == 0.5
    assert s.edit.seed == 0


def test_with_overrides_rejects_unknown_names():
    with pytest.raises(SettingsError, match="unknown setting 'colour'"):
        Settings().with_overrides(colour="blue")


@pytest.mark.parametrize("value", ["0", "0.0", "-0.5", "1.01", "2", "nan"])
def test_threshold_out_of_range_is_rejected(value):
    with pytest.raises(SettingsError, match="threshold"):
        Settings.from_env(env={"TLEDIT_THRESHOLD": value})


@pytest.mark.parametrize("value", [0.0, 1.0000001, -1.0])
def test_threshold_out_of_range_direct(value):
    with pytest.raises(SettingsError, match=r"threshold p must be in \(0, 1\]"):
        EditSettings(threshold=value)


def test_threshold_one_is_allowed():
    assert EditSettings(threshold=1.0).threshold == 1.0


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        ({"top_k": 0}, "top_k"),
        ({"beta": 0.0}, "beta"),
        ({"beta": -1.0}, "beta"),
        ({"seed": -1}, "seed"),
    ],
)
def test_bad_edit_values(kwargs, pattern):
    with pytest.raises(SettingsError, match=pattern):
        EditSettings(**kwargs)


def test_top_k_above_candidates_is_rejected():
    with pytest.raises(SettingsError, match="top_k=9 exceeds the 8 candidates") as info:
        Settings.from_env(env={"TLEDIT_TOP_K": "9"})
    assert "TLEDIT_CANDIDATES" in str(info.value)
    with pytest.raises(SettingsError, match="exceeds"):
        Settings.from_env(env={"TLEDIT_CANDIDATES": "4"})  # default top_k 8 > 4
    with pytest.raises(SettingsError, match="exceeds"):
        Settings.from_env(env={}, top_k=20, candidates=16)


def test_top_k_equal_to_raised_candidates_is_fine():
    s = Settings.from_env(env={"TLEDIT_TOP_K": "16", "TLEDIT_CANDIDATES": "16"})
    assert s.edit.top_k == s.scoring.candidates == 16


@pytest.mark.parametrize("dtype", ["float16", "fp32", "FLOAT32", "int8"])
def test_bad_dtype(dtype):
    with pytest.raises(SettingsError, match="dtype"):
        Settings.from_env(env={"TLEDIT_DTYPE": dtype})
    with pytest.raises(SettingsError, match=repr(dtype)):
        ScoringSettings(dtype=dtype)


@pytest.mark.parametrize("dtype", ["auto", "float32", "bfloat16"])
def test_good_dtypes(dtype):
    assert Settings.from_env(env={"TLEDIT_DTYPE": dtype}).scoring.dtype == dtype


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        ({"window": 1}, "window must be >= 2"),
        ({"window": 16, "overlap": 16}, "overlap"),
        ({"window": 16, "overlap": 0}, "overlap"),
        ({"window": 16, "overlap": -1}, "overlap"),
        ({"candidates": 0}, "candidates"),
        ({"window": 64, "overlap": 8, "batch_tokens": 32}, "batch_tokens"),
    ],
)
def test_bad_scoring_values(kwargs, pattern):
    with pytest.raises(SettingsError, match=pattern):
        ScoringSettings(**kwargs)


@pytest.mark.parametrize(
    "var, value",
    [
        ("TLEDIT_THRESHOLD", "high"),
        ("TLEDIT_TOP_K", "eight"),
        ("TLEDIT_TOP_K", "8.0"),
        ("TLEDIT_BETA", "1,5"),
        ("TLEDIT_SEED", "0x10"),
        ("TLEDIT_WINDOW", "2k"),
        ("TLEDIT_OVERLAP", "half"),
        ("TLEDIT_CANDIDATES", "many"),
        ("TLEDIT_BATCH_TOKENS", "1e4"),
    ],
)
def test_non_numeric_env_value_names_the_variable(var, value):
    with pytest.raises(SettingsError) as info:
        Settings.from_env(env={var: value})
    msg = str(info.value)
    assert var in msg
    assert repr(value) in msg


def test_empty_text_field_is_rejected():
    with pytest.raises(SettingsError, match="text_field"):
        Settings(text_field="")


EDIT_CHANGES = [
    {"threshold": 0.98},
    {"threshold": 0.5},
    {"top_k": 4},
    {"top_k": 1},
    {"beta": 1.0},
    {"beta": 1.5000001},
    {"seed": 1},
    {"seed": 12345},
]


@pytest.mark.parametrize("change", EDIT_CHANGES)
def test_edit_version_changes_with_any_edit_setting(change):
    base = EditSettings()
    assert replace(base, **change).version() != base.version()


def test_edit_versions_are_all_distinct_and_stable():
    versions = [replace(EditSettings(), **c).version() for c in EDIT_CHANGES] + [EditSettings().version()]
    assert len(set(versions)) == len(versions)
    assert EditSettings().version() == EditSettings(threshold=0.99, top_k=8, beta=1.5, seed=0).version()
    # Settings that reach EditSettings through the environment give the same version as direct ones.
    s = Settings.from_env(env={"TLEDIT_THRESHOLD": "0.9", "TLEDIT_SEED": "2"})
    assert s.edit.version() == EditSettings(threshold=0.9, seed=2).version()


def test_scoring_version_ignores_batching_and_device_only():
    base = ScoringSettings()
    assert replace(base, batch_tokens=16384).version() == base.version()
    assert replace(base, device="cpu").version() == base.version()
    for change in ({"window": 1024}, {"overlap": 256}, {"candidates": 16}, {"dtype": "float32"}):
        assert replace(base, **change).version() != base.version()


def test_saved_settings_are_remembered_per_data_directory(tmp_path):
    home = tmp_path / "home"
    saved = Settings.from_env(env={}, home=home, source="/corpus", threshold=0.95, seed=5).save()
    assert saved == home / "settings.json"
    # What the UI and the sensor see: the last run's settings, with no flags or variables given.
    again = Settings.load(env={"TLEDIT_HOME": str(home)})
    assert (again.source, again.edit.threshold, again.edit.seed) == ("/corpus", 0.95, 5)
    assert again.flat() == Settings.from_env(env={}, home=home, source="/corpus", threshold=0.95, seed=5).flat()


def test_load_precedence_saved_then_env_then_flags(tmp_path):
    Settings.from_env(env={}, home=tmp_path, threshold=0.95, beta=1.0).save()
    s = Settings.load(env={"TLEDIT_HOME": str(tmp_path), "TLEDIT_BETA": "2.0"}, seed=3)
    assert (s.edit.threshold, s.edit.beta, s.edit.seed) == (0.95, 2.0, 3)
    assert Settings.load(env={}, home=tmp_path, threshold=0.9).edit.threshold == 0.9
    assert Settings.load(env={}, home=tmp_path / "fresh").edit.threshold == 0.99  # no file: defaults


def test_corrupt_saved_settings_are_a_clear_error(tmp_path):
    (tmp_path / "settings.json").write_text("{not json")
    with pytest.raises(SettingsError, match="settings.json is not valid JSON"):
        Settings.load(env={"TLEDIT_HOME": str(tmp_path)})


def test_synthetic_and_check_settings_from_env_and_overrides(tmp_path):
    from tledit_pipeline.settings import CheckSettings, SyntheticSettings

    assert Settings.from_env(env={}).synthetic == SyntheticSettings(prefix_tokens=32, max_new_tokens=0, synthetic_sample=1.0)
    assert Settings.from_env(env={}).checks == CheckSettings(min_tail_coverage=0.98, max_js_divergence=0.01)
    env = {
        "TLEDIT_PREFIX_TOKENS": "16",
        "TLEDIT_MAX_NEW_TOKENS": "64",
        "TLEDIT_SYNTHETIC_SAMPLE": "0.5",
        "TLEDIT_SYNTHETIC_SEED": "9",
        "TLEDIT_SYNTHETIC_BATCH": "4",
        "TLEDIT_MIN_TAIL_COVERAGE": "0.9",
        "TLEDIT_MAX_JS_DIVERGENCE": "0.05",
    }
    s = Settings.from_env(env=env, prefix_tokens=8)  # a flag beats the variable
    assert s.synthetic == SyntheticSettings(
        prefix_tokens=8, max_new_tokens=64, synthetic_sample=0.5, synthetic_seed=9, synthetic_batch=4
    )
    assert s.checks == CheckSettings(min_tail_coverage=0.9, max_js_divergence=0.05)
    # Remembered with the rest, and the version string follows every setting but the batch size.
    s = s.with_overrides(home=tmp_path)
    s.save()
    assert Settings.load(env={"TLEDIT_HOME": str(tmp_path)}).flat() == s.flat()
    assert s.synthetic.version() != replace(s.synthetic, synthetic_seed=1).version()
    assert s.synthetic.version() == replace(s.synthetic, synthetic_batch=64).version()
    with pytest.raises(SettingsError, match="TLEDIT_SYNTHETIC_SAMPLE"):
        Settings.from_env(env={"TLEDIT_SYNTHETIC_SAMPLE": "half"})
    with pytest.raises(SettingsError, match="synthetic_sample must be in"):
        Settings.from_env(env={"TLEDIT_SYNTHETIC_SAMPLE": "0"})
    with pytest.raises(SettingsError, match="min_tail_coverage"):
        Settings.from_env(env={}, min_tail_coverage=1.5)


def test_strategy_settings_from_env():
    from tledit_pipeline.settings import Settings, SettingsError

    s = Settings.from_env({"TLEDIT_STRATEGY": "top_p", "TLEDIT_TOP_P": "0.8", "TLEDIT_EXCLUDE_ORIGINAL": "yes"})
    assert (s.edit.strategy, s.edit.top_p, s.edit.exclude_original) == ("top_p", 0.8, True)
    assert Settings.from_env({"TLEDIT_EXCLUDE_ORIGINAL": "0"}).edit.exclude_original is False
    with pytest.raises(SettingsError, match="TLEDIT_EXCLUDE_ORIGINAL='maybe' is not a valid boolean"):
        Settings.from_env({"TLEDIT_EXCLUDE_ORIGINAL": "maybe"})


def test_data_dir_as_a_file_url_resolves_locally(tmp_path):
    from tledit_pipeline.settings import Settings, SettingsError

    s = Settings.from_env({"TLEDIT_HOME": f"file://{tmp_path}/data"})
    assert s.home == tmp_path / "data" and s.duckdb_path == tmp_path / "data" / "tledit.duckdb"
    s.save()
    assert Settings.load({"TLEDIT_HOME": f"file://{tmp_path}/data"}).home == tmp_path / "data"
    with pytest.raises(SettingsError, match="TLEDIT_HOME: nosuch://bucket/data: unknown storage protocol 'nosuch'"):
        Settings.from_env({"TLEDIT_HOME": "nosuch://bucket/data"})


def test_data_dir_on_an_object_store_keeps_the_dagster_home_local(tmp_path, monkeypatch):
    from tledit_pipeline.settings import Settings
    from tledit_pipeline.storage import RemotePath

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    s = Settings.from_env({"TLEDIT_HOME": "memory://bucket/data/"})
    assert s.home == RemotePath("memory://bucket/data") and str(s.duckdb_path) == "memory://bucket/data/tledit.duckdb"
    assert s.instance_dir.parent.parent == tmp_path / "state" / "tledit" and s.instance_dir.name == "dagster_home"
    assert s.models_dir.parent == s.instance_dir.parent
    assert Settings.from_env({"TLEDIT_HOME": "memory://other/data"}).instance_dir != s.instance_dir
    chosen = Settings.from_env({"TLEDIT_HOME": "memory://bucket/data", "TLEDIT_DAGSTER_HOME": str(tmp_path / "dh")})
    assert chosen.instance_dir == tmp_path / "dh" and chosen.flat()["home"] == "memory://bucket/data"


def test_docs_table_matches_the_declarations():
    from tledit_pipeline.settings import with_table

    page = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text()
    assert with_table(page) == page, "docs/configuration.md is out of date: run `make docs`"


def test_every_setting_derives_env_flag_and_resource_field():
    import argparse

    from assets.cli import add_setting_flags
    from assets.resources import TleditResource
    from tledit_pipeline.settings import SPECS

    parser = argparse.ArgumentParser()
    add_setting_flags(parser, "run")
    flags = {o for a in parser._actions for o in a.option_strings}
    for spec in SPECS:
        assert spec.env == "TLEDIT_" + spec.name.upper()
        assert spec.flag in flags
        assert spec.name in TleditResource.model_fields
    # Round trip: settings -> resource config -> settings, every value kept.
    s = Settings.from_env(env={}, threshold=0.9, synthetic_batch=4, trust_remote_code=True, refresh_cron="@hourly")
    assert TleditResource.from_settings(s).settings().flat() == s.flat()
    # A flag parses to the declared type.
    args = parser.parse_args(["--threshold", "0.5", "--window", "512", "--no-exclude-original", "--field", "body"])
    assert (args.threshold, args.window, args.exclude_original, args.text_field) == (0.5, 512, False, "body")
