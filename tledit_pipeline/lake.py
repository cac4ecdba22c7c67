"""The parquet lake under the data directory and the DuckDB file that views it.

Partition runs write one parquet file per (asset, shard) through a temporary name and an atomic rename,
so a crashed run never leaves a half partition visible. Only unpartitioned steps write the DuckDB file,
and they never write it in place: `rebuild_database` builds a new file and renames it over the old one.
So parallel runs never meet DuckDB's single-writer lock, and readers (read-only) never wait for a writer.

The data directory may be an object-store URL (tledit_pipeline.storage): there a partition is built in a
local temporary file and sent as one object under its final key in one PUT (the store's form of the
rename), the DuckDB file is built locally and uploaded whole, and DuckDB reads the lake through the same
fsspec filesystem, registered on its connection (no extension is downloaded at run time).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from tledit_pipeline import storage
from tledit_pipeline.errors import TleditError
from tledit_pipeline.storage import Location, RemotePath

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


def check_home(home: Location) -> None:
    """Fail early, in one line, when a data directory on an object store cannot be used (no such bucket,
    access denied, an endpoint that does not answer): before any work starts, not in every step."""
    home = storage.location(home)
    if isinstance(home, RemotePath):
        storage.check_bucket(home)


def lake_root(home: Location) -> Location:
    return storage.location(home) / LAKE_DIR


def partition_file(home: Location, asset: str, shard: str) -> Location:
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
    On an object store the temporary file is local and the partition is sent in one PUT at the end.
    """

    def __init__(self, home: Location, asset: str, shard: str, schema: pa.Schema):
        self.target = partition_file(home, asset, shard)
        self.asset, self.shard = asset, shard
        self.schema = schema
        self.meta: Mapping[str, Any] | None = None
        self.rows = 0

    def __enter__(self) -> "PartitionWriter":
        if isinstance(self.target, RemotePath):
            self.tmp = storage.spool_file(DATA_FILE)
        else:
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
                _publish(self.tmp, self.target)
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


def _publish(tmp: Path, target: Location) -> None:
    """Make a finished temporary file the target: a durable rename on disk, one PUT on an object store."""
    if isinstance(target, RemotePath):
        storage.put_file(tmp, target)
        return
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, target)
    _fsync_dir(target.parent)


def write_file_atomically(target: Location, write: Callable[[Path], object]) -> Location:
    """`write(tmp)` fills a temporary file, which then replaces `target` in one rename (one PUT on a store).

    By hand: no well-kept library writes a file atomically with a caller-supplied writer (DuckDB, pyarrow).
    """
    target = storage.location(target)
    if isinstance(target, RemotePath):
        tmp = storage.spool_file(target.name)
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    try:
        write(tmp)
        if isinstance(target, RemotePath):
            storage.put_file(tmp, target)
        else:
            os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def write_partition(
    home: Location,
    asset: str,
    shard: str,
    table: pa.Table,
    meta: Mapping[str, Any] | None = None,
) -> Location:
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


def _existing_partition(home: Location, asset: str, shard: str) -> Location:
    path = partition_file(home, asset, shard)
    if not path.exists():
        raise FileNotFoundError(f"{asset} has no data for shard {shard!r} ({path}); materialize it first")
    return path


def open_partition(home: Location, asset: str, shard: str) -> pq.ParquetFile:
    """For streaming reads; a missing partition is a clear error naming the asset and shard.

    On an object store the object is fetched to a local temporary file first, in one streamed read ahead
    of the reader (the open file outlives its name, which is removed at once).
    """
    path = _existing_partition(home, asset, shard)
    if not isinstance(path, RemotePath):
        return pq.ParquetFile(path)
    tmp = storage.spool_file(DATA_FILE)
    try:
        storage.fetch(path, tmp)
        return pq.ParquetFile(pa.OSFile(str(tmp)))
    finally:
        tmp.unlink(missing_ok=True)


def read_partition(home: Location, asset: str, shard: str, columns: list[str] | None = None) -> pa.Table:
    """One partition's table; a missing one is a clear error naming the asset and shard."""
    path = _existing_partition(home, asset, shard)
    # ParquetFile, not read_table: one file needs no dataset layer (whose import costs a second, pandas included).
    source = pa.BufferReader(path.read_bytes()) if isinstance(path, RemotePath) else path
    with pq.ParquetFile(source) as fh:
        return fh.read(columns=columns)


def read_file_table(path: Location, columns: list[str] | None = None) -> pa.Table:
    """A whole parquet file or object (an export, a vocabulary) as one table."""
    source = pa.BufferReader(path.read_bytes()) if isinstance(path, RemotePath) else path
    with pq.ParquetFile(source) as fh:
        return fh.read(columns=columns)


def file_sha256(path: Location) -> str:
    """SHA-256 of a file's or object's content, read in blocks (files may be larger than memory)."""
    return storage.sha256(storage.location(path))


def file_digest(path: Location) -> str:
    """Content hash of a file (16 hex digits): data versions and lineage checks (never an ETag)."""
    return file_sha256(path)[:16]


def partition_digest(home: Location, asset: str, shard: str) -> str:
    """Lets a downstream step prove which upstream bytes it was built from."""
    return file_digest(_existing_partition(home, asset, shard))


def read_schema(path: Location) -> pa.Schema:
    """A parquet file's schema with its footer metadata (on a store: ranged reads of the footer only)."""
    if isinstance(path, RemotePath):
        with storage.open_read(path) as fh:
            return pq.read_schema(fh)
    return pq.read_schema(path)


def partition_meta(home: Location, asset: str, shard: str) -> dict[str, Any]:
    """The JSON a PartitionWriter stored in the parquet footer ({} if none)."""
    path = partition_file(home, asset, shard)
    if isinstance(path, RemotePath):
        with storage.open_read(path) as fh:
            md = pq.read_metadata(fh).metadata or {}
    else:
        md = pq.read_metadata(path).metadata or {}
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
    con: duckdb.DuckDBPyConnection, home: Location, shards: Sequence[str], views: Sequence[str] = VIEWS
) -> list[str]:
    """(Re)create one view per asset over the given shards' files; returns the view names made.

    Explicit file lists, not a glob: a view shows exactly the registered shards, never leftovers of an
    earlier source, and paths with glob characters in them stay literal. On an object store the paths are
    URLs, read through the filesystem registered on the connection (`duckdb_connection`).
    """
    made = []
    for view in views:
        # A key that is not a valid shard key (added by hand in the UI, say) has no files to show.
        keys = [s for s in sorted(shards) if is_shard_key(s)]
        present = storage.existing(lake_root(home) / view, [f"shard={s}/{DATA_FILE}" for s in keys])  # one listing
        paths = [partition_file(home, view, s).absolute() for s in keys if f"shard={s}/{DATA_FILE}" in present]
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


def duckdb_connection(database: str, home: Location, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection that can read the lake of `home`.

    For a lake on an object store, the store's fsspec filesystem is registered on the connection and
    extension autoloading is off: DuckDB reads the lake through fsspec and never downloads httpfs.
    """
    home = storage.location(home)
    if not isinstance(home, RemotePath):
        return duckdb.connect(database, read_only=read_only)
    con = duckdb.connect(
        database,
        read_only=read_only,
        config={"autoinstall_known_extensions": False, "autoload_known_extensions": False},
    )
    con.register_filesystem(home.fs)
    return con


@contextmanager
def rebuild_database(home: Location) -> Iterator[duckdb.DuckDBPyConnection]:
    """A connection to a fresh DuckDB file that replaces <home>/tledit.duckdb atomically on success.

    Everything in the file is derived (views over the lake, the health table), so it is rebuilt, not
    updated: two runs building it at once each write their own file and the last rename wins. On an
    object store the file is built locally and uploaded whole, in one PUT.
    """
    with _replace_database(home, keep=False) as con:
        yield con


@contextmanager
def _replace_database(home: Location, keep: bool) -> Iterator[duckdb.DuckDBPyConnection]:
    """A temporary DuckDB file (a copy of the current one when `keep`) that replaces it on success."""
    target = storage.location(home) / DUCKDB_FILE
    if isinstance(target, RemotePath):
        tmp = storage.spool_file(DUCKDB_FILE)
        tmp.unlink()  # DuckDB creates its own file
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{DUCKDB_FILE}.{uuid.uuid4().hex}.tmp")
    try:
        if keep and target.exists():
            if isinstance(target, RemotePath):
                storage.fetch(target, tmp)
            else:
                shutil.copyfile(target, tmp)
        con = duckdb_connection(str(tmp), home)
        try:
            yield con
            con.execute("CHECKPOINT")
        finally:
            con.close()
        if isinstance(target, RemotePath):
            storage.put_file(tmp, target)
        else:
            os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
        tmp.with_name(tmp.name + ".wal").unlink(missing_ok=True)


@contextmanager
def amend_database(home: Location) -> Iterator[duckdb.DuckDBPyConnection]:
    """A connection to a copy of <home>/tledit.duckdb (or a new file) that replaces it atomically on success.

    For a step that adds a view to what distribution_health built without writing the file in place, so
    readers never wait. Should a rebuild rename its file at the same moment, the last rename wins; both
    hold only views and tables derived from the lake, and the next rebuild makes them whole again.
    """
    with _replace_database(home, keep=True) as con:
        yield con


def _mixed_columns(paths: Sequence[Location]) -> dict[Location, list[str]]:
    """Columns whose type differs between files (a passthrough field that is a number in one shard and an
    object in another), per file that has them. DuckDB cannot union such columns; as JSON they can."""
    if any(isinstance(p, RemotePath) for p in paths):
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(16) as pool:  # footers of a store's objects: many small requests at once
            schemas = dict(zip(paths, pool.map(read_schema, paths), strict=True))
    else:
        schemas = {p: pq.read_schema(p) for p in paths}
    types: dict[str, set] = {}
    for schema in schemas.values():
        for f in schema:
            if f.type != pa.null():  # an all-null column casts to anything
                types.setdefault(f.name, set()).add(f.type)
    mixed = {name for name, ts in types.items() if len(ts) > 1}
    return {p: [n for n in schema.names if n in mixed] for p, schema in schemas.items()} if mixed else {}


def sql_union_as_json(paths: Sequence[Location], mixed: Mapping[Location, list[str]]) -> str:
    """One SELECT per file, the mixed columns turned into JSON, stacked by column name."""
    parts = []
    for p in paths:
        cols = mixed.get(p, [])
        replace = (
            " REPLACE (" + ", ".join(f"to_json({sql_identifier(c)}) AS {sql_identifier(c)}" for c in cols) + ")" if cols else ""
        )
        parts.append(f"SELECT *{replace} FROM read_parquet({sql_literal(str(p))}, hive_partitioning = false)")
    return " UNION ALL BY NAME ".join(parts)


def connect(home: Location, read_only: bool = True) -> duckdb.DuckDBPyConnection:
    """The data directory's DuckDB file. On an object store: a local copy of it, read-only, that reads the
    lake through the store (the file there is only ever replaced whole, by rebuild_database)."""
    home = storage.location(home)
    path = home / DUCKDB_FILE
    if read_only and not path.exists():
        raise FileNotFoundError(f"no DuckDB file at {path}; run `tledit run` first")
    if isinstance(path, RemotePath):
        if not read_only:
            raise LakeError(f"{path} is rebuilt whole by distribution_health, never written in place")
        local = storage.copy_to_local(path, storage.local_dir(home) / DUCKDB_FILE)
        return duckdb_connection(str(local), home, read_only=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    return duckdb.connect(str(path), read_only=read_only)
