"""The purely synthetic baseline: what the prior writes when it continues a human document on its own.

For each sampled document the prior is given the first m tokens (never more than half the document) and
samples the rest of the document's length (capped at max_new_tokens) at temperature 1, with no top-k or
top-p: the paper's synthetic data is plain model output. Every generated token's log-probability under the
prior is recorded, so per-document perplexity is comparable with the raw corpus's teacher-forced scores.

Sampling runs in batches of documents sharing one KV cache. Each draw is an inverse-CDF draw with the
uniform keyed by (seed, doc_id, position), as in the edit rule, so the output does not depend on batch
size, order or sharding (beyond float noise in the logits). A sampled special token (end of text, chat
markers) ends that document: the model said it is done, and a control token is not text.

On CPU, decoding runs in one thread: a decode step is many small operations, and with more threads than
free cores every one of them waits at an OpenMP barrier. Measured on the 2-core development machine while
other jobs ran: 0.36-0.46 s per step of 32 documents with one thread, 3.2-4.3 s with two.
"""

from __future__ import annotations

import inspect
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import pyarrow as pa

from tledit_pipeline.edit import doc_key, keyed_uniform
from tledit_pipeline.prior import Prior
from tledit_pipeline.progress import Progress, Report
from tledit_pipeline.scoring import tokenize
from tledit_pipeline.settings import SyntheticSettings

# The sample decision uses its own stream: a "position" no generated token can have.
_SAMPLE_POS = np.uint64(0xFFFFFFFFFFFFFFFF)

SYNTHETIC_SCHEMA = pa.schema(
    [
        ("shard", pa.string()),
        ("doc_id", pa.string()),
        ("text", pa.string()),  # the human prefix followed by the prior's continuation
        ("reference_text", pa.string()),  # the raw document cut at the same token length (size-matched raw)
        ("raw_tokens", pa.int32()),
        ("prefix_tokens", pa.int32()),
        ("target_tokens", pa.int32()),  # tokens the prior was asked for: min(raw - prefix, cap)
        ("new_tokens", pa.int32()),  # tokens it wrote (fewer when it ended the text itself)
        ("ended", pa.string()),  # length | end_token | nothing_to_generate
        ("token_ids", pa.list_(pa.int32())),  # the generated tokens
        ("logprobs", pa.list_(pa.float32())),  # log P of each generated token under the prior, temperature 1
    ]
)


@dataclass
class SyntheticStats:
    documents: int = 0  # raw documents in the shard
    sampled: int = 0  # documents in the baseline's sample
    new_tokens: int = 0
    end_token: int = 0  # documents the prior ended itself
    batches: int = 0
    seconds: float = 0.0


def in_sample(doc_ids: Sequence[str], fraction: float, seed: int) -> np.ndarray:
    """Deterministic document sample keyed by (seed, doc_id): the same documents whatever the sharding."""
    if fraction >= 1.0:
        return np.ones(len(doc_ids), dtype=bool)
    keys = np.array([doc_key(d) for d in doc_ids], dtype=np.uint64)
    return keyed_uniform(seed, keys, np.full(len(keys), _SAMPLE_POS)) < fraction


def plan_lengths(n_raw: int, settings: SyntheticSettings, context: int) -> tuple[int, int]:
    """(prefix, target) tokens: prefix m but at most half the document, so the prior writes at least half."""
    prefix = max(1, min(settings.prefix_tokens, n_raw // 2)) if n_raw else 0
    target = max(0, min(n_raw - prefix, settings.max_new_tokens, context - prefix))
    return prefix, target


class Sampler:
    """Plain temperature-1 sampling from the prior, several documents per KV cache."""

    def __init__(self, prior: Prior, seed: int):
        import torch

        self.prior, self.seed, self.torch = prior, seed, torch
        self.text_ok = torch.tensor([b is not None for b in prior.token_bytes], dtype=torch.bool, device=prior.device)
        pad = getattr(prior.tokenizer, "pad_token_id", None)
        self.pad_id = int(pad) if pad is not None else 0
        # transformers 5 names the KV cache `cache`; 4.x called it `past_key_values`.
        params = inspect.signature(prior.model.forward).parameters
        self.cache_arg = "cache" if "cache" in params else "past_key_values"

    def _cache(self, out):
        return getattr(out, self.cache_arg)

    def sample(self, prefixes: list[np.ndarray], targets: list[int], keys: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, bool]]:
        """Per document: generated ids, their log-probs, and whether a special token ended it early."""
        torch = self.torch
        dev = self.prior.device
        b, width = len(prefixes), max(len(p) for p in prefixes)
        inp = np.full((b, width), self.pad_id, dtype=np.int64)
        mask = np.zeros((b, width), dtype=np.int64)
        for r, p in enumerate(prefixes):  # left padding: every row's next token is at the same column
            inp[r, width - len(p) :] = p
            mask[r, width - len(p) :] = 1
        plen = np.array([len(p) for p in prefixes], dtype=np.int64)
        target = np.array(targets, dtype=np.int64)
        ids = np.zeros((b, max(targets)), dtype=np.int32)
        lps = np.zeros((b, max(targets)), dtype=np.float32)
        count = np.zeros(b, dtype=np.int64)
        ended = np.zeros(b, dtype=bool)
        alive = target > 0
        mask_t = torch.from_numpy(mask).to(dev)
        pos_t = (mask_t.cumsum(-1) - 1).clamp(min=0)
        with torch.inference_mode():
            out = self.prior.model(
                input_ids=torch.from_numpy(inp).to(dev), attention_mask=mask_t, position_ids=pos_t,
                use_cache=True, logits_to_keep=1,
            )
            for t in range(max(targets)):
                logp = torch.log_softmax(out.logits[:, -1].float(), dim=-1)
                cdf = logp.exp().cumsum(-1)
                u = torch.from_numpy(keyed_uniform(self.seed, keys, plen + t)).to(dev, torch.float64)
                tok = torch.searchsorted(cdf.double(), (u * cdf[:, -1].double())[:, None])[:, 0].clamp(max=cdf.shape[1] - 1)
                tok_lp = logp.gather(1, tok[:, None])[:, 0]
                is_text = self.text_ok[tok].cpu().numpy()
                tok_np, lp_np = tok.cpu().numpy(), tok_lp.cpu().numpy()
                write = alive & is_text
                ids[write, count[write]] = tok_np[write]
                lps[write, count[write]] = lp_np[write]
                count += write
                ended |= alive & ~is_text
                alive &= is_text & (count < target)
                if not alive.any():
                    break
                mask_t = torch.cat([mask_t, torch.ones((b, 1), dtype=mask_t.dtype, device=dev)], dim=1)
                out = self.prior.model(
                    input_ids=tok[:, None], attention_mask=mask_t, position_ids=torch.from_numpy(plen + t)[:, None].to(dev),
                    use_cache=True, **{self.cache_arg: self._cache(out)}, logits_to_keep=1,
                )
        return [(ids[r, : count[r]].copy(), lps[r, : count[r]].copy(), bool(ended[r])) for r in range(b)]


@contextmanager
def _one_cpu_thread(device: str) -> Iterator[None]:
    """Decode on one CPU thread (see the module docstring); the process's setting is restored after."""
    import torch

    before = torch.get_num_threads()
    if device == "cpu":
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _decode(prior: Prior, ids: np.ndarray) -> str:
    # Byte-level tokens: a continuation can stop inside a character; U+FFFD marks such bytes.
    return b"".join(prior.token_bytes[i] or b"" for i in ids).decode("utf-8", errors="replace")


def synthesize(
    prior: Prior,
    shard: str,
    docs: pa.Table,
    settings: SyntheticSettings,
    report: Report | None = None,
) -> tuple[pa.Table, SyntheticStats]:
    """The baseline for one raw_corpus table (doc_id, text): one row per sampled document, in raw order."""
    doc_ids = docs.column("doc_id").to_pylist()
    texts = docs.column("text").to_pylist()
    stats = SyntheticStats(documents=len(doc_ids))
    chosen = np.flatnonzero(in_sample(doc_ids, settings.synthetic_sample, settings.synthetic_seed))
    stats.sampled = len(chosen)
    ids = tokenize(prior, [texts[i] for i in chosen])
    plans = [plan_lengths(len(t), settings, prior.context_length) for t in ids]
    keys = np.array([doc_key(doc_ids[i]) for i in chosen], dtype=np.uint64)
    results: list[tuple[np.ndarray, np.ndarray, bool]] = [
        (np.zeros(0, np.int32), np.zeros(0, np.float32), False) for _ in chosen
    ]
    sampler = Sampler(prior, settings.synthetic_seed)
    progress = Progress("sampling", len(chosen), sum(t for _, t in plans), report)
    t0 = time.perf_counter()
    # Similar lengths together, so finished rows idle little; the order does not change any draw.
    todo = sorted((j for j, (_, t) in enumerate(plans) if t > 0), key=lambda j: (plans[j][1], plans[j][0]))
    progress.advance(len(chosen) - len(todo), 0)
    with _one_cpu_thread(prior.device):
        for s in range(0, len(todo), settings.synthetic_batch):
            batch = todo[s : s + settings.synthetic_batch]
            out = sampler.sample([ids[j][: plans[j][0]] for j in batch], [plans[j][1] for j in batch], keys[batch])
            for j, res in zip(batch, out):
                results[j] = res
            stats.batches += 1
            progress.advance(len(batch), sum(len(r[0]) for r in out))
    stats.seconds = time.perf_counter() - t0
    rows: dict[str, list] = {f.name: [] for f in SYNTHETIC_SCHEMA}
    for j, i in enumerate(chosen):
        (prefix, target), (gen, lp, end_token) = plans[j], results[j]
        rows["shard"].append(shard)
        rows["doc_id"].append(doc_ids[i])
        rows["text"].append(_decode(prior, np.concatenate([ids[j][:prefix], gen])))
        rows["reference_text"].append(_decode(prior, ids[j][: prefix + len(gen)]))
        rows["raw_tokens"].append(len(ids[j]))
        rows["prefix_tokens"].append(prefix)
        rows["target_tokens"].append(target)
        rows["new_tokens"].append(len(gen))
        rows["ended"].append("end_token" if end_token else "length" if target else "nothing_to_generate")
        rows["token_ids"].append(gen.astype(np.int32))
        rows["logprobs"].append(lp.astype(np.float32))
        stats.new_tokens += len(gen)
        stats.end_token += end_token
    if chosen.size:
        progress.done()
    return pa.Table.from_pydict(rows, schema=SYNTHETIC_SCHEMA), stats
