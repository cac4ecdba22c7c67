"""tledit_pipeline.storage and the lake on a real S3-compatible server (moto's, on 127.0.0.1)."""

from __future__ import annotations

import hashlib
import io
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tledit_pipeline import storage
from tledit_pipeline.database import connect, rebuild_database, refresh_views
from tledit_pipeline.lake import (
    DATA_FILE,
    PartitionWriter,
    partition_digest,
    partition_meta,
    read_partition,
    write_file_atomically,
    write_partition,
)
from tledit_pipeline.source import SourceError, discover_shards, file_fingerprint, read_shard
from tledit_pipeline.storage import RemotePath, StorageError


def test_locations_local_and_remote(tmp_path, monkeypatch):
    assert storage.location(str(tmp_path / "x")) == tmp_path / "x"
    assert storage.location(f"file://{tmp_path}/x") == tmp_path / "x"
    remote = storage.location("s3://Bucket/prefix/")
    assert remote == RemotePath("s3://Bucket/prefix") and str(remote / "lake" / "a") == "s3://Bucket/prefix/lake/a"
    assert remote.name == "prefix" and remote.parent == RemotePath("s3://Bucket") and remote.bucket == "Bucket"
    assert not isinstance(remote, os.PathLike)  # never opened as a local file by accident
    with pytest.raises(StorageError, match=r"^nosuch://b/k: unknown storage protocol 'nosuch'$"):
        storage.location("nosuch://b/k")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    assert storage.local_dir(tmp_path) == tmp_path
    mine = storage.local_dir(remote)
    assert mine.parent == tmp_path / "state" / "tledit" and mine.name.startswith("s3-bucket-prefix-")
    assert storage.local_dir(RemotePath("s3://Bucket/other")) != mine


def _table() -> pa.Table:
    return pa.table({"shard": ["a", "a"], "doc_id": ["1", "2"], "text": ["x", "y\u00e9"]})


def test_partitions_on_the_server(s3, tmp_path):
    home = s3.url("home")
    target = write_partition(home, "raw_corpus", "a", _table(), meta={"k": [1, "\u00e9"]})
    assert target == RemotePath(f"{home}/lake/raw_corpus/shard=a/{DATA_FILE}")
    assert s3.keys("home") == [f"home/lake/raw_corpus/shard=a/{DATA_FILE}"]  # one object, no temporaries
    data = s3.fs.cat_file(f"{s3.bucket}/home/lake/raw_corpus/shard=a/{DATA_FILE}")
    assert read_partition(home, "raw_corpus", "a").equals(_table())
    assert partition_meta(home, "raw_corpus", "a") == {"k": [1, "\u00e9"]}
    assert partition_digest(home, "raw_corpus", "a") == hashlib.sha256(data).hexdigest()[:16]
    # The same table gives the same bytes, locally and on the server.
    assert write_partition(tmp_path, "raw_corpus", "a", _table(), meta={"k": [1, "\u00e9"]}).read_bytes() == data
    assert open_rows(home) == 2

    # A failed write leaves the old object as it was, and nothing else.
    with pytest.raises(RuntimeError):
        with PartitionWriter(home, "raw_corpus", "a", _table().schema) as out:
            out.write(_table().slice(0, 1))
            raise RuntimeError("the step failed mid-write")
    assert s3.fs.cat_file(f"{s3.bucket}/home/lake/raw_corpus/shard=a/{DATA_FILE}") == data
    with pytest.raises(FileNotFoundError, match="raw_corpus has no data for shard 'b'"):
        read_partition(home, "raw_corpus", "b")


def open_rows(home: str) -> int:
    from tledit_pipeline.lake import open_partition

    with open_partition(home, "raw_corpus", "a") as fh:
        return sum(b.num_rows for b in fh.iter_batches(batch_size=1))


def test_partition_files_are_sent_in_one_put(s3, tmp_path):
    """Above s3fs's multipart threshold (2 x 50 MiB) still one PUT: the ETag of a multipart upload ends in -N."""
    big = tmp_path / "big.bin"
    with open(big, "wb") as fh:
        fh.truncate(100 * 2**20 + 1)
    target = RemotePath(s3.url("big.bin"))
    storage.put_file(big, target)
    etag = target.stat().etag
    assert "-" not in etag and etag == hashlib.md5(big.read_bytes()).hexdigest()


def test_whole_file_writes_digests_and_stamps(s3, tmp_path):
    target = write_file_atomically(s3.url("out/x.txt"), lambda tmp: tmp.write_bytes(b"hello"))
    assert target.read_bytes() == b"hello" and s3.keys("out") == ["out/x.txt"]
    digest = hashlib.sha256(b"hello").hexdigest()
    assert file_fingerprint(target) == digest[:16]
    assert storage.stamp(target) == [5, target.stat().etag]
    # The digest of this version is remembered: hashing again reads nothing.
    assert storage._known_digest(target, 5, target.stat().etag) == digest
    s3.fs.pipe_file(f"{s3.bucket}/out/x.txt", b"HELLO")  # a new version: a new ETag, hashed anew
    assert file_fingerprint(target) == hashlib.sha256(b"HELLO").hexdigest()[:16]
    with pytest.raises(StorageError, match=rf"^{s3.url('out/gone.txt')}: no such object"):
        RemotePath(s3.url("out/gone.txt")).read_bytes()
    assert storage.existing(RemotePath(s3.url("out")), ["x.txt", "y.txt"]) == {"x.txt"}


def test_duckdb_reads_the_lake_through_fsspec(s3, tmp_path, monkeypatch):
    home = storage.location(s3.url("home"))
    for shard in ("a", "b"):
        write_partition(home, "raw_corpus", shard, _table().set_column(0, "shard", pa.array([shard] * 2)))
    with rebuild_database(home) as con:
        assert refresh_views(con, home, ["a", "b", "c"]) == ["raw_corpus"]
        con.execute("CREATE TABLE t AS SELECT count(*) AS n FROM raw_corpus")
    assert s3.keys("home")[-1] == "home/tledit.duckdb"
    with connect(home) as con:  # a local copy, read-only, that still reads the lake on the server
        assert con.execute("SELECT n FROM t").fetchone() == (4,)
        assert con.execute("SELECT count(DISTINCT shard) FROM raw_corpus").fetchone() == (2,)
        assert con.execute("SELECT count(*) FROM duckdb_extensions() WHERE loaded AND extension_name = 'httpfs'").fetchone() == (
            0,
        )


def test_sources_on_the_server(s3, small_source, tmp_path):
    (small_source / "notes.md").write_text("not a shard")
    (small_source / ".hidden.jsonl").write_text('{"text": "x"}\n')
    prefix = s3.upload_folder(small_source, "corpus")
    assert [(s.key, str(s.path)) for s in discover_shards(prefix, tmp_path)] == [
        ("alpha", f"{prefix}/alpha.jsonl"),
        ("beta", f"{prefix}/beta.jsonl.gz"),
    ]
    assert [s.key for s in discover_shards(f"{prefix}/*.jsonl.gz", tmp_path)] == ["beta"]
    assert [s.key for s in discover_shards(f"{prefix}/alpha.jsonl", tmp_path)] == ["alpha"]
    assert discover_shards(f"{prefix}/*.parquet", tmp_path) == []
    with pytest.raises(SourceError, match="notes.md is not a .jsonl"):
        discover_shards(f"{prefix}/notes.md", tmp_path)
    # Read exactly as locally: the same documents, rejects and content hash.
    for shard in discover_shards(prefix, tmp_path):
        remote, local = read_shard(shard), read_shard(discover_shards(str(small_source / shard.path.name), tmp_path)[0])
        assert remote.accepted.equals(local.accepted) and remote.digest == local.digest
        assert remote.digest == file_fingerprint(small_source / shard.path.name)


def test_parquet_roundtrip_of_an_export(s3, tmp_path):
    from tledit_pipeline.export import write_export

    target = write_export(_table(), s3.url("export"), "a", "parquet")
    assert pq.read_table(io.BytesIO(target.read_bytes())).equals(_table())
