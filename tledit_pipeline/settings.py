"""Every knob of a run in one frozen object, read from TLEDIT_* environment variables.

The same object feeds the CLI flags, the Dagster resources and the assets' code versions, so a changed
setting is one changed string everywhere.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

from tledit_pipeline.errors import TleditError

BUNDLED_MODEL = "bundled:smollm2-135m"
STRATEGIES = ("top_k", "top_p")
SETTINGS_FILE = "settings.json"


class SettingsError(TleditError, ValueError):
    """A setting has a value the pipeline cannot use; the message names the variable."""


def data_dir(value: str | os.PathLike) -> Path:
    """The data directory as a local path: a plain path, or an fsspec URL that resolves to the local disk.

    `file:///srv/tledit` works today. Object stores (s3://, gs://, ...) need the lake, the DuckDB file and
    the Dagster home split apart first; docs/deploy.md says how, and such URLs are refused here by name.
    """
    text = os.fspath(value)
    if "://" not in text:
        return Path(text).expanduser().absolute()
    import fsspec

    try:
        fs, path = fsspec.core.url_to_fs(text)
    except (ImportError, ValueError) as exc:
        raise SettingsError(f"TLEDIT_HOME={text!r}: {exc}") from None
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    if protocol not in ("file", "local"):
        raise SettingsError(
            f"TLEDIT_HOME={text!r}: the data directory must be on the local disk (file:// or a path) for now; "
            "object stores are described in docs/deploy.md"
        )
    return Path(path).absolute()


@dataclass(frozen=True)
class EditSettings:
    """The edit rule's parameters: threshold p, top-k k, temperature beta, seed, sampling strategy."""

    threshold: float = 0.99
    top_k: int = 8
    beta: float = 1.5
    seed: int = 0
    strategy: str = "top_k"  # top_k | top_p (see tledit_pipeline.edit)
    top_p: float = 0.9  # the nucleus mass of strategy top_p
    exclude_original: bool = False  # never draw the original token again
    drop_below: float = 0.0  # delete whole tokens with P < drop_below (0: off); the paper's P <= 0.001 setting

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

    window: int = 2048  # tokens per teacher-forced pass; longer documents are windowed
    overlap: int = 512  # left context (tokens) each later window re-reads, unscored
    candidates: int = 8  # top-k candidates stored per token (the edit's k must not exceed it)
    batch_tokens: int = 8192  # padded tokens per forward batch
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: str = "auto"  # auto | float32 | bfloat16
    # Score every document after the model's document-start token (prior.document_start_id), so its
    # first token is scored too and every token sees the context the model was trained with.
    document_start: bool = True
    context_field: str | None = None  # a field whose text the prior reads before the edited one (SFT prompts)

    def __post_init__(self) -> None:
        if self.window < 2:
            raise SettingsError(f"window must be >= 2 tokens, got {self.window}")
        if not 1 <= self.overlap < self.window:
            raise SettingsError(f"overlap must be in [1, window), got overlap={self.overlap} window={self.window}")
        if self.candidates < 1:
            raise SettingsError(f"candidates must be >= 1, got {self.candidates}")
        if self.batch_tokens < self.window:
            raise SettingsError(
                f"batch_tokens ({self.batch_tokens}) must be at least one window ({self.window})"
            )
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

    The defaults keep `make demo` within minutes on two CPU cores: at most 128 new tokens per document,
    and a deterministic sample of documents (by a hash of doc_id and the seed, so it does not depend on
    sharding). Documents outside the sample are simply not part of the baseline.
    """

    prefix_tokens: int = 32  # m: tokens of the human document the prior starts from
    max_new_tokens: int = 128  # cap on generated tokens per document (the rest of the document's length)
    synthetic_sample: float = 0.25  # share of documents the baseline covers, in (0, 1]
    synthetic_seed: int = 0
    synthetic_batch: int = 32  # documents sampled together (one KV cache)

    def __post_init__(self) -> None:
        if self.prefix_tokens < 1:
            raise SettingsError(f"prefix_tokens (m) must be >= 1, got {self.prefix_tokens}")
        if self.max_new_tokens < 1:
            raise SettingsError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if not 0.0 < self.synthetic_sample <= 1.0:
            raise SettingsError(f"synthetic_sample must be in (0, 1], got {self.synthetic_sample}")
        if self.synthetic_seed < 0:
            raise SettingsError(f"synthetic_seed must be >= 0, got {self.synthetic_seed}")
        if self.synthetic_batch < 1:
            raise SettingsError(f"synthetic_batch must be >= 1, got {self.synthetic_batch}")

    def version(self) -> str:
        """Part of synthetic_corpus's code version (batch size stays out: it does not change the samples)."""
        return (
            f"m={self.prefix_tokens},max_new={self.max_new_tokens},"
            f"sample={self.synthetic_sample!r},seed={self.synthetic_seed}"
        )


@dataclass(frozen=True)
class CheckSettings:
    """Thresholds of the distribution-health checks (edited must stay close to raw)."""

    min_tail_coverage: float = 0.98  # edited tail_coverage / raw tail_coverage must be at least this
    max_js_divergence: float = 0.01  # edited js_divergence_vs_raw (hashed features, bits) at most this

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_tail_coverage <= 1.0:
            raise SettingsError(f"min_tail_coverage must be in [0, 1], got {self.min_tail_coverage}")
        if not 0.0 <= self.max_js_divergence <= 1.0:
            raise SettingsError(f"max_js_divergence must be in [0, 1], got {self.max_js_divergence}")


@dataclass(frozen=True)
class Settings:
    home: Path = Path("data")
    source: str = "sample"
    model: str = BUNDLED_MODEL
    text_field: str = "text"
    model_cache: Path | None = None  # where converted models live; default <home>/models
    refresh_cron: str = "@daily"  # when the refresh schedule materializes whatever is missing or stale
    trust_remote_code: bool = False  # run a model repository's own Python code: only when the user opts in
    allow_pickle: bool = False  # load pickle checkpoints (pytorch_model.bin), which can run code: opt-in
    edit: EditSettings = field(default_factory=EditSettings)
    scoring: ScoringSettings = field(default_factory=ScoringSettings)
    synthetic: SyntheticSettings = field(default_factory=SyntheticSettings)
    checks: CheckSettings = field(default_factory=CheckSettings)
    generations: int = 1  # edit the edited text again: generation g re-scores generation g-1's text

    def __post_init__(self) -> None:
        object.__setattr__(self, "home", data_dir(self.home))
        if self.generations < 1:
            raise SettingsError(f"generations must be >= 1, got {self.generations}")
        if self.scoring.context_field is not None and self.scoring.context_field == self.text_field:
            raise SettingsError(f"context_field {self.scoring.context_field!r} is the edited field itself")
        if self.model_cache is not None:
            object.__setattr__(self, "model_cache", Path(self.model_cache).expanduser().absolute())
        if self.edit.top_k > self.scoring.candidates:
            raise SettingsError(
                f"top_k={self.edit.top_k} exceeds the {self.scoring.candidates} candidates stored per "
                "token; raise TLEDIT_CANDIDATES (this rescores the corpus)"
            )
        if not self.text_field:
            raise SettingsError("text_field must not be empty")

    @property
    def models_dir(self) -> Path:
        return self.model_cache or self.home / "models"

    @property
    def dagster_home(self) -> Path:
        return self.home / "dagster_home"

    @property
    def duckdb_path(self) -> Path:
        return self.home / "tledit.duckdb"

    def flat(self) -> dict[str, Any]:
        """Every setting by its flag name: the form saved in <home>/settings.json and given to resources."""
        d: dict[str, Any] = {"home": str(self.home), "source": self.source, "model": self.model,
                             "text_field": self.text_field,
                             "model_cache": str(self.model_cache) if self.model_cache else None,
                             "refresh_cron": self.refresh_cron,
                             "trust_remote_code": self.trust_remote_code, "allow_pickle": self.allow_pickle,
                             "generations": self.generations}
        return d | asdict(self.edit) | asdict(self.scoring) | asdict(self.synthetic) | asdict(self.checks)

    def save(self) -> Path:
        """Remember these settings in the data directory, so the UI, the sensor and later runs use them."""
        path = self.home / SETTINGS_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{SETTINGS_FILE}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.flat(), indent=2, sort_keys=True) + "\n")
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> "Settings":
        """Defaults, then <home>/settings.json (the last `tledit run`), then TLEDIT_* variables, then overrides."""
        env = os.environ if env is None else env
        home = data_dir(overrides.get("home") or env.get("TLEDIT_HOME") or cls.home)
        saved: dict[str, Any] = {}
        if (home / SETTINGS_FILE).exists():
            try:
                saved = json.loads((home / SETTINGS_FILE).read_text())
            except ValueError as exc:
                raise SettingsError(f"{home / SETTINGS_FILE} is not valid JSON: {exc}") from None
            saved = {k: v for k, v in saved.items() if k in _ENV and k != "home"}
        return cls.from_env(env, **(saved | _env_values(env) | {k: v for k, v in overrides.items() if v is not None}))

    def with_overrides(self, **overrides: Any) -> "Settings":
        """Replace top-level, edit, scoring, synthetic or check fields by name; None values are ignored."""
        top, edit, scoring, synthetic, checks = {}, {}, {}, {}, {}
        edit_names = EditSettings.__dataclass_fields__
        scoring_names = ScoringSettings.__dataclass_fields__
        for name, value in overrides.items():
            if value is None:
                continue
            if name in edit_names:
                edit[name] = value
            elif name in scoring_names:
                scoring[name] = value
            elif name in SyntheticSettings.__dataclass_fields__:
                synthetic[name] = value
            elif name in CheckSettings.__dataclass_fields__:
                checks[name] = value
            elif name in Settings.__dataclass_fields__:
                top[name] = value
            else:
                raise SettingsError(f"unknown setting {name!r}")
        return replace(
            self,
            edit=replace(self.edit, **edit),
            scoring=replace(self.scoring, **scoring),
            synthetic=replace(self.synthetic, **synthetic),
            checks=replace(self.checks, **checks),
            **top,
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> "Settings":
        """Defaults, then TLEDIT_* variables, then explicit overrides (CLI flags)."""
        env = os.environ if env is None else env
        values = _env_values(env)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls().with_overrides(**values)


def _env_values(env: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name, (var, cast) in _ENV.items():
        raw = env.get(var)
        if raw is None or raw == "":
            continue
        try:
            values[name] = cast(raw)
        except ValueError:
            raise SettingsError(f"{var}={raw!r} is not a valid {cast.__name__}") from None
    return values


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


_ENV: dict[str, tuple[str, type]] = {
    "home": ("TLEDIT_HOME", str),
    "source": ("TLEDIT_SOURCE", str),
    "model": ("TLEDIT_MODEL", str),
    "text_field": ("TLEDIT_TEXT_FIELD", str),
    "model_cache": ("TLEDIT_MODEL_CACHE", Path),
    "refresh_cron": ("TLEDIT_REFRESH_CRON", str),
    "trust_remote_code": ("TLEDIT_TRUST_REMOTE_CODE", boolean),
    "allow_pickle": ("TLEDIT_ALLOW_PICKLE", boolean),
    "threshold": ("TLEDIT_THRESHOLD", float),
    "top_k": ("TLEDIT_TOP_K", int),
    "beta": ("TLEDIT_BETA", float),
    "seed": ("TLEDIT_SEED", int),
    "strategy": ("TLEDIT_STRATEGY", str),
    "top_p": ("TLEDIT_TOP_P", float),
    "exclude_original": ("TLEDIT_EXCLUDE_ORIGINAL", boolean),
    "window": ("TLEDIT_WINDOW", int),
    "overlap": ("TLEDIT_OVERLAP", int),
    "candidates": ("TLEDIT_CANDIDATES", int),
    "batch_tokens": ("TLEDIT_BATCH_TOKENS", int),
    "device": ("TLEDIT_DEVICE", str),
    "dtype": ("TLEDIT_DTYPE", str),
    "prefix_tokens": ("TLEDIT_PREFIX_TOKENS", int),
    "max_new_tokens": ("TLEDIT_MAX_NEW_TOKENS", int),
    "synthetic_sample": ("TLEDIT_SYNTHETIC_SAMPLE", float),
    "synthetic_seed": ("TLEDIT_SYNTHETIC_SEED", int),
    "synthetic_batch": ("TLEDIT_SYNTHETIC_BATCH", int),
    "min_tail_coverage": ("TLEDIT_MIN_TAIL_COVERAGE", float),
    "max_js_divergence": ("TLEDIT_MAX_JS_DIVERGENCE", float),
}
