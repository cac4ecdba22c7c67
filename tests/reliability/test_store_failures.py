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
from tests.s3 import StallingProxy, free_port, iam_user_without_s3, subprocess_env
from tledit_pipeline.lake import DATA_FILE
from tledit_pipeline.source import SourceError, discover_shards, read_shard

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HELD = f"/lake/edited_corpus/shard=alpha/{DATA_FILE}"  # the object being uploaded when the run is killed


def _tledit(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "assets.cli", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )


def _one_line_error(proc: subprocess.CompletedProcess) -> str:
    """The run failed with exit 2 and said why in one line, without a traceback or exception names."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("tledit: "), proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "Error:" not in lines[0] and "Exception" not in lines[0]
    return lines[0]


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


def test_no_such_bucket_is_one_line(s3, small_source, tmp_path):
    env = subprocess_env(tmp_path, s3.server.endpoint)
    line = _one_line_error(
        _tledit(env, "run", "--home", str(tmp_path / "home"), "--source", "s3://no-such-bucket/corpus/*.jsonl")
    )
    assert "s3://no-such-bucket" in line and "no such bucket" in line
    source = s3.upload_folder(small_source, "corpus")
    line = _one_line_error(_tledit(env, "run", "--home", "s3://no-such-bucket/home", "--source", source))
    assert "s3://no-such-bucket" in line and "no such bucket" in line
    line = _one_line_error(_tledit(env, "run", "--home", str(tmp_path / "home"), "--source", s3.url("nothing-here")))
    assert s3.url("nothing-here") in line and "is not a folder, object or glob that exists" in line


def test_bad_endpoint_is_one_line(tmp_path):
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    line = _one_line_error(
        _tledit(
            subprocess_env(tmp_path, endpoint),
            "run",
            "--home",
            str(tmp_path / "home"),
            "--source",
            "s3://corpus/shards/*.jsonl.gz",
        )
    )
    assert "s3://corpus" in line and f"cannot connect to {endpoint}" in line


def test_access_denied_is_one_line(s3, small_source, tmp_path):
    source = s3.upload_folder(small_source, "corpus")
    env = subprocess_env(tmp_path, s3.server.endpoint) | iam_user_without_s3(s3.server.endpoint, tmp_path)
    s3.server.set_auth(True)
    try:
        proc = _tledit(env, "run", "--home", str(tmp_path / "home"), "--source", source)
    finally:
        s3.server.set_auth(False)
    line = _one_line_error(proc)
    assert s3.url() in line and "access denied" in line
    assert env["AWS_SECRET_ACCESS_KEY"] not in proc.stdout + proc.stderr


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
