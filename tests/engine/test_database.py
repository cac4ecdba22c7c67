"""The DuckDB file: quoting, views over exactly the registered shards, and a file swapped in whole."""

from __future__ import annotations

import duckdb
import pyarrow as pa
import pytest

from tests.engine.test_lake import _table
from tledit_pipeline.database import VIEWS, connect, rebuild_database, refresh_views, sql_identifier, sql_literal
from tledit_pipeline.lake import lake_root, write_partition


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


def _build(home, shards: dict[str, int]) -> None:
    for shard, n in shards.items():
        write_partition(home, "raw_corpus", shard, _table(shard, n))
    with rebuild_database(home) as con:
        refresh_views(con, home, list(shards))


def _count(home) -> int:
    with connect(home) as con:
        return con.execute("SELECT count(*) FROM raw_corpus").fetchone()[0]


def test_a_copied_or_moved_home_answers_from_its_own_lake(tmp_path):
    import shutil

    home = tmp_path / "data"
    _build(home, {"a": 3})
    copy = tmp_path / "data-q"
    shutil.copytree(home, copy)
    write_partition(copy, "raw_corpus", "a", _table("a", 5))  # the copy's lake moves on; the original's does not
    assert (_count(home), _count(copy)) == (3, 5)
    moved = tmp_path / "elsewhere" / "data"
    moved.parent.mkdir()
    home.rename(moved)
    assert _count(moved) == 3  # no path of the old place in the file
    # Opened by hand, the file names no absolute path: from its own directory it reads its own lake.
    with duckdb.connect(str(copy / "tledit.duckdb"), read_only=True, config={"file_search_path": str(copy)}) as con:
        assert con.execute("SELECT count(*) FROM raw_corpus").fetchone()[0] == 5
    with duckdb.connect(str(moved / "tledit.duckdb"), read_only=True) as con:
        assert str(tmp_path) not in " ".join(sql for (sql,) in con.execute("SELECT sql FROM duckdb_views()").fetchall())


def test_a_copied_store_home_answers_from_its_own_lake(s3):
    a, b = s3.url("a"), s3.url("b")
    _build(a, {"x": 2})
    s3.fs.copy(f"{s3.bucket}/a", f"{s3.bucket}/b", recursive=True)
    write_partition(b, "raw_corpus", "x", _table("x", 4))
    assert (_count(a), _count(b)) == (2, 4)
