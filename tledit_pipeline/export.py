"""Export: the edited corpus in the source's own schema, one file per shard, ready for a training tokenizer.

Every source field is kept, in the file's column order, under its source name; the text field holds the
edited text. Documents keep their source order. Rejected rows are not exported (they are listed in the
rejected_documents view with a reason).
"""

from __future__ import annotations

import datetime as _dt
import decimal
import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq

from tledit_pipeline import storage
from tledit_pipeline.errors import TleditError
from tledit_pipeline.generations import text_asset
from tledit_pipeline.lake import partition_file, partition_meta, read_partition, write_file_atomically
from tledit_pipeline.storage import Location

FORMATS = ("jsonl.gz", "parquet")


class ExportError(TleditError):
    """A shard cannot be exported as asked; the message names it."""


def edited_in_source_schema(home: Location, shard: str, edit_version: str | None = None, generation: int = 1) -> pa.Table:
    """The shard's edited documents (generation g) with the source's columns; refuses text edited with other settings."""
    if generation < 1:
        raise ExportError(f"generation must be >= 1 (1 is edited_corpus), got {generation}")
    edited_asset = text_asset(generation)
    for asset in ("raw_corpus", edited_asset):
        if not partition_file(home, asset, shard).exists():
            raise ExportError(f"shard {shard!r} has no {asset}; run `tledit run` first")
    edited_with = partition_meta(home, edited_asset, shard).get("edit")
    if edit_version is not None and edited_with != edit_version:
        raise ExportError(
            f"shard {shard!r} was edited with {edited_with}, not the current {edit_version}; run `tledit run` first"
        )
    meta = partition_meta(home, "raw_corpus", shard)
    if "source_columns" not in meta:
        raise ExportError(f"shard {shard!r}: raw_corpus records no source schema (older run); run `tledit run`")
    raw = read_partition(home, "raw_corpus", shard)
    edited = read_partition(home, edited_asset, shard, columns=["doc_id", "text"])
    if raw.column("doc_id").to_pylist() != edited.column("doc_id").to_pylist():
        raise ExportError(f"shard {shard!r}: {edited_asset} does not match raw_corpus; run `tledit run`")
    columns = meta["source_columns"]  # [source name, name in raw_corpus], in the file's order
    return pa.table({src: (edited.column("text") if name == "text" else raw.column(name)) for src, name in columns})


def _json_default(value):
    if isinstance(value, (_dt.date, _dt.datetime, _dt.time)):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def write_export(table: pa.Table, out_dir: Location | str, shard: str, fmt: str) -> Location:
    """One file per shard, written atomically (one PUT on an object store); the same table gives the same bytes."""
    if fmt not in FORMATS:
        raise ExportError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    target = storage.location(out_dir) / f"{shard}.{fmt}"
    if fmt == "parquet":
        return write_file_atomically(target, lambda p: pq.write_table(table, p, compression="zstd"))
    lines = "".join(json.dumps(row, ensure_ascii=False, default=_json_default) + "\n" for row in table.to_pylist()).encode(
        "utf-8"
    )
    return write_file_atomically(target, lambda p: p.write_bytes(gzip.compress(lines, mtime=0)))


def export_shard(
    home: Location,
    shard: str,
    out_dir: Location | str,
    fmt: str = "jsonl.gz",
    edit_version: str | None = None,
    generation: int = 1,
) -> tuple[Location, int]:
    table = edited_in_source_schema(home, shard, edit_version, generation)
    return write_export(table, out_dir, shard, fmt), table.num_rows
