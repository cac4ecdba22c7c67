"""`tledit run` and `tledit export` over a folder of public corpora's files (the issue's mixed folder), end to end.

Six files shaped like C4, Dolma, SlimPajama, the Pile, FineWeb and a `.json` JSON-lines file, plus a
README.md: every file is a shard or listed with its reason, every document reaches the lake, and the export
writes each shard back in its own format.
"""

import pyarrow.parquet as pq
import pytest

import tests.public_corpora as corpora
from assets.cli import main
from tledit_pipeline.database import connect
from tledit_pipeline.source import FORMATS_READ, REJECT_SCHEMA, Shard, read_shard

# The synthetic baseline is not what this test is about: a small one.
CHEAP = ["--synthetic-sample", "0.1", "--max-new-tokens", "8", "--prefix-tokens", "4"]


@pytest.mark.slow
def test_a_mixed_folder_of_public_corpora_is_taken_whole(tmp_path, tiny_model_dir, capsys, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "unused"))
    src, home = tmp_path / "src", tmp_path / "home"
    files = corpora.mixed_folder(src)
    (src / "README.md").write_text("# six shards\n")
    code = main(["run", "--home", str(home), "--source", str(src), "--model", str(tiny_model_dir), *CHEAP])
    captured = capsys.readouterr()
    out = captured.out
    assert code == 0, captured.err
    assert "shards          6" in out and "60 accepted, 0 rejected" in out
    assert "not taken       1 file(s)" in out and "README.md: not a corpus file (suffix '.md'" in out

    con = connect(home)
    assert con.execute("SELECT count(*) FROM raw_corpus").fetchone()[0] == 60
    assert con.execute("SELECT source_file, shard FROM rejected_files").fetchall() == [("README.md", None)]
    by_file = dict(con.execute("SELECT shard, count(*) FROM edited_corpus GROUP BY shard").fetchall())
    assert sorted(by_file.values()) == [10] * 6
    not_taken = pq.read_table(home / "lake" / "rejected_files" / "data.parquet")
    assert not_taken.schema == REJECT_SCHEMA and not_taken.column("source_file").to_pylist() == ["README.md"]

    assert main(["export", "--home", str(home), "--out", str(tmp_path / "out")]) == 0
    exported = sorted(p.name for p in (tmp_path / "out").iterdir())
    suffixes = sorted(name[name.index(".") :] for name in exported)
    assert suffixes == [".json", ".json.gz", ".json.gz", ".jsonl.zst", ".jsonl.zst", ".parquet"]
    total = 0
    for path in (tmp_path / "out").iterdir():
        back = read_shard(Shard(key="x", path=path))
        assert back.rejected.num_rows == 0
        source = next(rows for rows in files.values() if list(back.columns) == list(rows[0]))
        assert back.accepted.num_rows == len(source)
        total += back.accepted.num_rows
    assert total == 60


def test_shards_lists_what_is_not_taken_and_a_source_without_shards_says_why(tmp_path, capsys):
    src = tmp_path / "src"
    corpora.mixed_folder(src)
    (src / "notes.csv").write_text("text\nhello\n")
    assert main(["shards", "--home", str(tmp_path / "home"), "--source", str(src)]) == 0
    captured = capsys.readouterr()
    assert len(captured.out.splitlines()) == 6
    assert captured.err.splitlines() == [
        f"not taken\t{src / 'notes.csv'}\tnot a corpus file (suffix '.csv'; tledit reads {FORMATS_READ})"
    ]

    only = tmp_path / "only"
    only.mkdir()
    (only / "README.md").write_text("# nothing to read\n")
    (only / "corpus.tar").write_bytes(b"\0" * 512)
    assert main(["run", "--home", str(tmp_path / "home"), "--source", str(only)]) == 2
    err = capsys.readouterr().err
    assert f"no shard files ({FORMATS_READ}) in source" in err
    assert "; README.md: not a corpus file (suffix '.md'" in err and "; corpus.tar: not a corpus file (suffix '.tar'" in err
