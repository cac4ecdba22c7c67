"""The DuckDB file that views the lake: views over each asset's partitions, built whole and swapped in.

Only unpartitioned steps write the DuckDB file, and they never write it in place: `rebuild_database`
builds a new file and renames it over the old one. So parallel runs never meet DuckDB's single-writer
lock, and readers (read-only) never wait for a writer. On an object store the file is built locally and
uploaded whole, and DuckDB reads the lake through the same fsspec filesystem, registered on its
connection (no extension is downloaded at run time).

The file answers only from its own home's lake. Locally its views name files relative to the home and
every connection made here sets DuckDB's `file_search_path` to it, so a copied or moved data directory
reads its own lake (opened by hand: from the data directory, or with that setting). On a store the views
hold URLs (DuckDB resolves relative paths only on its own filesystems), the file records its home, and
`connect` rewrites the views of a file whose home moved.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from tledit_pipeline import storage
from tledit_pipeline.lake import DATA_FILE, LakeError, is_shard_key, lake_root, partition_file, publish, read_schema
from tledit_pipeline.storage import Location, RemotePath

HOME_TABLE = "tledit_home"  # one row: the home whose lake the views read

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


def sql_rehomed(view_sql: str, old: str, new: str) -> str:
    """A view's SQL (as DuckDB stored it for us) with every quoted path under `old` moved under `new`."""
    return view_sql.replace(sql_literal(old + "/")[:-1], sql_literal(new + "/")[:-1])


def search_home(con: duckdb.DuckDBPyConnection, home: Location) -> None:
    """Resolve the views' relative paths against a local home on this connection (views bind when made)."""
    if not isinstance(home, RemotePath):
        con.execute(f"SET file_search_path = {sql_literal(str(Path(str(home)).absolute()))}")


def view_path(home: Location, path: Location) -> str:
    """How a view names a lake file: relative to a local home (resolved through `file_search_path`), a
    store's URL as it is."""
    if isinstance(path, RemotePath):
        return str(path)
    return path.absolute().relative_to(Path(str(home)).absolute()).as_posix()


def refresh_views(
    con: duckdb.DuckDBPyConnection, home: Location, shards: Sequence[str], views: Sequence[str] = VIEWS
) -> list[str]:
    """(Re)create one view per asset over the given shards' files; returns the view names made.

    Explicit file lists, not a glob: a view shows exactly the registered shards, never leftovers of an
    earlier source, and paths with glob characters in them stay literal. On an object store the paths are
    URLs, read through the filesystem registered on the connection (`duckdb_connection`).
    """
    made = []
    search_home(con, home)
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
                f"{sql_list([view_path(home, p) for p in paths])}, hive_partitioning = false, union_by_name = true)"
            )
        else:
            con.execute(f"CREATE OR REPLACE VIEW {sql_identifier(view)} AS " + sql_union_as_json(home, paths, mixed))
        made.append(view)
    return made


def file_view(con: duckdb.DuckDBPyConnection, home: Location, name: str, path: Location) -> bool:
    """View one parquet file of `home`'s lake under `name` when it exists (and drop the view when it does not)."""
    if not path.exists():
        con.execute(f"DROP VIEW IF EXISTS {sql_identifier(name)}")
        return False
    search_home(con, home)
    con.execute(
        f"CREATE OR REPLACE VIEW {sql_identifier(name)} AS SELECT * FROM read_parquet("
        f"{sql_literal(view_path(home, path))}, hive_partitioning = false)"
    )
    return True


def add_file_view(home: Location, name: str, path: Location) -> None:
    """Add view `name` over one lake file to <home>/tledit.duckdb when the file lacks it (a step that writes
    its own table after distribution_health built the file; the view reads the replaced lake file itself)."""
    if (storage.location(home) / DUCKDB_FILE).exists():
        with connect(home, read_only=True) as con:
            row = con.execute("SELECT count(*) FROM duckdb_views() WHERE view_name = $n", {"n": name}).fetchone()
            if row and row[0]:
                return
    with amend_database(home) as con:
        file_view(con, home, name, path)


def lake_table_view(con: duckdb.DuckDBPyConnection, home: Location, table: str) -> bool:
    """View an unpartitioned lake table (lake/<table>/data.parquet, e.g. the source's rejected_files) when it exists."""
    return file_view(con, home, table, lake_root(home) / table / DATA_FILE)


DUCKDB_FILE = "tledit.duckdb"


def duckdb_connection(database: str, home: Location, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection that can read the lake of `home`.

    For a lake on an object store, the store's fsspec filesystem is registered on the connection and
    extension autoloading is off: DuckDB reads the lake through fsspec and never downloads httpfs.
    """
    home = storage.location(home)
    if not isinstance(home, RemotePath):
        return duckdb.connect(database, read_only=read_only, config={"file_search_path": str(Path(home).absolute())})
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
            con.execute(f"CREATE OR REPLACE TABLE {HOME_TABLE} AS SELECT $home AS home", {"home": str(home)})
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


def sql_union_as_json(home: Location, paths: Sequence[Location], mixed: Mapping[Location, list[str]]) -> str:
    """One SELECT per file, the mixed columns turned into JSON, stacked by column name."""
    parts = []
    for p in paths:
        cols = mixed.get(p, [])
        replace = (
            " REPLACE (" + ", ".join(f"to_json({sql_identifier(c)}) AS {sql_identifier(c)}" for c in cols) + ")" if cols else ""
        )
        parts.append(f"SELECT *{replace} FROM read_parquet({sql_literal(view_path(home, p))}, hive_partitioning = false)")
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
        _rehome(local, str(home))
        return duckdb_connection(str(local), home, read_only=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    return duckdb_connection(str(path), home, read_only=read_only)


def _rehome(local: Path, home: str) -> None:
    """Point a store's file at its own lake when it was built under another URL (a copied or moved prefix)."""
    with duckdb_connection(
        str(local), storage.location(home)
    ) as con:  # the store's filesystem: the rewritten views bind through it
        recorded = con.execute(f"SELECT max(home) FROM {HOME_TABLE}").fetchone() if _has_table(con, HOME_TABLE) else None
        old = recorded[0] if recorded else None
        if not old or old == home:
            return
        views = con.execute("SELECT view_name, sql FROM duckdb_views() WHERE NOT internal").fetchall()
        for name, sql in views:
            con.execute(f"DROP VIEW {sql_identifier(name)}")
            con.execute(sql_rehomed(sql, old, home))
        con.execute(f"UPDATE {HOME_TABLE} SET home = $home", {"home": str(home)})


def _has_table(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    row = con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = $n", {"n": name}).fetchone()
    return bool(row and row[0])
