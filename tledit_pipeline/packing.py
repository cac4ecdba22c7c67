"""Packed rows: several windows laid end to end in one row of a batch, each attending only to itself.

Short documents padded to a batch's width waste the model's time on padding (a quarter of it on a corpus
of short documents); packed into full rows they waste almost none. Each window must still see only its
own tokens, causally, from position 0: the rows get position ids that restart at each window, and the
attention runs per window (one causal SDPA call on that window's queries and keys), exactly the attention
it would get alone. A dense block-diagonal mask would do the same but computes every masked-out pair and
loses the causal kernel; per-window calls cost each window only its own causal attention.

The attention is registered with transformers' AttentionInterface under PACKED; outside a packed batch
(`segments` not active) it is transformers' SDPA attention unchanged, so the same model object keeps
serving everything else (decoding, a plain forward).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

PACKED = "tledit_packed"
# (row, start, end) of every window of the batch running now in this thread; None outside a packed batch.
_SEGMENTS: ContextVar[Sequence[tuple[int, int, int]] | None] = ContextVar("tledit_packed_segments", default=None)
_REGISTERED = False


def _attention(module: Any, query: Any, key: Any, value: Any, attention_mask: Any, *args: Any, **kwargs: Any):
    """Causal attention within each (row, start, end) segment; SDPA as transformers runs it outside packed batches."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    spans = _SEGMENTS.get()
    if spans is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, *args, **kwargs)
    import torch
    import torch.nn.functional as F

    b, heads, width, dim = query.shape
    gqa = key.shape[1] != heads
    # Zeros where no window is (a row's padding tail): padding rows then stay finite through the layer.
    out = torch.zeros((b, width, heads, dim), dtype=query.dtype, device=query.device)
    scaling = kwargs.get("scaling")
    for r, s, e in spans:
        o = F.scaled_dot_product_attention(
            query[r : r + 1, :, s:e],
            key[r : r + 1, :, s:e],
            value[r : r + 1, :, s:e],
            scale=scaling,
            is_causal=e - s > 1,
            enable_gqa=gqa,
        )
        out[r, s:e] = o[0].transpose(0, 1)
    return out, None


def _mask(*args: Any, **kwargs: Any):
    """No mask inside a packed batch (the attention keeps to each segment); SDPA's mask elsewhere."""
    from transformers.masking_utils import sdpa_mask

    return None if _SEGMENTS.get() is not None else sdpa_mask(*args, **kwargs)


def enable(model: Any) -> bool:
    """Switch a model that runs SDPA attention to PACKED (identical outside packed batches); False where it cannot.

    Models on another attention implementation (eager, flash kernels, remote code) are left as they are,
    and the Scorer then gives every window a row of its own.
    """
    global _REGISTERED
    config = getattr(model, "config", None)
    impl = getattr(config, "_attn_implementation", None)
    if impl == PACKED:
        return True
    if impl != "sdpa" or not hasattr(model, "set_attn_implementation"):
        return False
    if not _REGISTERED:
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface

        AttentionInterface.register(PACKED, _attention)
        AttentionMaskInterface.register(PACKED, _mask)
        _REGISTERED = True
    try:
        model.set_attn_implementation(PACKED)
    except (KeyError, ValueError):
        return False
    return getattr(model.config, "_attn_implementation", None) == PACKED


@contextmanager
def segments(spans: Sequence[tuple[int, int, int]]) -> Iterator[None]:
    """Within this block, the model's attention keeps to these (row, start, end) segments of its input."""
    token = _SEGMENTS.set(spans)
    try:
        yield
    finally:
        _SEGMENTS.reset(token)
