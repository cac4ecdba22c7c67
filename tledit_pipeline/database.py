"""The DuckDB file that views the lake: views over each asset's partitions, built whole and swapped in.

Only unpartitioned steps write the DuckDB file, and they never write it in place: `rebuild_database`
builds a new file and renames it over the old one. So parallel runs never meet DuckDB's single-writer
lock, and readers (read-only) never wait for a writer. On an object store the file is built locally and
uploaded whole, and DuckDB reads the lake through the same fsspec filesystem, registered on its
connection (no extension is downloaded at run time).
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from tledit_pipeline import storage
from tledit_pipeline.lake import DATA_FILE, LakeError, is_shard_key, lake_root, partition_file, publish, read_schema
from tledit_pipeline.storage import Location, RemotePath

# Asset name -> the view exposed in DuckDB over its parquet folder.
VIEWS = ("raw_corpus", "rejected_documents", "token_scores", "edited_corpus", "synthetic_corpus", "ngram_profile")


# SQL quoting by hand: DuckDB takes no parameters in DDL (view definitions over file lists).
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
        publish(tmp, target)
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
