"""Preview: one text scored and edited exactly as a shard would be."""

import pyarrow as pa

from tledit_pipeline.edited import edit_shard
from tledit_pipeline.preview import PREVIEW_ID, preview, render
from tledit_pipeline.scoring import score_table
from tledit_pipeline.settings import Settings

TEXT = "When shall we three meet again? In thunder, lightning, or in rain? Caf\u00e9 \U0001f600 done."


def test_preview_matches_the_shard_edit(tiny_prior, tmp_path):
    s = Settings(home=tmp_path).with_overrides(threshold=1e-12, beta=3.0)
    result = preview(tiny_prior, TEXT, s)
    raw = pa.table({"doc_id": [PREVIEW_ID], "text": [TEXT]})
    scores, _ = score_table(tiny_prior, PREVIEW_ID, raw, s.scoring, report=lambda _m: None)
    table, stats = edit_shard(PREVIEW_ID, raw, scores, tiny_prior.vocab_table().column("text").to_pylist(), s.edit)
    assert result.edited == table.column("text")[0].as_py()
    assert (result.n_eligible, result.n_changed) == (stats.eligible, stats.changed)
    assert result.n_changed > 0
    assert "".join(t.text for t in result.tokens) == TEXT  # every character shown once, emoji pieces included
    # After the document-start token every token has a probability, the first included; without it, all but the first.
    assert all(t.prob is not None for t in result.tokens)
    without = preview(tiny_prior, TEXT, s.with_overrides(document_start=False))
    assert without.tokens[0].prob is None and all(t.prob is not None for t in without.tokens[1:])


def test_render_plain_marks_eligible_tokens(tiny_prior, tmp_path):
    s = Settings(home=tmp_path).with_overrides(threshold=1e-12)
    out = render(preview(tiny_prior, TEXT, s), 1e-12, colour=False)
    original = out.split("\nedited\n")[0]  # the edited text may hold any token the random prior drew
    assert "\x1b[" not in original and "*]" in original and "[-]" not in original  # every token scored
    unscored = render(preview(tiny_prior, TEXT, s.with_overrides(document_start=False)), 1e-12, colour=False)
    assert "[-]" in unscored.split("\nedited\n")[0]


def test_preview_shows_deleted_tokens(tiny_prior, tmp_path):
    s = Settings(home=tmp_path).with_overrides(threshold=0.999, drop_below=0.003)
    result = preview(tiny_prior, TEXT, s)
    assert result.n_deleted > 0 and result.n_changed == 0
    kept = "".join(t.text for t in result.tokens if not t.deleted)
    assert result.edited == kept  # deleted spans cut, everything else in place
    out = render(result, 0.999, colour=False)
    assert f"deleted {result.n_deleted}" in out and "x]" in out and "(deleted)" in out
