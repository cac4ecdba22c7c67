"""Object stores, when things go wrong: a run killed mid-upload, and the errors a user can fix.

All against a real S3-compatible server (moto's, on 127.0.0.1). The kill happens while the server has
received part of a partition's one PUT: a proxy in front of it lets the request's headers and a few body
bytes through, then holds the rest, and the run is SIGKILLed while it waits.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest

from assets.cli import main
from benchmarks.cluster import free_port
from tests.s3 import StallingProxy, aws_env, iam_user_without_s3, reset_filesystems, subprocess_env
from tledit_pipeline.lake import DATA_FILE
from tledit_pipeline.source import SourceError, discover_shards, read_shard

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HELD = f"/lake/edited_corpus/shard=alpha/{DATA_FILE}"  # the object being uploaded when the run is killed


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")
def test_killed_mid_upload_leaves_no_partial_partition(s3, small_source, tiny_model_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "unused"))
    (small_source / "beta.jsonl.gz").unlink()  # one shard keeps the three runs short
    source = s3.upload_folder(small_source, "corpus")
    crashed, clean = s3.url("crashed"), s3.url("clean")
    args = ["run", "--home", crashed, "--source", source, "--model", str(tiny_model_dir), "--threshold", "0.2"]
    proxy = StallingProxy(int(s3.server.endpoint.rsplit(":", 1)[1]), key_suffix=HELD)
    env = subprocess_env(tmp_path, proxy.endpoint)
    proc = subprocess.Popen(
        [sys.executable, "-m", "assets.cli", *args], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        assert proxy.stalled.wait(300), "the upload of edited_corpus never started"
        time.sleep(0.5)  # the server holds the request's first bytes
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        out = proc.communicate()[0].decode(errors="replace")
        proxy.close()
    assert proc.returncode == -signal.SIGKILL, out

    # Nothing partial is visible: no object under the key being uploaded, every visible partition whole.
    keys = s3.keys("crashed")
    assert f"crashed{HELD}" not in keys
    visible = [k for k in keys if k.endswith(DATA_FILE)]
    assert f"crashed/lake/raw_corpus/shard=alpha/{DATA_FILE}" in visible
    for key in visible:
        table = pq.read_table(io.BytesIO(s3.fs.cat_file(f"{s3.bucket}/{key}")))
        assert table.num_rows == pq.read_metadata(io.BytesIO(s3.fs.cat_file(f"{s3.bucket}/{key}"))).num_rows

    # The re-run finishes the job, and its lake has the same bytes as a run never interrupted.
    assert main(args) == 0
    assert main(["run", "--home", clean, *args[3:]]) == 0
    capsys.readouterr()
    after, reference = s3.objects("crashed/lake"), s3.objects("clean/lake")
    assert after.keys() == reference.keys() and len(after) >= 7
    assert [name for name in after if after[name] != reference[name]] == []


def _error_line(capsys, *args: str) -> str:
    """`tledit ARGS` failed with exit 2 and said why in one line, without a traceback or exception names."""
    code = main(list(args))
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("tledit: "), (code, err[-3000:])
    assert "Traceback" not in err and "Error:" not in lines[0] and "Exception" not in lines[0]
    return lines[0]


def test_no_such_bucket_is_one_line(s3, small_source, tiny_model_dir, tmp_path, capsys):
    line = _error_line(capsys, "run", "--home", str(tmp_path / "home"), "--source", "s3://no-such-bucket/corpus/*.jsonl")
    assert line == "tledit: s3://no-such-bucket/corpus/*.jsonl: no such bucket"
    source = s3.upload_folder(small_source, "corpus")
    line = _error_line(capsys, "run", "--home", "s3://no-such-bucket/home", "--source", source, "--model", str(tiny_model_dir))
    assert line == "tledit: s3://no-such-bucket/home: no such bucket"
    line = _error_line(capsys, "run", "--home", str(tmp_path / "home"), "--source", s3.url("nothing-here"))
    assert line == f"tledit: source '{s3.url('nothing-here')}' is not a folder, object or glob that exists"
    line = _error_line(capsys, "export", "--home", str(tmp_path / "home"), "--source", source, "--out", "s3://no-such-bucket/x")
    assert line == "tledit: s3://no-such-bucket/x: no such bucket"
    assert not (tmp_path / "home").exists()  # nothing was started


def test_bad_endpoint_is_one_line(tmp_path, monkeypatch, capsys):
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    for var, value in aws_env(endpoint, tmp_path).items():
        monkeypatch.setenv(var, value)
    reset_filesystems()
    try:
        line = _error_line(capsys, "run", "--home", str(tmp_path / "home"), "--source", "s3://corpus/shards/*.jsonl.gz")
    finally:
        reset_filesystems()
    assert line == (
        f"tledit: s3://corpus/shards/*.jsonl.gz: cannot connect to {endpoint} (is it running and reachable? check AWS_ENDPOINT_URL)"
    )


def test_access_denied_is_one_line(s3, small_source, tmp_path, monkeypatch, capsys):
    source = s3.upload_folder(small_source, "corpus")
    keys = iam_user_without_s3(s3.server.endpoint, tmp_path)
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(var, keys[var])
    reset_filesystems()
    s3.server.set_auth(True)
    try:
        line = _error_line(capsys, "run", "--home", str(tmp_path / "home"), "--source", source)
    finally:
        s3.server.set_auth(False)
    assert line == f"tledit: {source}: access denied (check the credentials and the bucket's policy)"
    assert keys["AWS_SECRET_ACCESS_KEY"] not in line


def test_object_gone_between_listing_and_reading(s3, small_source, tmp_path):
    source = s3.upload_folder(small_source, "corpus")
    shards = {s.key: s for s in discover_shards(source, tmp_path)}
    s3.fs.rm_file(f"{s3.bucket}/corpus/alpha.jsonl")
    with pytest.raises(SourceError) as err:
        read_shard(shards["alpha"])
    assert str(err.value) == (
        f"shard 'alpha': {s3.url('corpus/alpha.jsonl')}: no such object (was it removed or renamed after it was listed?)"
    )
    assert read_shard(shards["beta"]).accepted.num_rows == 2  # the others are unaffected


def test_a_missing_fsspec_package_is_named(tmp_path, capsys):
    pytest.importorskip("s3fs")
    try:
        import gcsfs  # noqa: F401

        pytest.skip("gcsfs is installed")
    except ImportError:
        pass
    assert main(["shards", "--home", str(tmp_path), "--source", "gs://bucket/corpus/*.jsonl"]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err == "tledit: gs://bucket/corpus/*.jsonl: the gs:// protocol needs a package that is not installed (pip install gcsfs)"
    )
