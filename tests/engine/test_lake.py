"""The parquet lake: atomic, reproducible partition files."""

from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tledit_pipeline.lake import DATA_FILE, lake_root, partition_file, partition_meta, read_partition, write_partition


def _table(shard: str = "a", n: int = 3) -> pa.Table:
    return pa.table(
        {
            "shard": [shard] * n,
            "doc_id": [f"{shard}-{i}" for i in range(n)],
            "text": [f"text {i} \u00e9\U0001f600" for i in range(n)],
            "n": pa.array(range(n), pa.int32()),
        }
    )


def _all_files(root):
    return [os.path.join(d, f) for d, _, files in os.walk(root) for f in files]


def test_write_partition_is_atomic_and_readable(tmp_path):
    meta = {"fingerprint": "abc123", "rows": 3, "nested": {"k": [1, 2]}, "text": "it's \u00e9"}
    path = write_partition(tmp_path, "raw_corpus", "a", _table(), meta=meta)
    assert path == partition_file(tmp_path, "raw_corpus", "a")
    assert path == lake_root(tmp_path) / "raw_corpus" / "shard=a" / DATA_FILE
    assert [f for f in _all_files(tmp_path) if f.endswith(".tmp")] == []
    assert os.listdir(path.parent) == [DATA_FILE]
    back = read_partition(tmp_path, "raw_corpus", "a")
    assert back.select(_table().column_names).equals(_table())
    assert partition_meta(tmp_path, "raw_corpus", "a") == meta
    assert read_partition(tmp_path, "raw_corpus", "a", columns=["doc_id"]).column_names == ["doc_id"]


def test_partition_without_meta(tmp_path):
    write_partition(tmp_path, "raw_corpus", "b", _table("b"))
    assert partition_meta(tmp_path, "raw_corpus", "b") == {}


def test_existing_schema_metadata_is_kept(tmp_path):
    t = _table().replace_schema_metadata({b"other": b"value"})
    write_partition(tmp_path, "raw_corpus", "a", t, meta={"x": 1})
    md = pq.read_schema(partition_file(tmp_path, "raw_corpus", "a")).metadata
    assert md[b"other"] == b"value"
    assert partition_meta(tmp_path, "raw_corpus", "a") == {"x": 1}


def test_rewriting_gives_identical_bytes(tmp_path):
    meta = {"b": 2, "a": 1}
    p = write_partition(tmp_path, "token_scores", "s", _table("s", 50), meta=meta)
    first = p.read_bytes()
    write_partition(tmp_path, "token_scores", "s", _table("s", 50), meta=dict(reversed(list(meta.items()))))
    assert p.read_bytes() == first
    other = write_partition(tmp_path / "elsewhere", "token_scores", "s", _table("s", 50), meta=meta)
    assert other.read_bytes() == first
    assert [f for f in _all_files(tmp_path) if f.endswith(".tmp")] == []


def test_rewrite_replaces_the_partition(tmp_path):
    write_partition(tmp_path, "raw_corpus", "a", _table("a", 5))
    write_partition(tmp_path, "raw_corpus", "a", _table("a", 2), meta={"v": 2})
    assert read_partition(tmp_path, "raw_corpus", "a").num_rows == 2
    assert partition_meta(tmp_path, "raw_corpus", "a") == {"v": 2}


def test_failed_write_leaves_no_partition_and_no_tmp(tmp_path, monkeypatch):
    import tledit_pipeline.lake as lake

    class Boom(Exception):
        pass

    real_write = lake.pq.ParquetWriter.write_table

    def failing(self, table, *a, **kw):  # writes part of the rows, then the disk fills up
        real_write(self, table.slice(0, 1))
        raise Boom("disk full")

    monkeypatch.setattr(lake.pq.ParquetWriter, "write_table", failing)
    with pytest.raises(Boom):
        write_partition(tmp_path, "raw_corpus", "a", _table())
    monkeypatch.undo()
    assert not partition_file(tmp_path, "raw_corpus", "a").exists()
    assert [f for f in _all_files(tmp_path) if f.endswith(".tmp")] == []
    # A crash while rewriting keeps the previous, complete partition.
    write_partition(tmp_path, "raw_corpus", "a", _table("a", 4))
    monkeypatch.setattr(lake.pq.ParquetWriter, "write_table", failing)
    with pytest.raises(Boom):
        write_partition(tmp_path, "raw_corpus", "a", _table("a", 1))
    monkeypatch.undo()
    assert read_partition(tmp_path, "raw_corpus", "a").num_rows == 4


def test_read_missing_partition_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="materialize it first"):
        read_partition(tmp_path, "raw_corpus", "nope")
