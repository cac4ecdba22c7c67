"""The parquet lake under the data directory and the DuckDB file that views it.

Partition runs write one parquet file per (asset, shard) through a temporary name and an atomic rename,
so a crashed run never leaves a half partition visible. Only unpartitioned steps write the DuckDB file,
and they never write it in place: `rebuild_database` builds a new file and renames it over the old one.
So parallel runs never meet DuckDB's single-writer lock, and readers (read-only) never wait for a writer.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

LAKE_DIR = "lake"
DATA_FILE = "data.parquet"
META_KEY = b"tledit"

# Asset name -> the view exposed in DuckDB over its parquet folder.
VIEWS = ("raw_corpus", "rejected_documents", "token_scores", "edited_corpus", "synthetic_corpus", "ngram_profile")


def lake_root(home: Path) -> Path:
    return Path(home) / LAKE_DIR


def partition_file(home: Path, asset: str, shard: str) -> Path:
    return lake_root(home) / asset / f"shard={shard}" / DATA_FILE


class PartitionWriter:
    """Streams tables into one partition; it becomes visible (atomically) only when the block succeeds.

    Fixed writer options and one row group per written table: the same tables give the same bytes.
    `meta` may be set until the block ends; it is stored in the parquet footer as JSON.
    """

    def __init__(self, home: Path, asset: str, shard: str, schema: pa.Schema):
        self.target = partition_file(home, asset, shard)
        self.schema = schema
        self.meta: Mapping[str, Any] | None = None
        self.rows = 0

    def __enter__(self) -> "PartitionWriter":
        self.target.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.target.parent / f".{DATA_FILE}.{uuid.uuid4().hex}.tmp"
        self.writer = pq.ParquetWriter(self.tmp, self.schema, compression="zstd", write_statistics=True, store_schema=True)
        return self

    def write(self, table: pa.Table) -> None:
        if table.num_rows:
            self.writer.write_table(table.cast(self.schema))
            self.rows += table.num_rows

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None and self.meta is not None:
                self.writer.add_key_value_metadata({META_KEY: json.dumps(self.meta, sort_keys=True).encode()})
            self.writer.close()
            if exc_type is None:
                with open(self.tmp, "rb") as fh:
                    os.fsync(fh.fileno())
                os.replace(self.tmp, self.target)
        finally:
            self.tmp.unlink(missing_ok=True)


def write_partition(
    home: Path,
    asset: str,
    shard: str,
    table: pa.Table,
    meta: Mapping[str, Any] | None = None,
) -> Path:
    """Write one partition atomically; `meta` is stored in the parquet footer as JSON."""
    with PartitionWriter(home, asset, shard, table.schema) as out:
        out.write(table)
        out.meta = meta
    return out.target


def open_partition(home: Path, asset: str, shard: str) -> pq.ParquetFile:
    """For streaming reads; a missing partition is a clear error naming the asset and shard."""
    path = partition_file(home, asset, shard)
    if not path.exists():
        raise FileNotFoundError(
            f"{asset} has no data for shard {shard!r} ({path}); materialize it first"
        )
    return pq.ParquetFile(path)


def read_partition(home: Path, asset: str, shard: str, columns: list[str] | None = None) -> pa.Table:
    """One partition's table; a missing one is a clear error naming the asset and shard."""
    # ParquetFile, not read_table: one file needs no dataset layer (whose import costs a second, pandas included).
    with open_partition(home, asset, shard) as fh:
        return fh.read(columns=columns)


def file_digest(path: Path) -> str:
    """Content hash of a file (16 hex digits): data versions and lineage checks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def partition_digest(home: Path, asset: str, shard: str) -> str:
    """Lets a downstream step prove which upstream bytes it was built from."""
    return file_digest(partition_file(home, asset, shard))


def partition_meta(home: Path, asset: str, shard: str) -> dict[str, Any]:
    """The JSON a PartitionWriter stored in the parquet footer ({} if none)."""
    md = pq.ParquetFile(partition_file(home, asset, shard)).metadata.metadata or {}
    return json.loads(md[META_KEY]) if META_KEY in md else {}


def sql_literal(value: str) -> str:
    """Quote a string as a SQL literal. Used only for file paths in view DDL, where DuckDB takes no parameters."""
    return "'" + str(value).replace("'", "''") + "'"


def sql_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def refresh_views(con: duckdb.DuckDBPyConnection, home: Path, shards: Sequence[str]) -> list[str]:
    """(Re)create one view per asset over the given shards' files; returns the view names made.

    Explicit file lists, not a glob: a view shows exactly the registered shards, never leftovers of an
    earlier source, and paths with glob characters in them stay literal.
    """
    made = []
    for view in VIEWS:
        paths = [partition_file(home, view, s).absolute() for s in sorted(shards)]
        paths = [p for p in paths if p.exists()]
        if not paths:
            con.execute(f"DROP VIEW IF EXISTS {sql_identifier(view)}")
            continue
        files = "[" + ", ".join(sql_literal(str(p)) for p in paths) + "]"
        con.execute(
            f"CREATE OR REPLACE VIEW {sql_identifier(view)} AS SELECT * FROM read_parquet("
            f"{files}, hive_partitioning = false, union_by_name = true)"
        )
        made.append(view)
    return made


DUCKDB_FILE = "tledit.duckdb"


@contextmanager
def rebuild_database(home: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    """A connection to a fresh DuckDB file that replaces <home>/tledit.duckdb atomically on success.

    Everything in the file is derived (views over the lake, the health table), so it is rebuilt, not
    updated: two runs building it at once each write their own file and the last rename wins.
    """
    target = Path(home) / DUCKDB_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{DUCKDB_FILE}.{uuid.uuid4().hex}.tmp")
    try:
        con = duckdb.connect(str(tmp))
        try:
            yield con
            con.execute("CHECKPOINT")
        finally:
            con.close()
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
        tmp.with_name(tmp.name + ".wal").unlink(missing_ok=True)


def connect(home: Path, read_only: bool = True) -> duckdb.DuckDBPyConnection:
    path = Path(home) / DUCKDB_FILE
    if read_only and not path.exists():
        raise FileNotFoundError(f"no DuckDB file at {path}; run `tledit run` first")
    path.parent.mkdir(parents=True, exist_ok=True)
    return duckdb.connect(str(path), read_only=read_only)
