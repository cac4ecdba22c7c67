"""Security: hostile file names and partition keys, SQL built only from quoted parts, models loaded safely,
no secrets in metadata or logs."""

from __future__ import annotations

import ast
import json
import shutil
from pathlib import Path

import dagster as dg
import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import build_tiny_model, write_jsonl

from tledit_pipeline.database import connect, refresh_views
from tledit_pipeline.lake import LakeError, lake_root, partition_file, read_partition, write_partition
from tledit_pipeline.prior import PriorError, _fingerprint, load_prior, model_version
from tledit_pipeline.settings import Settings, SettingsError
from tledit_pipeline.source import discover_shards, read_shard

REPO = Path(__file__).resolve().parents[2]

HOSTILE_NAMES = [
    "a'); DROP TABLE raw_corpus;--.jsonl",
    'it\'s "quoted".jsonl',
    "spaces and ..dots...jsonl",
    "dots..in..name.jsonl.jsonl",
    "x;y|z&$(touch pwned)`id`.jsonl",
    "back\\slash.jsonl",
    "new\nline.jsonl",
    "tab\there.jsonl",
    "percent%2e%2e%2fsneaky.jsonl",
    "\u00fcnic\u00f8de \u65e5\u672c\u8a9e \U0001f600.jsonl",
    "shard=evil.jsonl",
    "*glob?[x].jsonl",
    "{curly},'[bracket]'.jsonl",
]


def test_hostile_file_names_reach_duckdb_views_safely(tmp_path):
    # A data directory whose own path needs quoting in SQL, too.
    home = tmp_path / 'it\'s a "home" [dir] ; --'
    src = tmp_path / "src"
    src.mkdir()
    for i, name in enumerate(HOSTILE_NAMES):
        write_jsonl(src / name, [{"text": f"doc {i}", "i": i}, {"text": ""}])
    shards = discover_shards(str(src), home)
    assert sorted(s.path.name for s in shards) == sorted(HOSTILE_NAMES)
    assert len({s.key for s in shards}) == len(HOSTILE_NAMES)
    for s in shards:
        read = read_shard(s)
        for asset, table in (("raw_corpus", read.accepted), ("rejected_documents", read.rejected)):
            path = write_partition(home, asset, s.key, table)
            # Every partition file sits exactly two folders under its asset's folder in the lake.
            assert path.resolve().parent.parent == (lake_root(home) / asset).resolve()
    # Nothing was written outside the data directory.
    outside = [p for p in tmp_path.rglob("*") if p.is_file() and home not in p.parents and src not in p.parents]
    assert outside == []
    con = connect(home, read_only=False)
    assert set(refresh_views(con, home, [s.key for s in shards])) == {"raw_corpus", "rejected_documents"}
    assert con.execute("SELECT count(*) FROM raw_corpus").fetchone()[0] == len(HOSTILE_NAMES)
    rows = con.execute("SELECT source_file, locator, reason FROM rejected_documents ORDER BY source_file").fetchall()
    assert [r[0] for r in rows] == sorted(HOSTILE_NAMES)  # names kept exactly, as data, never as SQL
    assert {r[1] for r in rows} == {"line 2"}
    # Look a hostile name up with a parameter: it is only ever a value.
    name = HOSTILE_NAMES[0]
    assert con.execute("SELECT count(*) FROM rejected_documents WHERE source_file = ?", [name]).fetchone()[0] == 1
    assert {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()} == set()


@pytest.mark.parametrize(
    "key",
    [
        "../escape",
        "../../etc/passwd",
        "a/b",
        "a\\b",
        "",
        ".",
        "..",
        "UPPER",
        "sp ace",
        "x" * 101,
        "shard=a",
        "a\x00b",
        "k\n",
        None,
        3,
    ],
)
def test_hostile_partition_keys_are_refused(tmp_path, key):
    with pytest.raises(LakeError, match="not a valid shard key"):
        partition_file(tmp_path, "raw_corpus", key)
    with pytest.raises(LakeError):
        read_partition(tmp_path, "raw_corpus", key)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("asset", ["../raw", "raw/corpus", "", "Raw", "raw corpus"])
def test_hostile_asset_names_are_refused(tmp_path, asset):
    with pytest.raises(LakeError, match="not a valid asset name"):
        partition_file(tmp_path, asset, "a")


def test_a_hostile_dagster_partition_key_fails_without_touching_files(tmp_path, small_source, tiny_model_dir):
    from assets.checks import CHECKS
    from assets.definitions import build_assets, build_resources
    from assets.partitions import SHARDS

    home = tmp_path / "home"
    settings = Settings(home=home, source=str(small_source), model=str(tiny_model_dir))
    key = "../../../escaped"
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(SHARDS, [key])
        for asset in ("raw_corpus", "token_scores", "edited_corpus"):
            result = dg.materialize(
                [*build_assets(settings), *CHECKS],
                selection=[asset],
                partition_key=key,
                instance=instance,
                resources=build_resources(settings),
                raise_on_error=False,
            )
            assert not result.success
            failure = next(e for e in result.all_events if e.is_step_failure)
            error = failure.event_specific_data.error
            while error.cause is not None:
                error = error.cause
            assert repr(key) in error.message  # a clear message naming the key
    assert not (tmp_path / "escaped").exists()
    assert [p for p in tmp_path.rglob("*.parquet")] == []


# The lake's quoting helpers; sql_union_as_json is built from sql_identifier and sql_literal only (tested below),
# sql_rehomed swaps one sql_literal prefix for another in SQL that DuckDB stored for us.
SAFE_SQL_PARTS = {"sql_identifier", "sql_literal", "sql_list", "sql_union_as_json", "sql_rehomed"}


def _sql_problems(tree: ast.AST, filename: str) -> list[str]:
    """execute()/sql() calls whose SQL text pastes in anything but quoted identifiers, literals or constants."""
    problems = []

    def safe(node: ast.AST) -> bool:
        if isinstance(node, ast.Constant):
            return True
        if isinstance(node, ast.Name):
            return node.id.isupper()  # a module constant such as HEALTH_SQL
        if isinstance(node, ast.Call):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            return name in SAFE_SQL_PARTS
        if isinstance(node, ast.JoinedStr):
            return all(safe(v.value) if isinstance(v, ast.FormattedValue) else True for v in node.values)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            return safe(node.left) and safe(node.right)
        return False

    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in ("execute", "sql", "query", "executemany")
        ):
            if node.args and not safe(node.args[0]):
                problems.append(f"{filename}:{node.lineno}")
    return problems


def test_no_sql_is_built_by_pasting_values():
    files = sorted((REPO / "tledit_pipeline").glob("*.py")) + sorted((REPO / "assets").glob("*.py"))
    calls, problems = 0, []
    for f in files:
        tree = ast.parse(f.read_text(), str(f))
        calls += sum(
            isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == "execute" for n in ast.walk(tree)
        )
        problems += _sql_problems(tree, str(f.relative_to(REPO)))
    assert calls >= 4  # the scan does see the code's SQL
    assert problems == []


def test_union_sql_quotes_hostile_paths_and_column_names(tmp_path):
    import pyarrow as pa

    from tledit_pipeline.database import sql_union_as_json

    folder = tmp_path / 'it\'s "odd"; DROP TABLE t;--'
    folder.mkdir()
    col = 'x"); DROP TABLE t;--'
    a, b = folder / "a'.parquet", folder / "b.parquet"
    pq.write_table(pa.table({"k": [1], col: [5]}), a)
    pq.write_table(pa.table({"k": [2], col: ["five"]}), b)
    con = duckdb.connect(config={"file_search_path": str(tmp_path)})  # the paths are relative to the home
    con.execute("CREATE TABLE t (i INTEGER)")
    rows = con.execute(sql_union_as_json(tmp_path, [a, b], {a: [col], b: [col]}) + " ORDER BY k").fetchall()
    assert rows == [(1, "5"), (2, '"five"')]
    assert con.execute("SELECT count(*) FROM t").fetchone()[0] == 0  # still there


def test_the_sql_scan_catches_pasted_values():
    bad = ast.parse('con.execute(f"SELECT * FROM t WHERE shard = \'{key}\'")\ncon.execute("DROP VIEW " + name)')
    assert len(_sql_problems(bad, "x.py")) == 2


# ---------------------------------------------------------------- models


def test_opt_in_settings_default_off(tmp_path):
    s = Settings.load(env={}, home=tmp_path)
    assert (s.trust_remote_code, s.allow_pickle) == (False, False)
    s = Settings.load(env={"TLEDIT_TRUST_REMOTE_CODE": "1", "TLEDIT_ALLOW_PICKLE": "true"}, home=tmp_path)
    assert (s.trust_remote_code, s.allow_pickle) == (True, True)
    assert Settings.load(env={"TLEDIT_ALLOW_PICKLE": "no"}, home=tmp_path).allow_pickle is False
    with pytest.raises(SettingsError, match="TLEDIT_TRUST_REMOTE_CODE='maybe'"):
        Settings.load(env={"TLEDIT_TRUST_REMOTE_CODE": "maybe"}, home=tmp_path)


def test_cli_flags_opt_in(tmp_path, monkeypatch):
    import argparse

    from assets.cli import _settings

    for var in ("TLEDIT_TRUST_REMOTE_CODE", "TLEDIT_ALLOW_PICKLE"):
        monkeypatch.delenv(var, raising=False)
    args = argparse.Namespace(home=str(tmp_path), trust_remote_code=True, allow_pickle=None)
    s = _settings(args)
    assert (s.trust_remote_code, s.allow_pickle) == (True, False)


@pytest.fixture(scope="module")
def pickle_model(tiny_model_dir, tmp_path_factory) -> Path:
    """The tiny prior with its weights as a pickle checkpoint only (transformers 5 always saves safetensors)."""
    import torch
    from safetensors.torch import load_file

    folder = tmp_path_factory.mktemp("pickle-prior")
    for f in tiny_model_dir.iterdir():
        if not f.name.endswith(".safetensors"):
            shutil.copy(f, folder / f.name)
    state = load_file(str(tiny_model_dir / "model.safetensors"))
    torch.save(state, folder / "pytorch_model.bin")
    return folder


def test_pickle_checkpoint_is_refused_by_default(pickle_model, tmp_path):
    with pytest.raises(PriorError, match=r"only pickle weights \(pytorch_model\.bin\).*TLEDIT_ALLOW_PICKLE"):
        load_prior(str(pickle_model), tmp_path, device="cpu", dtype="float32")


def test_pickle_checkpoint_loads_when_opted_in(pickle_model, tiny_model_dir, tiny_prior, tmp_path):
    import torch

    prior = load_prior(str(pickle_model), tmp_path, device="cpu", dtype="float32", allow_pickle=True)
    ids = torch.tensor([[5, 17, 42, 99]])
    with torch.inference_mode():
        a = prior.model(input_ids=ids).logits
        b = tiny_prior.model(input_ids=ids).logits
    assert torch.equal(a, b)


@pytest.fixture
def remote_code_prior(tiny_model_dir, tmp_path, monkeypatch):
    """The tiny prior as a repository with its own Python code, which leaves a marker file when it runs."""
    import transformers.dynamic_module_utils as dynamic

    # Where transformers copies a repository's code before importing it: a temp dir, not ~/.cache.
    monkeypatch.setattr(dynamic, "HF_MODULES_CACHE", str(tmp_path / "hf-modules"))
    folder = tmp_path / "remote-code-prior"
    shutil.copytree(tiny_model_dir, folder)
    marker = tmp_path / "remote-code-ran"
    monkeypatch.setenv("TLEDIT_TEST_MARKER", str(marker))
    (folder / "evil.py").write_text(
        "import os, pathlib\n"
        "pathlib.Path(os.environ['TLEDIT_TEST_MARKER']).write_text('ran')\n"
        "from transformers import LlamaConfig, LlamaForCausalLM\n"
        "class EvilConfig(LlamaConfig):\n    model_type = 'evil'\n"
        "class EvilModel(LlamaForCausalLM):\n    config_class = EvilConfig\n"
    )
    config = json.loads((folder / "config.json").read_text())
    config.update(
        model_type="evil",
        architectures=["EvilModel"],
        auto_map={"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.EvilModel"},
    )
    (folder / "config.json").write_text(json.dumps(config))
    return folder, marker


def test_remote_code_is_not_run_unless_opted_in(remote_code_prior, tmp_path):
    folder, marker = remote_code_prior
    with pytest.raises(PriorError, match="needs its own Python code.*TLEDIT_TRUST_REMOTE_CODE"):
        load_prior(str(folder), tmp_path, device="cpu", dtype="float32")
    assert not marker.exists()


def test_remote_code_runs_when_opted_in(remote_code_prior, tmp_path):
    folder, marker = remote_code_prior
    prior = load_prior(str(folder), tmp_path, device="cpu", dtype="float32", trust_remote_code=True)
    assert type(prior.model).__name__ == "EvilModel" and marker.read_text() == "ran"


def test_fingerprint_follows_weights_replaced_in_place(tmp_path):
    folder = build_tiny_model(tmp_path / "prior", seed=0)
    before = (_fingerprint(str(folder)), model_version(str(folder), tmp_path))
    other = build_tiny_model(tmp_path / "other", seed=1)
    weights = folder / "model.safetensors"
    assert weights.stat().st_size == (other / "model.safetensors").stat().st_size
    shutil.copy(other / "model.safetensors", weights)  # same name, same size, other numbers
    after = (_fingerprint(str(folder)), model_version(str(folder), tmp_path))
    assert after[0] != before[0] and after[1] != before[1]


def test_token_scores_code_version_follows_the_model_files(tmp_path):
    from assets.definitions import build_defs

    folder = build_tiny_model(tmp_path / "prior", seed=0)
    settings = Settings(home=tmp_path / "home", model=str(folder))

    def version():
        return build_defs(settings).resolve_assets_def("token_scores").code_versions_by_key[dg.AssetKey("token_scores")]

    before = version()
    assert version() == before
    shutil.copy(build_tiny_model(tmp_path / "other", seed=1) / "model.safetensors", folder / "model.safetensors")
    assert version() != before


# ---------------------------------------------------------------- secrets


@pytest.mark.parametrize("lake", ["local", "s3", "postgres"])
def test_no_token_in_metadata_logs_or_files(lake, request, tmp_path, small_source, tiny_model_dir, monkeypatch, capfd, caplog):
    """Hugging Face tokens and the AWS secret key (the one actually signing every request when the lake is on
    an S3 server) appear nowhere: not in metadata, logs, the lake, DuckDB, settings or the terminal; nor, with
    the Dagster instance on PostgreSQL, the server's password given in the URL (not in dagster.yaml, settings.json,
    run configs, metadata or logs)."""
    from assets.checks import CHECKS
    from assets.definitions import PER_SHARD, build_assets, build_resources
    from assets.partitions import SHARDS

    marker = "hf_SECRETMARKER0123456789abcdefXYZ"
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_TOKEN", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(var, marker)
    home: object = tmp_path / "home"
    if lake == "s3":
        from tests.s3 import reset_filesystems

        s3 = request.getfixturevalue("s3")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", marker)  # the fixture set its own key: sign with the marker
        reset_filesystems()
        home = s3.url("home")
    url = request.getfixturevalue("postgres_url") if lake == "postgres" else None  # the password in the URL
    secrets = [marker] + ([request.getfixturevalue("postgres_server").password] if url else [])
    settings = Settings(home=home, source=str(small_source), model=str(tiny_model_dir), dagster_postgres_url=url)
    settings.save()
    (tmp_path / "dagster").mkdir()
    if url:
        from assets.instance import prepare_instance

        monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "unused"))  # prepare_instance sets it; restored after
        opened = prepare_instance(settings)
        assert "postgres" in (settings.instance_dir / "dagster.yaml").read_text()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) if url is None else opened as instance:
        instance.add_dynamic_partitions(SHARDS, ["alpha"])
        for selection, key in ((PER_SHARD, "alpha"), (["distribution_health"], None)):
            result = dg.materialize(
                [*build_assets(settings), *CHECKS],
                selection=selection,
                partition_key=key,
                instance=instance,
                resources=build_resources(settings),
            )
            assert result.success
        records = [r for k in instance.get_asset_keys() for r in instance.fetch_materializations(k, limit=1000).records]
        metadata = [r.asset_materialization.metadata for r in records]
        logs = instance.all_logs(result.run_id)
        runs = instance.get_runs()  # their run configs hold the tledit resource's settings
        for secret in secrets:
            assert metadata and secret not in repr(metadata)
            assert logs and secret not in repr(logs)
            assert runs and secret not in repr(runs)
    # Every byte written anywhere (lake, footers, DuckDB, settings, Dagster's storage and logs), here and on the server.
    written = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file() and small_source not in p.parents}
    if lake == "s3":
        written |= {key: data for key, data in s3.objects("home").items()}
    assert any(str(p).endswith(".parquet") for p in written)
    assert [p for p, data in written.items() if any(secret.encode() in data for secret in secrets)] == []
    footers = [pq.read_schema(pa.BufferReader(data)).metadata for p, data in written.items() if str(p).endswith("data.parquet")]
    out, err = capfd.readouterr()
    for secret in secrets:
        assert footers and secret not in repr(footers)
        assert secret not in out + err + caplog.text
