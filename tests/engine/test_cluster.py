"""The Ray engine's pieces that need no cluster: the shared-home rule, receipts, metadata kinds, the prior's
recorded fingerprint (the same on every process and mount point, cheap after the first). The engine on a real
cluster: tests/assets/test_ray.py."""

from __future__ import annotations

import json
import shutil

import pyarrow as pa
import pytest

import tledit_pipeline.prior as prior_module
from tests.conftest import build_tiny_model
from tledit_pipeline.cluster import ClusterError, check_shared_home, receipt_path, reusable
from tledit_pipeline.lake import partition_digest, write_partition
from tledit_pipeline.prior import FINGERPRINT_FILE, _fingerprint, model_version
from tledit_pipeline.settings import Settings, SettingsError
from tledit_pipeline.steps import SCORES, Markdown, PathValue, ShardJob, Text, decode_meta, encode_meta

TWO_NODES = [{"Alive": True}, {"Alive": True}]


def test_engine_settings_are_declared_once():
    s = Settings.from_env({"TLEDIT_ENGINE": "ray", "TLEDIT_RAY_ADDRESS": "auto", "TLEDIT_SHARED_HOME": "1"})
    assert (s.engine, s.ray_address, s.shared_home) == ("ray", "auto", True)
    assert Settings().engine == "local"
    with pytest.raises(SettingsError, match="engine must be one of local, ray"):
        Settings.from_env({"TLEDIT_ENGINE": "spark"})


def test_a_local_home_on_several_nodes_needs_shared_home(tmp_path):
    with pytest.raises(ClusterError, match=r"local path but the Ray cluster has 2 nodes.*--shared-home"):
        check_shared_home(Settings(home=tmp_path), TWO_NODES)
    check_shared_home(Settings(home=tmp_path, shared_home=True), TWO_NODES)
    check_shared_home(Settings(home=tmp_path), TWO_NODES[:1])  # one node: it is the machine that has the folder
    check_shared_home(Settings(home="s3://bucket/runs"), TWO_NODES)  # every node reaches an object store


def test_metadata_kinds_survive_a_receipt():
    meta = {"n": 3, "share": 0.25, "chart": Markdown("| a |"), "path": PathValue("/x/data.parquet"), "note": Text("t")}
    back = decode_meta(json.loads(json.dumps(encode_meta(meta))))
    assert back == meta and {k: type(v) for k, v in back.items()} == {k: type(v) for k, v in meta.items()}


def test_a_receipt_is_reused_only_for_an_unrecorded_run_with_the_same_bytes(tmp_path):
    s = Settings(home=tmp_path)
    job = ShardJob(SCORES, "a")
    write_partition(tmp_path, "raw_corpus", "a", pa.table({"text": ["one"]}))
    write_partition(tmp_path, "token_scores", "a", pa.table({"x": [1]}))
    receipt = {
        "code_version": "v1",
        "run_id": "killed",
        "input": partition_digest(tmp_path, "raw_corpus", "a"),
        "output": partition_digest(tmp_path, "token_scores", "a"),
        "meta": encode_meta({"tokens": 1, "chart": Markdown("c")}),
    }
    path = receipt_path(tmp_path, "token_scores", "a")
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(receipt))
    assert reusable(s, job, "v1", run_id="now", recorded_run=None) == {"tokens": 1, "chart": "c"}
    assert reusable(s, job, "v1", run_id="now", recorded_run="killed") is None  # that run recorded it: redo (--force)
    assert reusable(s, job, "v2", run_id="now", recorded_run=None) is None  # other settings or prior
    assert reusable(s, job, "v1", run_id="killed", recorded_run=None) is None
    write_partition(tmp_path, "raw_corpus", "a", pa.table({"text": ["two"]}))  # the input changed since
    assert reusable(s, job, "v1", run_id="now", recorded_run=None) is None
    assert reusable(s, ShardJob(SCORES, "b"), "v1", run_id="now", recorded_run=None) is None  # no receipt


def test_the_prior_fingerprint_is_recorded_and_the_same_wherever_the_folder_is(tmp_path, monkeypatch):
    folder = build_tiny_model(tmp_path / "prior")
    first = model_version(str(folder), tmp_path)
    assert (folder / FINGERPRINT_FILE).exists()
    moved = shutil.copytree(folder, tmp_path / "elsewhere" / "prior")  # another node's mount point
    assert model_version(str(moved), tmp_path) == first == _fingerprint(str(folder))

    hashed = []
    real = prior_module.file_sha256
    monkeypatch.setattr(prior_module, "file_sha256", lambda p: hashed.append(p) or real(p))
    prior_module._FILE_HASHES.clear()  # a new process: only the record remains
    assert model_version(str(folder), tmp_path) == first and hashed == []  # stats and one small file

    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\0")  # replaced in place
    assert model_version(str(folder), tmp_path) != first and [p.name for p in hashed] == ["model.safetensors"]


def test_a_damaged_or_lying_record_does_not_decide_the_fingerprint(tmp_path):
    folder = build_tiny_model(tmp_path / "prior")
    expected = _fingerprint(str(folder))
    (folder / FINGERPRINT_FILE).write_text("{not json")
    prior_module._FILE_HASHES.clear()
    assert _fingerprint(str(folder)) == expected
    record = json.loads((folder / FINGERPRINT_FILE).read_text())  # rewritten whole
    record["files"]["model.safetensors"][1] += 1  # a record of another mtime: the file is hashed again
    record["files"]["model.safetensors"][2] = "0" * 64
    (folder / FINGERPRINT_FILE).write_text(json.dumps(record))
    assert _fingerprint(str(folder)) == expected
