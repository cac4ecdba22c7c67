"""The parquet lake: atomic, reproducible partition files and DuckDB views over them."""

from __future__ import annotations

import os

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tledit_pipeline.lake import (
    DATA_FILE,
    VIEWS,
    connect,
    lake_root,
    partition_file,
    partition_meta,
    read_partition,
    refresh_views,
    sql_identifier,
    sql_literal,
    write_partition,
)


def _table(shard: str = "a", n: int = 3) -> pa.Table:
    return pa.table(
        {
            "shard": [shard] * n,
            "doc_id": [f"{shard}-{i}" for i in range(n)],
            "text": [f"text {i} \u00e9\U0001f600" for i in range(n)],
            "n": pa.array(range(n), pa.int32()),
        }
    )


def _all_files(root):
    return [os.path.join(d, f) for d, _, files in os.walk(root) for f in files]


def test_write_partition_is_atomic_and_readable(tmp_path):
    meta = {"fingerprint": "abc123", "rows": 3, "nested": {"k": [1, 2]}, "text": "it's \u00e9"}
    path = write_partition(tmp_path, "raw_corpus", "a", _table(), meta=meta)
    assert path == partition_file(tmp_path, "raw_corpus", "a")
    assert path == lake_root(tmp_path) / "raw_corpus" / "shard=a" / DATA_FILE
    assert [f for f in _all_files(tmp_path) if f.endswith(".tmp")] == []
    assert os.listdir(path.parent) == [DATA_FILE]
    back = read_partition(tmp_path, "raw_corpus", "a")
    assert back.select(_table().column_names).equals(_table())
    assert partition_meta(tmp_path, "raw_corpus", "a") == meta
    assert read_partition(tmp_path, "raw_corpus", "a", columns=["doc_id"]).column_names == ["doc_id"]


def test_partition_without_meta(tmp_path):
    write_partition(tmp_path, "raw_corpus", "b", _table("b"))
    assert partition_meta(tmp_path, "raw_corpus", "b") == {}


def test_existing_schema_metadata_is_kept(tmp_path):
    t = _table().replace_schema_metadata({b"other": b"value"})
    write_partition(tmp_path, "raw_corpus", "a", t, meta={"x": 1})
    md = pq.read_schema(partition_file(tmp_path, "raw_corpus", "a")).metadata
    assert md[b"other"] == b"value"
    assert partition_meta(tmp_path, "raw_corpus", "a") == {"x": 1}


def test_rewriting_gives_identical_bytes(tmp_path):
    meta = {"b": 2, "a": 1}
    p = write_partition(tmp_path, "token_scores", "s", _table("s", 50), meta=meta)
    first = p.read_bytes()
    write_partition(tmp_path, "token_scores", "s", _table("s", 50), meta=dict(reversed(list(meta.items()))))
    assert p.read_bytes() == first
    other = write_partition(tmp_path / "elsewhere", "token_scores", "s", _table("s", 50), meta=meta)
    assert other.read_bytes() == first
    assert [f for f in _all_files(tmp_path) if f.endswith(".tmp")] == []


def test_rewrite_replaces_the_partition(tmp_path):
    write_partition(tmp_path, "raw_corpus", "a", _table("a", 5))
    write_partition(tmp_path, "raw_corpus", "a", _table("a", 2), meta={"v": 2})
    assert read_partition(tmp_path, "raw_corpus", "a").num_rows == 2
    assert partition_meta(tmp_path, "raw_corpus", "a") == {"v": 2}


def test_failed_write_leaves_no_partition_and_no_tmp(tmp_path, monkeypatch):
    import tledit_pipeline.lake as lake

    class Boom(Exception):
        pass

    real_write = lake.pq.ParquetWriter.write_table

    def failing(self, table, *a, **kw):  # writes part of the rows, then the disk fills up
        real_write(self, table.slice(0, 1))
        raise Boom("disk full")

    monkeypatch.setattr(lake.pq.ParquetWriter, "write_table", failing)
    with pytest.raises(Boom):
        write_partition(tmp_path, "raw_corpus", "a", _table())
    monkeypatch.undo()
    assert not partition_file(tmp_path, "raw_corpus", "a").exists()
    assert [f for f in _all_files(tmp_path) if f.endswith(".tmp")] == []
    # A crash while rewriting keeps the previous, complete partition.
    write_partition(tmp_path, "raw_corpus", "a", _table("a", 4))
    monkeypatch.setattr(lake.pq.ParquetWriter, "write_table", failing)
    with pytest.raises(Boom):
        write_partition(tmp_path, "raw_corpus", "a", _table("a", 1))
    monkeypatch.undo()
    assert read_partition(tmp_path, "raw_corpus", "a").num_rows == 4


def test_read_missing_partition_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="materialize it first"):
        read_partition(tmp_path, "raw_corpus", "nope")


def test_sql_literal_and_identifier():
    assert sql_literal("plain") == "'plain'"
    assert sql_literal("it's") == "'it''s'"
    assert sql_literal("''") == "''''''"
    assert sql_identifier('we"ird') == '"we""ird"'
    con = duckdb.connect()
    for value in ("it's", "a''b", "O'Brien's \u00e9 path", "'; DROP TABLE x; --"):
        assert con.execute(f"SELECT {sql_literal(value)}").fetchone()[0] == value
    ident = sql_identifier('we"ird')
    assert con.execute(f"SELECT 1 AS {ident}").description[0][0] == 'we"ird'


@pytest.mark.parametrize("home_name", ["home", "it's home", "O'Brien's \"data\" dir", "what? *really*"])
def test_refresh_views_only_for_folders_with_data(tmp_path, home_name):
    home = tmp_path / home_name
    write_partition(home, "raw_corpus", "a", _table("a", 3))
    write_partition(home, "raw_corpus", "b", _table("b", 2))
    write_partition(home, "edited_corpus", "a", pa.table({"shard": ["a"], "doc_id": ["a-0"], "extra": [1.5]}))
    (lake_root(home) / "token_scores" / "shard=a").mkdir(parents=True)  # a folder without data
    (lake_root(home) / "ngram_profile").mkdir(parents=True)
    con = duckdb.connect()
    made = refresh_views(con, home, ["a", "b"])
    assert made == ["raw_corpus", "edited_corpus"]
    assert set(made) <= set(VIEWS)
    assert con.execute("SELECT count(*) FROM raw_corpus").fetchone()[0] == 5
    assert sorted(r[0] for r in con.execute("SELECT DISTINCT shard FROM raw_corpus").fetchall()) == ["a", "b"]
    assert con.execute("SELECT text FROM raw_corpus WHERE doc_id = 'b-1'").fetchone()[0] == "text 1 \u00e9\U0001f600"
    assert con.execute("SELECT extra FROM edited_corpus").fetchone()[0] == 1.5
    views = {r[0] for r in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}
    assert views == {"raw_corpus", "edited_corpus"}
    with pytest.raises(duckdb.CatalogException):
        con.execute("SELECT * FROM token_scores")


def test_refresh_views_with_brackets_in_home_path(tmp_path):
    home = tmp_path / "runs [v2]"
    write_partition(home, "raw_corpus", "a", _table("a", 3))
    con = duckdb.connect()
    assert refresh_views(con, home, ["a"]) == ["raw_corpus"]
    assert con.execute("SELECT count(*) FROM raw_corpus").fetchone()[0] == 3


def test_views_show_only_the_registered_shards(tmp_path):
    write_partition(tmp_path, "raw_corpus", "a", _table("a", 3))
    write_partition(tmp_path, "raw_corpus", "old", _table("old", 2))  # left over from an earlier source
    con = duckdb.connect()
    assert refresh_views(con, tmp_path, ["a", "not-yet-materialized"]) == ["raw_corpus"]
    assert con.execute("SELECT DISTINCT shard FROM raw_corpus").fetchall() == [("a",)]
    assert refresh_views(con, tmp_path, []) == []
    with pytest.raises(duckdb.CatalogException):  # a view with no registered data is dropped, not stale
        con.execute("SELECT * FROM raw_corpus")


def test_refresh_views_picks_up_new_partitions_and_schema_union(tmp_path):
    con = duckdb.connect()
    assert refresh_views(con, tmp_path, ["a", "b"]) == []
    write_partition(tmp_path, "ngram_profile", "a", pa.table({"shard": ["a"], "n": [1]}))
    assert refresh_views(con, tmp_path, ["a", "b"]) == ["ngram_profile"]
    write_partition(tmp_path, "ngram_profile", "b", pa.table({"shard": ["b"], "n": [2], "more": ["x"]}))
    refresh_views(con, tmp_path, ["a", "b"])
    rows = con.execute("SELECT shard, n, more FROM ngram_profile ORDER BY shard").fetchall()
    assert rows == [("a", 1, None), ("b", 2, "x")]


def test_connect(tmp_path):
    with pytest.raises(FileNotFoundError, match="no DuckDB file"):
        connect(tmp_path / "home")
    con = connect(tmp_path / "home", read_only=False)
    write_partition(tmp_path / "home", "raw_corpus", "a", _table())
    assert refresh_views(con, tmp_path / "home", ["a"]) == ["raw_corpus"]
    con.close()
    ro = connect(tmp_path / "home")
    assert ro.execute("SELECT count(*) FROM raw_corpus").fetchone()[0] == 3
    ro.close()


def test_rebuild_database_replaces_the_file_while_a_reader_holds_it(tmp_path):
    import duckdb

    from tledit_pipeline.lake import connect, rebuild_database

    with rebuild_database(tmp_path) as con:
        con.execute("CREATE TABLE t AS SELECT 1 AS v")
    reader = connect(tmp_path, read_only=True)
    with rebuild_database(tmp_path) as con:  # no lock error: the new database is another file
        con.execute("CREATE TABLE t AS SELECT 2 AS v")
    assert reader.execute("SELECT v FROM t").fetchone() == (1,)  # the reader keeps its snapshot
    reader.close()
    with connect(tmp_path, read_only=True) as fresh:
        assert fresh.execute("SELECT v FROM t").fetchone() == (2,)
    assert [p.name for p in tmp_path.iterdir()] == ["tledit.duckdb"]
    try:
        with rebuild_database(tmp_path) as con:
            con.execute("CREATE TABLE t AS SELECT 3 AS v")
            raise RuntimeError("build failed")
    except RuntimeError:
        pass
    with duckdb.connect(str(tmp_path / "tledit.duckdb"), read_only=True) as fresh:
        assert fresh.execute("SELECT v FROM t").fetchone() == (2,)  # a failed build leaves the old file
    assert [p.name for p in tmp_path.iterdir()] == ["tledit.duckdb"]
