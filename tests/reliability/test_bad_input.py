"""Bad input: every case of the messy corpus read by the engine, then run end to end through `tledit run`.

Valid documents are processed, every other document is in `rejected_documents` with a reason and a
locator, accepted + rejected = documents written into the file, and a file that cannot be read at all
fails its partition with a message naming the file and the problem.
"""

from __future__ import annotations

import json
import re

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from messy_corpus import Case, build

from tledit_pipeline.database import connect
from tledit_pipeline.lake import read_partition, write_partition
from tledit_pipeline.source import (
    REJECT_SCHEMA,
    Shard,
    SourceError,
    discover_shards,
    passthrough_values,
    read_shard,
)
from tledit_pipeline.windows import plan_windows

LOCATOR = re.compile(r"^(line|row) [1-9][0-9]*$")


@pytest.fixture(scope="module")
def messy(tmp_path_factory):
    folder = tmp_path_factory.mktemp("messy") / "source"
    return folder, build(folder)


def _shard(folder, case: Case) -> Shard:
    return next(s for s in discover_shards(str(folder), folder.parent) if s.path.name == case.name)


def _case_ids():
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        return [c.name for c in build(Path(d))]


@pytest.mark.parametrize("name", _case_ids())
def test_each_case_is_read_as_expected(messy, name):
    folder, cases = messy
    case = next(c for c in cases if c.name == name)
    shard = _shard(folder, case)
    if case.fails:
        with pytest.raises(SourceError, match=case.fails) as info:
            read_shard(shard)
        assert repr(shard.key) in str(info.value)  # names the shard and the file
        return
    r = read_shard(shard)
    assert r.rows_in == case.documents
    assert (r.accepted.num_rows, r.rejected.num_rows) == (case.accepted, case.rejected)
    assert r.accepted.column("text").to_pylist() == case.texts
    assert r.rejected.schema == REJECT_SCHEMA
    reasons = r.rejected.column("reason").to_pylist()
    assert len(reasons) == len(case.reasons)
    for got, want in zip(reasons, case.reasons):
        assert want in got, (got, want)
    assert all(LOCATOR.match(x) for x in r.rejected.column("locator").to_pylist())
    assert set(r.rejected.column("source_file").to_pylist()) <= {case.name}
    ids = r.accepted.column("doc_id").to_pylist()
    assert len(set(ids)) == len(ids) and None not in ids


def test_locators_point_at_the_line_or_row(messy):
    folder, cases = messy
    by_name = {c.name: c for c in cases}

    def locators(name):
        return read_shard(_shard(folder, by_name[name])).rejected.column("locator").to_pylist()

    assert locators("malformed.jsonl") == ["line 2", "line 3", "line 4", "line 6"]  # blank lines still count
    assert locators("bytes.jsonl") == ["line 2", "line 3"]
    assert locators("paragraphs.txt") == ["line 6"]  # first line of the paragraph
    assert locators("nested.parquet") == ["row 2"]


def test_passthrough_fields_survive_unchanged(messy):
    folder, cases = messy
    case = next(c for c in cases if c.name == "unicode.jsonl")
    r = read_shard(_shard(folder, case))
    written = [json.loads(line) for line in (folder / case.name).read_text(encoding="utf-8").splitlines()]
    assert r.accepted.column_names == ["shard", "doc_id", "text", "n", "meta", "mixed", "big"]
    for col in ("n", "meta", "mixed", "big"):
        assert passthrough_values(r.accepted.column(col)) == [row.get(col) for row in written], col
    # One Arrow type holds `n` exactly; the others keep their values as JSON text.
    assert r.accepted.schema.field("n").type == pa.int64()
    assert {r.accepted.schema.field(c).type for c in ("meta", "mixed", "big")} == {pa.json_()}


def test_parquet_nested_columns_survive_unchanged(messy):
    folder, cases = messy
    r = read_shard(_shard(folder, next(c for c in cases if c.name == "nested.parquet")))
    source = pq.read_table(folder / "nested.parquet").take([0, 2])
    for col in ("meta", "attrs", "when", "price"):
        assert r.accepted.column(col).type == source.column(col).type, col
        assert r.accepted.column(col).to_pylist() == source.column(col).to_pylist(), col
    assert r.accepted.column("source_shard").to_pylist() == ["clash", "reserved"]  # renamed, not clobbered


def test_a_five_megabyte_document(tmp_path, tiny_prior):
    """5 MB through read_shard, the lake and the window plan; scoring a long document is checked on 20 kB
    (the tiny prior scores about 5k tokens/s on a busy CI core, too slow for 5 MB in a unit test)."""
    rng = np.random.default_rng(0)
    words = np.array(["Fair", "is", "foul", "\u65e5\u672c\u8a9e", "\U0001f600", "e\u0301", "rain.\r\n", "and"])
    text = " ".join(rng.choice(words, 1_100_000))
    text = text[: len(text) - (len(text.encode("utf-8")) - 5_000_000) // 4]
    assert len(text.encode("utf-8")) >= 5_000_000
    path = tmp_path / "big.jsonl"
    path.write_text(json.dumps({"id": "big", "text": text}, ensure_ascii=False) + "\n", encoding="utf-8")
    r = read_shard(Shard("big", path))
    assert r.accepted.column("text").to_pylist() == [text] and r.rejected.num_rows == 0
    write_partition(tmp_path, "raw_corpus", "big", r.accepted)
    assert read_partition(tmp_path, "raw_corpus", "big").column("text")[0].as_py() == text

    # Byte-level BPE gives at most one token per byte: plan the windows for that many tokens.
    n = len(text.encode("utf-8"))
    windows = plan_windows(0, n, 2048, 512)
    scored = np.zeros(n, dtype=np.int8)
    for w in windows:
        scored[w.score_from : w.end] += 1
    assert scored[0] == 0 and (scored[1:] == 1).all()

    from tledit_pipeline.edited import edit_shard
    from tledit_pipeline.scoring import score_table
    from tledit_pipeline.settings import EditSettings, ScoringSettings

    long_doc = text[:20_000]
    raw = pa.table({"doc_id": ["long"], "text": [long_doc]})
    scores, stats = score_table(tiny_prior, "big", raw, ScoringSettings(window=256, overlap=64, batch_tokens=4096))
    assert stats.windows > 10 and stats.inexact_documents == 0
    assert scores.num_rows == stats.tokens and scores.column("logprob").null_count == 0  # all, after the start token
    vocab = tiny_prior.vocab_table().column("text").to_pylist()
    edited, _ = edit_shard("big", raw, scores, vocab, EditSettings(threshold=0.05))
    edited["text"][0].as_py().encode("utf-8")  # valid UTF-8 after editing


# ---------------------------------------------------------------- end to end through `tledit run`


@pytest.fixture(scope="module")
def run(messy, tiny_model_dir, tmp_path_factory):
    from assets.cli import main

    folder, cases = messy
    home = tmp_path_factory.mktemp("messy-home")
    mp = pytest.MonkeyPatch()
    mp.setenv("DAGSTER_HOME", str(home / "unused"))
    import io
    from contextlib import redirect_stderr, redirect_stdout

    out, err = io.StringIO(), io.StringIO()
    try:
        with redirect_stdout(out), redirect_stderr(err):
            code = main(["run", "--home", str(home), "--source", str(folder), "--model", str(tiny_model_dir)])
    finally:
        mp.undo()
    shards = {s.path.name: s.key for s in discover_shards(str(folder), home)}
    return home, cases, shards, code, out.getvalue(), err.getvalue()


@pytest.mark.slow
def test_run_processes_valid_documents_and_accounts_for_every_one(run):
    home, cases, shards, code, out, err = run
    failing = [c for c in cases if c.fails]
    assert code == 2  # the unreadable files fail their partitions, the rest is done
    assert f"{len(failing)} of {len(cases)} shard(s) failed" in err
    for c in failing:
        line = next(x for x in err.splitlines() if c.name in x)
        assert re.search(c.fails, line), line
    con = connect(home)
    count = dict(con.execute("SELECT shard, count(*) FROM raw_corpus GROUP BY shard").fetchall())
    rejected = dict(con.execute("SELECT shard, count(*) FROM rejected_documents GROUP BY shard").fetchall())
    edited = dict(con.execute("SELECT shard, count(*) FROM edited_corpus GROUP BY shard").fetchall())
    docs_in = accepted = rejected_total = 0
    for c in cases:
        if c.fails:
            continue
        key = shards[c.name]
        a, r = count.get(key, 0), rejected.get(key, 0)
        assert (a, r) == (c.accepted, c.rejected), c.name
        assert a + r == c.documents, c.name  # nothing lost
        assert edited.get(key, 0) == a, c.name  # every accepted document was scored and edited
        docs_in, accepted, rejected_total = docs_in + c.documents, accepted + a, rejected_total + r
    lost = docs_in - accepted - rejected_total
    print(
        f"\nbad input: {len(cases)} cases, {docs_in} documents in, {accepted} accepted, {rejected_total} rejected, "
        f"{lost} lost; {len(failing)} unreadable files failed their partitions"
    )
    assert lost == 0
    assert f"{accepted} accepted, {rejected_total} rejected" in out


def test_run_keeps_texts_and_reasons_exact(run):
    home, cases, shards, *_ = run
    con = connect(home)
    for c in cases:
        if c.fails or not c.documents:
            continue
        key = shards[c.name]
        texts = [t for (t,) in con.execute("SELECT text FROM raw_corpus WHERE shard = ? ORDER BY doc_id", [key]).fetchall()]
        assert sorted(texts) == sorted(c.texts), c.name
        rows = con.execute(
            "SELECT source_file, locator, reason FROM rejected_documents WHERE shard = ?"
            " ORDER BY CAST(split_part(locator, ' ', 2) AS INTEGER)",
            [key],
        ).fetchall()
        assert {f for f, _, _ in rows} <= {c.name}
        assert len(rows) == len(c.reasons), c.name
        assert all(want in reason for (_, _, reason), want in zip(rows, c.reasons)), (c.name, rows)
    # CRLF line ends and combining marks reach the lake and the edited corpus byte for byte where unchanged.
    crlf = con.execute(
        "SELECT e.text, r.text, e.n_changed FROM edited_corpus e JOIN raw_corpus r USING (shard, doc_id)"
        " WHERE r.text LIKE '%' || chr(13) || chr(10) || '%'"
    ).fetchall()
    assert crlf and all(e == r for e, r, changed in crlf if changed == 0)
    # A mixed-type passthrough column reads as JSON in DuckDB.
    assert con.execute("SELECT typeof(mixed) FROM raw_corpus WHERE mixed IS NOT NULL LIMIT 1").fetchone()[0] == "JSON"


def test_a_field_typed_differently_in_two_shards_reads_as_json(tmp_path):
    """A number in one shard, an object in another: DuckDB cannot union them, so the view shows JSON."""
    from tledit_pipeline.database import refresh_views

    src = tmp_path / "src"
    src.mkdir()
    from conftest import write_jsonl

    write_jsonl(src / "one.jsonl", [{"text": "first", "extra": 5, "same": 1}])
    write_jsonl(src / "two.jsonl", [{"text": "second", "extra": {"a": [1, "x"]}, "same": 2}])
    write_jsonl(src / "three.jsonl", [{"text": "third", "other": "only here"}])
    keys = []
    for s in discover_shards(str(src), tmp_path):
        write_partition(tmp_path, "raw_corpus", s.key, read_shard(s).accepted)
        keys.append(s.key)
    con = duckdb.connect(str(tmp_path / "t.duckdb"))
    refresh_views(con, tmp_path, keys)
    rows = con.execute("SELECT text, extra, same, other FROM raw_corpus ORDER BY text").fetchall()
    assert rows == [("first", "5", 1, None), ("second", '{"a":[1,"x"]}', 2, None), ("third", None, None, "only here")]
    assert [
        json.loads(x) for (x,) in con.execute("SELECT extra FROM raw_corpus WHERE extra IS NOT NULL ORDER BY text").fetchall()
    ] == [5, {"a": [1, "x"]}]
    assert con.execute("SELECT count(*) FROM (SELECT * FROM raw_corpus)").fetchone()[0] == 3
