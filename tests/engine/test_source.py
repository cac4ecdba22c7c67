"""Source discovery and shard reading: every row ends up accepted or rejected with a reason."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import write_jsonl
from hypothesis import given, settings
from hypothesis import strategies as st

from tledit_pipeline.source import (
    REJECT_SCHEMA,
    Shard,
    SourceError,
    discover_shards,
    doc_ids,
    file_fingerprint,
    find_shard,
    passthrough_values,
    read_shard,
    shard_key,
)

KEY_RE = re.compile(r"^[a-z0-9_-]+$")


def _read(path: Path, text_field: str = "text"):
    return read_shard(Shard(key=shard_key(path.name), path=path), text_field)


def _check_accounting(r):
    assert r.accepted.num_rows + r.rejected.num_rows == r.rows_in
    assert r.rejected.schema == REJECT_SCHEMA
    assert r.accepted.column_names[:3] == ["shard", "doc_id", "text"]


# ---------------------------------------------------------------- shard keys


@pytest.mark.parametrize(
    "name, key",
    [
        ("alpha.jsonl", "alpha"),
        ("beta.jsonl.gz", "beta"),
        ("Beta.JSONL.GZ", "beta"),
        ("My Shard.parquet", "my-shard"),
        ('it\'s "quoted".txt', "it-s-quoted"),
        ("../../etc/passwd.jsonl", "etc-passwd"),
        ("a/b\\c.jsonl", "a-b-c"),
        ("..jsonl", "shard"),
        ("...", "shard"),
        ("UPPER_case-Name.jsonl", "upper_case-name"),
        ("data.v2.jsonl.gz", "data-v2"),
    ],
)
def test_shard_key_examples(name, key):
    assert shard_key(name) == key


@given(st.text(max_size=200))
@settings(max_examples=300, deadline=None)
def test_shard_key_is_always_safe(name):
    for candidate in (name, name + ".jsonl", name + ".jsonl.gz", name + ".PARQUET", "../" + name + ".txt"):
        key = shard_key(candidate)
        assert KEY_RE.match(key), key
        assert "/" not in key and "\\" not in key and ".." not in key
        assert 1 <= len(key) <= 80


def test_double_extension_is_stripped_whole():
    assert shard_key("corpus.jsonl.gz") == shard_key("corpus.jsonl") == "corpus"
    assert "jsonl" not in shard_key("corpus.jsonl.gz")


# ---------------------------------------------------------------- discovery


def _mixed_folder(folder: Path) -> Path:
    folder.mkdir()
    write_jsonl(folder / "a.jsonl", [{"text": "first document"}])
    write_jsonl(folder / "b.jsonl.gz", [{"text": "second document"}], gz=True)
    pq.write_table(pa.table({"text": ["third document"]}), folder / "c.parquet")
    (folder / "d.txt").write_text("fourth document\n\nfifth document\n", encoding="utf-8")
    # Not shards:
    (folder / "notes.md").write_text("# readme")
    (folder / "data.json").write_text('{"text": "x"}')
    (folder / "archive.gz").write_bytes(gzip.compress(b"x"))
    write_jsonl(folder / ".hidden.jsonl", [{"text": "hidden"}])
    (folder / "sub").mkdir()
    write_jsonl(folder / "sub" / "nested.jsonl", [{"text": "nested"}])
    return folder


def test_discover_shards_of_a_folder(tmp_path):
    src = _mixed_folder(tmp_path / "src")
    shards = discover_shards(str(src), tmp_path / "home")
    assert [s.key for s in shards] == ["a", "b", "c", "d"]
    assert [s.path.name for s in shards] == ["a.jsonl", "b.jsonl.gz", "c.parquet", "d.txt"]
    assert [s.format for s in shards] == ["json", "json", "parquet", "text"]
    assert all(s.path.is_absolute() for s in shards)
    assert find_shard(str(src), tmp_path / "home", "c").path.name == "c.parquet"
    with pytest.raises(SourceError, match="'zzz'"):
        find_shard(str(src), tmp_path / "home", "zzz")


def test_discover_single_file_and_glob(tmp_path):
    src = _mixed_folder(tmp_path / "src")
    one = discover_shards(str(src / "b.jsonl.gz"), tmp_path)
    assert [(s.key, s.path.name) for s in one] == [("b", "b.jsonl.gz")]
    globbed = discover_shards(str(src / "*.jsonl*"), tmp_path)
    assert [s.key for s in globbed] == ["a", "b"]


def test_missing_source_is_a_clear_error(tmp_path):
    with pytest.raises(SourceError, match="not a folder, file or glob"):
        discover_shards(str(tmp_path / "nope"), tmp_path)


def test_colliding_keys_stay_distinct(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    write_jsonl(src / "My Data.jsonl", [{"text": "one"}])
    write_jsonl(src / "my-data.jsonl", [{"text": "two"}])
    write_jsonl(src / "my_data.jsonl", [{"text": "three"}])
    shards = discover_shards(str(src), tmp_path)
    keys = [s.key for s in shards]
    assert len(keys) == len(set(keys)) == 3
    assert {s.path.name for s in shards} == {"My Data.jsonl", "my-data.jsonl", "my_data.jsonl"}
    assert all(KEY_RE.match(k) for k in keys)
    assert discover_shards(str(src), tmp_path) == shards  # stable


def test_discover_sample_source_builds_it(tmp_path):
    shards = discover_shards("sample", tmp_path)
    assert len(shards) >= 4
    assert all(s.path.parent == (tmp_path / "sample").absolute() for s in shards)


# ---------------------------------------------------------------- reading each format


def test_read_jsonl(small_source):
    r = _read(small_source / "alpha.jsonl")
    _check_accounting(r)
    assert r.rows_in == 3 and r.rejected.num_rows == 0
    assert r.accepted.column("shard").to_pylist() == ["alpha"] * 3
    assert r.accepted.column("n").to_pylist() == [1, 2, 3]
    assert r.accepted.column("text").to_pylist()[2] == "Caf\u00e9 \u65e5\u672c\u8a9e \U0001f600 e\u0301 done.\r\nNext line."


def test_read_jsonl_gz(small_source):
    r = _read(small_source / "beta.jsonl.gz")
    _check_accounting(r)
    assert r.rows_in == 2
    assert r.accepted.column("text").to_pylist() == [
        "The quick brown fox jumps over the lazy dog. " * 30,
        "Is this a dagger which I see before me?",
    ]
    assert r.accepted.column("lang").to_pylist() == ["en", "en"]


def test_read_parquet(tmp_path):
    path = tmp_path / "p.parquet"
    pq.write_table(
        pa.table({"text": ["one", None, "  ", "four"], "score": [0.5, 1.5, 2.5, 3.5], "shard": ["x", "y", "z", "w"]}),
        path,
    )
    r = _read(path)
    _check_accounting(r)
    assert r.rows_in == 4
    assert r.accepted.column("text").to_pylist() == ["one", "four"]
    assert r.accepted.column("score").to_pylist() == [0.5, 3.5]
    # A source column named like a reserved one is kept under a prefixed name, not clobbered.
    assert r.accepted.column("shard").to_pylist() == ["p", "p"]
    assert r.accepted.column("source_shard").to_pylist() == ["x", "w"]
    assert r.rejected.column("locator").to_pylist() == ["row 2", "row 3"]


def test_read_parquet_non_string_text_column(tmp_path):
    path = tmp_path / "nums.parquet"
    pq.write_table(pa.table({"text": [1, 2, 3]}), path)
    r = _read(path)
    _check_accounting(r)
    assert r.accepted.num_rows == 0
    assert r.rejected.column("reason").to_pylist() == ["field 'text' is int, not a string"] * 3


def test_read_txt_paragraphs(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("First paragraph\nstill first.\n\nSecond one.\n\n\n\nThird.\n", encoding="utf-8")
    r = _read(path)
    _check_accounting(r)
    texts = r.accepted.column("text").to_pylist()
    assert [t.strip() for t in texts] == ["First paragraph\nstill first.", "Second one.", "Third."]
    assert texts[0] == "First paragraph\nstill first."
    assert r.accepted.column_names == ["shard", "doc_id", "text"]


def test_empty_file_reads_as_no_rows(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_bytes(b"")
    r = _read(path)
    _check_accounting(r)
    assert r.rows_in == 0 and r.accepted.num_rows == 0


# ---------------------------------------------------------------- rejects


def test_rejects_with_reasons(tmp_path):
    path = write_jsonl(
        tmp_path / "mixed.jsonl",
        [
            {"text": "good one", "k": 1},
            {"k": 2},  # no text field in this row
            {"text": None, "k": 3},
            {"text": "", "k": 4},
            {"text": " \n\t  ", "k": 5},
            {"text": "bad\x00nul", "k": 6},
            {"text": "good two", "k": 7},
        ],
    )
    r = _read(path)
    _check_accounting(r)
    assert r.rows_in == 7
    assert r.accepted.column("text").to_pylist() == ["good one", "good two"]
    assert r.accepted.column("k").to_pylist() == [1, 7]
    rej = r.rejected.to_pylist()
    assert [x["locator"] for x in rej] == ["line 2", "line 3", "line 4", "line 5", "line 6"]
    assert [x["reason"] for x in rej] == [
        "no field 'text'",
        "field 'text' is null",
        "field 'text' is empty or whitespace only",
        "field 'text' is empty or whitespace only",
        "field 'text' contains NUL characters",
    ]
    assert {x["source_file"] for x in rej} == {"mixed.jsonl"}
    assert {x["shard"] for x in rej} == {"mixed"}


def test_missing_text_field_everywhere(tmp_path):
    path = write_jsonl(tmp_path / "other.jsonl", [{"body": "a"}, {"body": "b"}])
    r = _read(path)
    _check_accounting(r)
    assert r.accepted.num_rows == 0
    assert r.rejected.column("reason").to_pylist() == ["no field 'text'"] * 2


def test_custom_text_field(tmp_path):
    path = write_jsonl(tmp_path / "body.jsonl", [{"body": "hello there", "text": "passthrough"}])
    r = _read(path, text_field="body")
    _check_accounting(r)
    assert r.accepted.column("text").to_pylist() == ["hello there"]
    assert r.accepted.column("source_text").to_pylist() == ["passthrough"]


def test_all_numeric_text_is_rejected(tmp_path):
    path = write_jsonl(tmp_path / "nums.jsonl", [{"text": 5}, {"text": 7}])
    r = _read(path)
    _check_accounting(r)
    assert r.accepted.num_rows == 0
    assert r.rejected.column("reason").to_pylist() == ["field 'text' is int, not a string"] * 2


def test_number_among_string_texts_is_rejected(tmp_path):
    path = write_jsonl(tmp_path / "mixed_types.jsonl", [{"text": "hello"}, {"text": 5}, {"text": "world"}])
    r = _read(path)
    _check_accounting(r)
    assert r.accepted.column("text").to_pylist() == ["hello", "world"]
    assert r.rejected.column("reason").to_pylist() == ["field 'text' is int, not a string"]


def test_duplicate_source_ids_rejected(tmp_path):
    path = write_jsonl(
        tmp_path / "ids.jsonl",
        [{"id": "a", "text": "one"}, {"id": "b", "text": "two"}, {"id": "a", "text": "three"}, {"id": None, "text": "four"}],
    )
    r = _read(path)
    _check_accounting(r)
    assert r.accepted.column("doc_id").to_pylist() == ["a", "b"]
    assert r.accepted.column("text").to_pylist() == ["one", "two"]
    assert r.accepted.column("id").to_pylist() == ["a", "b"]  # the source id is also kept as passthrough
    reasons = dict(zip(r.rejected.column("locator").to_pylist(), r.rejected.column("reason").to_pylist()))
    assert reasons == {"line 3": "duplicate doc id 'a' in this shard", "line 4": "field 'id' is missing or null"}


def test_integer_source_ids_become_strings(tmp_path):
    path = write_jsonl(tmp_path / "ids.jsonl", [{"id": 10, "text": "one"}, {"id": 11, "text": "two"}])
    r = _read(path)
    assert r.accepted.column("doc_id").to_pylist() == ["10", "11"]


# ---------------------------------------------------------------- passthrough and ids


def test_passthrough_fields_survive(tmp_path):
    rows = [
        {
            "text": "alpha text",
            "lang": "en",
            "n": 1,
            "score": 0.25,
            "flag": True,
            "meta": {"url": "http://a", "tags": ["x", "y"], "depth": {"k": 1}},
        },
        {
            "text": "beta text",
            "lang": "fr",
            "n": 2,
            "score": 1.5,
            "flag": False,
            "meta": {"url": "http://b", "tags": [], "depth": {"k": 2}},
        },
    ]
    path = write_jsonl(tmp_path / "pass.jsonl", rows)
    r = _read(path)
    _check_accounting(r)
    got = r.accepted.to_pylist()
    for src, out in zip(rows, got):
        for field, value in src.items():
            assert out[field] == value, field
    assert r.accepted.column_names == ["shard", "doc_id", "text", "lang", "n", "score", "flag", "meta"]


@pytest.mark.parametrize(
    "values",
    [
        [1, "two"],
        [{"a": 1}, {"b": "x"}],
    ],
    ids=["int-and-string", "dicts-with-different-keys"],
)
def test_heterogeneous_passthrough_fields_survive(tmp_path, values):
    path = write_jsonl(tmp_path / "het.jsonl", [{"text": f"doc {i}", "extra": v} for i, v in enumerate(values)])
    r = _read(path)
    # No single Arrow type holds these values unchanged, so the column is JSON (DuckDB reads it as JSON).
    assert r.accepted.schema.field("extra").type == pa.json_()
    assert passthrough_values(r.accepted.column("extra")) == values


def test_doc_ids_are_stable_and_distinct(small_source, tmp_path):
    a = _read(small_source / "alpha.jsonl")
    b = _read(small_source / "alpha.jsonl")
    assert a.accepted.column("doc_id").to_pylist() == b.accepted.column("doc_id").to_pylist()
    assert a.accepted.equals(b.accepted)

    path = write_jsonl(tmp_path / "dups.jsonl", [{"text": "same"}, {"text": "other"}, {"text": "same"}, {"text": "same"}])
    r = _read(path)
    _check_accounting(r)
    ids = r.accepted.column("doc_id").to_pylist()
    assert r.accepted.num_rows == 4
    assert len(set(ids)) == 4
    assert ids[2].startswith(ids[0]) and ids[3].startswith(ids[0])
    # Content-hash ids do not depend on the file or shard the text sits in.
    moved = write_jsonl(tmp_path / "elsewhere.jsonl", [{"text": "other"}])
    assert _read(moved).accepted.column("doc_id").to_pylist() == [ids[1]]


def test_doc_ids_function():
    ids = doc_ids(["x", "y", "x"], None)
    assert ids[0] != ids[1] and ids[0] != ids[2] and len(set(ids)) == 3
    assert doc_ids(["x", "y", "x"], None) == ids
    assert doc_ids(["a", "b"], [1, None]) == ["1", None]


# ---------------------------------------------------------------- unreadable files


def test_corrupt_gzip_names_the_file(tmp_path):
    path = tmp_path / "bad.jsonl.gz"
    path.write_bytes(b"\x1f\x8b\x08\x00garbage-not-gzip")
    with pytest.raises(SourceError, match=r"bad\.jsonl\.gz"):
        _read(path)


def test_corrupt_parquet_names_the_file(tmp_path):
    path = tmp_path / "bad.parquet"
    path.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(SourceError, match=r"bad\.parquet"):
        _read(path)


def test_file_fingerprint_follows_content(tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", [{"text": "x"}])
    b = write_jsonl(tmp_path / "b.jsonl", [{"text": "x"}])
    c = write_jsonl(tmp_path / "c.jsonl", [{"text": "y"}])
    assert file_fingerprint(a) == file_fingerprint(b) != file_fingerprint(c)


# ---------------------------------------------------------------- known engine bugs (edge cases)


def test_renamed_passthrough_column_does_not_duplicate_a_name(tmp_path):
    path = write_jsonl(tmp_path / "clash.jsonl", [{"text": "hello", "shard": "x", "source_shard": "y"}])
    r = _read(path)
    names = r.accepted.column_names
    assert len(names) == len(set(names)), names


def test_adding_a_file_never_changes_an_existing_files_key(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    write_jsonl(src / "my-data.jsonl", [{"text": "one"}])
    before = {s.path.name: s.key for s in discover_shards(str(src), tmp_path)}
    write_jsonl(src / "My Data.jsonl", [{"text": "two"}])
    after = {s.path.name: s.key for s in discover_shards(str(src), tmp_path)}
    assert after["my-data.jsonl"] == before["my-data.jsonl"]
