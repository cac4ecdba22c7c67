"""Export: the edited corpus in the source's own schema, one file per shard, ready for a training tokenizer.

Every source field is kept, in the file's column order, under its source name; the text field holds the
edited text. Documents keep their source order. Rejected rows are not exported (they are listed in the
rejected_documents view with a reason).

By default a shard is written in its source file's own format and compression (`source`): a `.json.gz`
shard as gzip JSON lines named `.json.gz`, a `.jsonl.zst` as zstd JSON lines, `.parquet` as parquet (zstd;
snappy for a `.snappy.parquet`), `.arrow` as an Arrow IPC stream, `.txt` as paragraphs separated by a
blank line. `jsonl.gz` or `parquet` ask for one format for every shard. The same table always gives the
same bytes (gzip without a timestamp, fixed compression levels).
"""

from __future__ import annotations

import bz2
import datetime as _dt
import decimal
import gzip
import json
import lzma
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from tledit_pipeline import storage
from tledit_pipeline.errors import TleditError
from tledit_pipeline.generations import text_asset
from tledit_pipeline.lake import partition_file, partition_meta, read_partition, write_file_atomically
from tledit_pipeline.source import COMPRESSIONS, format_suffix, passthrough_values
from tledit_pipeline.source import FORMATS as SOURCE_FORMATS
from tledit_pipeline.storage import Location

SOURCE = "source"  # each shard in its source file's own format and compression
# What `--format` takes: `source`, or one format for every shard.
FORMATS = (SOURCE, "jsonl.gz", "parquet")
# Every format a shard can be written in: a source suffix without its dot (`json.zst`), or `snappy.parquet`.
WRITABLE = frozenset({suffix[1:] for suffix in SOURCE_FORMATS} | {"snappy.parquet"})


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


def source_format(home: Location, shard: str) -> str:
    """The format of the shard's source file, as its suffix without the dot (`json.gz`, `snappy.parquet`)."""
    name = str(partition_meta(home, "raw_corpus", shard).get("source_file", "")).lower()
    if name.endswith(".snappy.parquet"):
        return "snappy.parquet"
    suffix = format_suffix(name)
    if not suffix:
        raise ExportError(f"shard {shard!r}: raw_corpus records no source file name with a known format; run `tledit run`")
    return suffix[1:]


def _json_lines(table: pa.Table) -> bytes:
    """One JSON object per row, the source's fields in order; a JSON passthrough column as its original values."""
    columns = {name: passthrough_values(table.column(name)) for name in table.column_names}
    rows = (dict(zip(columns, values)) for values in zip(*columns.values()))
    return "".join(json.dumps(row, ensure_ascii=False, default=_json_default) + "\n" for row in rows).encode("utf-8")


def _compress(data: bytes, compression: str | None) -> bytes:
    """Deterministic bytes for each compression a JSON-lines shard may carry."""
    if compression == "gzip":
        return gzip.compress(data, mtime=0)
    if compression == "bz2":
        return bz2.compress(data)
    if compression == "xz":
        return lzma.compress(data, format=lzma.FORMAT_XZ)
    if compression == "zstd":
        import zstandard

        return zstandard.ZstdCompressor(level=3).compress(data)
    return data


def _writer(table: pa.Table, fmt: str) -> Callable[[Path], object]:
    if fmt.endswith("parquet"):
        codec = "snappy" if fmt == "snappy.parquet" else "zstd"
        return lambda p: pq.write_table(table, p, compression=codec)
    if fmt == "arrow":  # the stream format, as a Hugging Face dataset's files

        def write_arrow(p: Path) -> None:
            with pa.OSFile(str(p), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as out:
                out.write_table(table)

        return write_arrow
    if fmt == "txt":  # the one column is the text; paragraphs as they were read: a blank line between documents
        texts = table.column(0).to_pylist() if table.num_columns else []
        return lambda p: p.write_bytes("".join(t + "\n\n" for t in texts).encode("utf-8"))
    compression = COMPRESSIONS.get("." + fmt.rsplit(".", 1)[-1])
    return lambda p: p.write_bytes(_compress(_json_lines(table), compression))


def write_export(table: pa.Table, out_dir: Location | str, shard: str, fmt: str) -> Location:
    """One file per shard, `<shard>.<fmt>`, written atomically (one PUT on an object store); the same table
    gives the same bytes."""
    if fmt not in WRITABLE:
        raise ExportError(f"format must be one of {', '.join(FORMATS)} (or a source format), got {fmt!r}")
    return write_file_atomically(storage.location(out_dir) / f"{shard}.{fmt}", _writer(table, fmt))


def export_shard(
    home: Location,
    shard: str,
    out_dir: Location | str,
    fmt: str = SOURCE,
    edit_version: str | None = None,
    generation: int = 1,
) -> tuple[Location, int]:
    """Write one shard's edited documents; `fmt` is `source` (the shard's own format), jsonl.gz or parquet."""
    if fmt not in WRITABLE | {SOURCE}:
        raise ExportError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    table = edited_in_source_schema(home, shard, edit_version, generation)
    return write_export(table, out_dir, shard, source_format(home, shard) if fmt == SOURCE else fmt), table.num_rows
