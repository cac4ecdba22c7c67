"""Export: the edited text back in the source's schema, one deterministic file per shard."""

import gzip
import json

import pyarrow as pa
import pytest

from tledit_pipeline.export import ExportError, edited_in_source_schema, export_shard
from tledit_pipeline.lake import write_partition

SOURCE_COLUMNS = [["title", "title"], ["text", "source_text"], ["body", "text"], ["when", "when"]]


def _lake(home, edit="p=0.99"):
    raw = pa.table(
        {
            "shard": ["s", "s"],
            "doc_id": ["b", "a"],
            "text": ["raw two", "raw one"],
            "title": ["T2", "T1"],
            "source_text": ["keep", "me"],
            "when": [1, 2],
        }
    )
    meta = {"source_columns": SOURCE_COLUMNS, "text_field": "body", "source_file": "S.jsonl.gz"}
    write_partition(home, "raw_corpus", "s", raw, meta=meta)
    edited = pa.table({"shard": ["s", "s"], "doc_id": ["b", "a"], "text": ["edited two", "raw one"]})
    write_partition(home, "edited_corpus", "s", edited, meta={"edit": edit})


def test_source_schema_order_and_renamed_clashes(tmp_path):
    _lake(tmp_path)
    t = edited_in_source_schema(tmp_path, "s", "p=0.99")
    assert t.column_names == ["title", "text", "body", "when"]
    assert t.to_pylist() == [
        {"title": "T2", "text": "keep", "body": "edited two", "when": 1},
        {"title": "T1", "text": "me", "body": "raw one", "when": 2},
    ]


def test_jsonl_gz_is_deterministic_and_atomic(tmp_path):
    _lake(tmp_path / "home")
    path, rows = export_shard(tmp_path / "home", "s", tmp_path / "out")
    assert rows == 2 and path.name == "s.jsonl.gz"
    first = path.read_bytes()
    assert [json.loads(x)["body"] for x in gzip.decompress(first).decode().splitlines()] == ["edited two", "raw one"]
    export_shard(tmp_path / "home", "s", tmp_path / "out")
    assert path.read_bytes() == first
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["s.jsonl.gz"]


def test_refuses_stale_or_missing_shards(tmp_path):
    _lake(tmp_path, edit="p=0.5")
    with pytest.raises(ExportError, match="edited with p=0.5, not the current p=0.99"):
        edited_in_source_schema(tmp_path, "s", "p=0.99")
    with pytest.raises(ExportError, match="shard 'other' has no raw_corpus"):
        edited_in_source_schema(tmp_path, "other")
    with pytest.raises(ExportError, match="format must be one of"):
        export_shard(tmp_path, "s", tmp_path / "o", fmt="csv")
