"""Export: the edited text back in the source's schema, one deterministic file per shard."""

import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import tests.public_corpora as corpora
from tledit_pipeline.export import ExportError, edited_in_source_schema, export_shard
from tledit_pipeline.lake import write_partition
from tledit_pipeline.source import Shard, discover_shards, passthrough_values, read_shard

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


# ---------------------------------------------------------------- each shard in its own format

MAGIC = {"gz": b"\x1f\x8b", "zst": b"\x28\xb5\x2f\xfd", "bz2": b"BZh", "xz": b"\xfd7zXZ\x00", "parquet": b"PAR1"}


def _pipeline_lake(home, shard) -> tuple[list[str], list[str]]:
    """raw_corpus as raw_corpus writes it, and an edited_corpus that changed one word of every other document."""
    read = read_shard(shard)
    meta = {"source_file": shard.path.name, "text_field": "text", "source_columns": list(read.columns.items())}
    write_partition(home, "raw_corpus", shard.key, read.accepted, meta=meta)
    texts = read.accepted.column("text").to_pylist()
    edited = [t.replace(" the ", " a ", 1) if i % 2 else t for i, t in enumerate(texts)]
    table = pa.table({"shard": [shard.key] * len(texts), "doc_id": read.accepted.column("doc_id"), "text": edited})
    write_partition(home, "edited_corpus", shard.key, table, meta={"edit": "p=0.99"})
    return texts, edited


@pytest.mark.parametrize(
    "name, rows",
    corpora.shapes(),
)
def test_export_round_trips_in_the_shards_own_format(tmp_path, name, rows):
    (tmp_path / "src").mkdir()
    corpora.write(tmp_path / "src" / name, rows)
    (shard,) = discover_shards(str(tmp_path / "src"), tmp_path / "home")
    texts, edited = _pipeline_lake(tmp_path / "home", shard)
    assert edited != texts  # something was edited
    path, n = export_shard(tmp_path / "home", shard.key, tmp_path / "out", edit_version="p=0.99")
    assert n == len(rows)
    assert path.name == f"{shard.key}{shard.suffix}" or path.name == f"{shard.key}.snappy.parquet"
    data = path.read_bytes()
    assert data.startswith(MAGIC.get(name.rsplit(".", 1)[-1], b"{")), name
    if name.endswith(".snappy.parquet"):
        assert pq.ParquetFile(path).metadata.row_group(0).column(0).compression == "SNAPPY"
    # Read back by the same reader: every field as in the source, the text field the edited text.
    back = read_shard(Shard(key=shard.key, path=path))
    assert back.rejected.num_rows == 0 and list(back.columns) == list(rows[0])
    assert back.accepted.column("text").to_pylist() == edited
    for field in rows[0]:
        if field != "text":
            got = passthrough_values(back.accepted.column(field))
            assert [json.dumps(v) for v in got] == [json.dumps(r[field]) for r in rows], field
    export_shard(tmp_path / "home", shard.key, tmp_path / "out", edit_version="p=0.99")
    assert path.read_bytes() == data  # deterministic bytes


@pytest.mark.parametrize("name", ["plays.txt", "hf-00000.arrow"])
def test_export_text_and_arrow_shards_in_their_format(tmp_path, name):
    src = tmp_path / "src"
    src.mkdir()
    texts = corpora.texts(5)
    if name.endswith(".txt"):
        (src / name).write_text("".join(t.replace("\n\n", "\n") + "\n\n" for t in texts), encoding="utf-8")
    else:
        table = pa.table({"text": texts, "n": list(range(5))})
        with pa.OSFile(str(src / name), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as out:
            out.write_table(table)
    (shard,) = discover_shards(str(src), tmp_path / "home")
    _, edited = _pipeline_lake(tmp_path / "home", shard)
    path, _ = export_shard(tmp_path / "home", shard.key, tmp_path / "out", edit_version="p=0.99")
    assert path.name == f"{shard.key}{shard.suffix}"
    back = read_shard(Shard(key=shard.key, path=path))
    assert back.accepted.column("text").to_pylist() == edited
    assert back.accepted.column_names == read_shard(shard).accepted.column_names


def test_export_one_format_for_every_shard_still_works(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    corpora.write(src / "00.jsonl.zst", corpora.pile())
    (shard,) = discover_shards(str(src), tmp_path / "home")
    _, edited = _pipeline_lake(tmp_path / "home", shard)
    for fmt in ("jsonl.gz", "parquet"):
        path, _ = export_shard(tmp_path / "home", shard.key, tmp_path / "out", fmt=fmt)
        assert path.name == f"00.{fmt}"
        assert read_shard(Shard(key="00", path=path)).accepted.column("text").to_pylist() == edited
