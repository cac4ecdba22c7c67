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
import re
import shutil
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from tledit_pipeline.errors import TleditError

LAKE_DIR = "lake"
DATA_FILE = "data.parquet"
META_KEY = b"tledit"

# Asset name -> the view exposed in DuckDB over its parquet folder.
VIEWS = ("raw_corpus", "rejected_documents", "token_scores", "edited_corpus", "synthetic_corpus", "ngram_profile")

# Partition keys and asset names become folder names: only these characters, so no key can leave the lake.
_KEY_RE = re.compile(r"^[a-z0-9_-]{1,100}$")
_ASSET_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_TMP_RE = re.compile(r"^\." + re.escape(DATA_FILE) + r"\.(\d+)\.[0-9a-f]{32}\.tmp$")


class LakeError(TleditError):
    """A partition key or asset name that cannot be a lake path (it would escape the data directory)."""


def lake_root(home: Path) -> Path:
    return Path(home) / LAKE_DIR


def partition_file(home: Path, asset: str, shard: str) -> Path:
    """The one file of a partition. Keys are validated, never trusted: a hostile key is an error, not a path."""
    if not is_shard_key(shard):
        raise LakeError(f"{shard!r} is not a valid shard key (1-100 of a-z, 0-9, '-', '_'); refusing to use it as a path")
    if not isinstance(asset, str) or not _ASSET_RE.fullmatch(asset):
        raise LakeError(f"{asset!r} is not a valid asset name")
    return lake_root(home) / asset / f"shard={shard}" / DATA_FILE


class PartitionWriter:
    """Streams tables into one partition; it becomes visible (atomically) only when the block succeeds.

    Fixed writer options and one row group per written table: the same tables give the same bytes.
    `meta` may be set until the block ends; it is stored in the parquet footer as JSON. The writer's pid
    is in the temporary name, so a later writer can tell a killed run's leftover from a live write.
    """

    def __init__(self, home: Path, asset: str, shard: str, schema: pa.Schema):
        self.target = partition_file(home, asset, shard)
        self.asset, self.shard = asset, shard
        self.schema = schema
        self.meta: Mapping[str, Any] | None = None
        self.rows = 0

    def __enter__(self) -> "PartitionWriter":
        self.target.parent.mkdir(parents=True, exist_ok=True)
        _remove_orphans(self.target.parent)
        self.tmp = self.target.parent / f".{DATA_FILE}.{os.getpid()}.{uuid.uuid4().hex}.tmp"
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
                _fsync_dir(self.target.parent)
        finally:
            self.tmp.unlink(missing_ok=True)


def is_shard_key(key: object) -> bool:
    return isinstance(key, str) and bool(_KEY_RE.fullmatch(key))


def _remove_orphans(folder: Path) -> None:
    """Temporary files left by writers that were killed (their process is gone) are removed."""
    for f in folder.iterdir():
        m = _TMP_RE.match(f.name)
        if not m:
            continue
        pid = int(m.group(1))
        if pid == os.getpid():
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            f.unlink(missing_ok=True)
        except PermissionError:  # alive, someone else's
            pass


def write_file_atomically(target: Path, write: Callable[[Path], None]) -> Path:
    """`write(tmp)` fills a temporary file beside `target`, which then replaces it in one rename.

    By hand: no well-kept library writes a file atomically with a caller-supplied writer (DuckDB, pyarrow).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    try:
        write(tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


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


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (a power cut after it must not bring the old file back)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


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


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's content, read in blocks (files may be larger than memory)."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def file_digest(path: Path) -> str:
    """Content hash of a file (16 hex digits): data versions and lineage checks."""
    return file_sha256(path)[:16]


def partition_digest(home: Path, asset: str, shard: str) -> str:
    """Lets a downstream step prove which upstream bytes it was built from."""
    path = partition_file(home, asset, shard)
    if not path.exists():
        raise FileNotFoundError(f"{asset} has no data for shard {shard!r} ({path}); materialize it first")
    return file_digest(path)


def partition_meta(home: Path, asset: str, shard: str) -> dict[str, Any]:
    """The JSON a PartitionWriter stored in the parquet footer ({} if none)."""
    md = pq.ParquetFile(partition_file(home, asset, shard)).metadata.metadata or {}
    return json.loads(md[META_KEY]) if META_KEY in md else {}


def sql_literal(value: str) -> str:
    """Quote a string as a SQL literal. Used only for file paths in view DDL, where DuckDB takes no parameters."""
    return "'" + str(value).replace("'", "''") + "'"


def sql_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def sql_list(values: Sequence[str]) -> str:
    """A SQL list of quoted string literals, e.g. for read_parquet([...])."""
    return "[" + ", ".join(sql_literal(v) for v in values) + "]"


def refresh_views(
    con: duckdb.DuckDBPyConnection, home: Path, shards: Sequence[str], views: Sequence[str] = VIEWS
) -> list[str]:
    """(Re)create one view per asset over the given shards' files; returns the view names made.

    Explicit file lists, not a glob: a view shows exactly the registered shards, never leftovers of an
    earlier source, and paths with glob characters in them stay literal.
    """
    made = []
    for view in views:
        # A key that is not a valid shard key (added by hand in the UI, say) has no files to show.
        paths = [partition_file(home, view, s).absolute() for s in sorted(shards) if is_shard_key(s)]
        paths = [p for p in paths if p.exists()]
        if not paths:
            con.execute(f"DROP VIEW IF EXISTS {sql_identifier(view)}")
            continue
        mixed = _mixed_columns(paths)
        if not mixed:
            con.execute(
                f"CREATE OR REPLACE VIEW {sql_identifier(view)} AS SELECT * FROM read_parquet("
                f"{sql_list([str(p) for p in paths])}, hive_partitioning = false, union_by_name = true)"
            )
        else:
            con.execute(f"CREATE OR REPLACE VIEW {sql_identifier(view)} AS " + sql_union_as_json(paths, mixed))
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


@contextmanager
def amend_database(home: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    """A connection to a copy of <home>/tledit.duckdb (or a new file) that replaces it atomically on success.

    For a step that adds a view to what distribution_health built without writing the file in place, so
    readers never wait. Should a rebuild rename its file at the same moment, the last rename wins; both
    hold only views and tables derived from the lake, and the next rebuild makes them whole again.
    """
    target = Path(home) / DUCKDB_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{DUCKDB_FILE}.{uuid.uuid4().hex}.tmp")
    try:
        if target.exists():
            shutil.copyfile(target, tmp)
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


def _mixed_columns(paths: Sequence[Path]) -> dict[Path, list[str]]:
    """Columns whose type differs between files (a passthrough field that is a number in one shard and an
    object in another), per file that has them. DuckDB cannot union such columns; as JSON they can."""
    schemas = {p: pq.read_schema(p) for p in paths}
    types: dict[str, set] = {}
    for schema in schemas.values():
        for f in schema:
            if f.type != pa.null():  # an all-null column casts to anything
                types.setdefault(f.name, set()).add(f.type)
    mixed = {name for name, ts in types.items() if len(ts) > 1}
    return {p: [n for n in schema.names if n in mixed] for p, schema in schemas.items()} if mixed else {}


def sql_union_as_json(paths: Sequence[Path], mixed: Mapping[Path, list[str]]) -> str:
    """One SELECT per file, the mixed columns turned into JSON, stacked by column name."""
    parts = []
    for p in paths:
        cols = mixed.get(p, [])
        replace = (
            " REPLACE (" + ", ".join(f"to_json({sql_identifier(c)}) AS {sql_identifier(c)}" for c in cols) + ")" if cols else ""
        )
        parts.append(f"SELECT *{replace} FROM read_parquet({sql_literal(str(p))}, hive_partitioning = false)")
    return " UNION ALL BY NAME ".join(parts)


def connect(home: Path, read_only: bool = True) -> duckdb.DuckDBPyConnection:
    path = Path(home) / DUCKDB_FILE
    if read_only and not path.exists():
        raise FileNotFoundError(f"no DuckDB file at {path}; run `tledit run` first")
    path.parent.mkdir(parents=True, exist_ok=True)
    return duckdb.connect(str(path), read_only=read_only)
