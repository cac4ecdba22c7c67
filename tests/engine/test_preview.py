"""Preview: one text scored and edited exactly as a shard would be."""

import pyarrow as pa

from tledit_pipeline.edited import edit_shard
from tledit_pipeline.preview import PREVIEW_ID, preview, render
from tledit_pipeline.scoring import score_table
from tledit_pipeline.settings import Settings

TEXT = "When shall we three meet again? In thunder, lightning, or in rain? Caf\u00e9 \U0001F600 done."


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
    assert result.tokens[0].prob is None and all(t.prob is not None for t in result.tokens[1:])


def test_render_plain_marks_eligible_tokens(tiny_prior, tmp_path):
    s = Settings(home=tmp_path).with_overrides(threshold=1e-12)
    out = render(preview(tiny_prior, TEXT, s), 1e-12, colour=False)
    assert "\x1b[" not in out and "[-]" in out and "*]" in out
