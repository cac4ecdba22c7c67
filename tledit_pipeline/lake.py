"""The parquet lake under the data directory: one file per (asset, shard), written atomically.

Partition runs write one parquet file per (asset, shard) through a temporary name and an atomic rename,
so a crashed run never leaves a half partition visible. The data directory may be an object-store URL
(tledit_pipeline.storage): there a partition is built in a local temporary file and sent as one object
under its final key in one PUT (the store's form of the rename). The DuckDB file that views the lake is
tledit_pipeline.database.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from tledit_pipeline import storage
from tledit_pipeline.errors import TleditError
from tledit_pipeline.storage import Location, RemotePath

LAKE_DIR = "lake"
DATA_FILE = "data.parquet"
META_KEY = b"tledit"

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
                publish(self.tmp, self.target)
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


def publish(tmp: Path, target: Location) -> None:
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
        publish(tmp, target)
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
