"""The verdict of the health checks: does a variant keep raw's long tail and stay close to raw?

Dagster's asset checks (assets/checks.py) and anything else that judges a shard call this; the rule lives
here once, with the count-aware bounds that keep small shards from failing on noise: both measures are
shares measured on a count the shard holds (its rare bigrams, its hashed features), and a share measured on
a few items is judged by its Wilson bound at z = TAIL_Z, which approaches the share itself as the count grows.
"""

from __future__ import annotations

import math

import polars as pl

from tledit_pipeline.settings import CheckSettings

# z of the count-aware bounds (kept_share_upper_bound, js_lower_bound): about 1 in 1000 shards whose
# true share is at the threshold would still be flagged.
TAIL_Z = 3.0
# Hashed features one changed or deleted word moves: its unigram and the two bigrams it sits in (fewer at a
# document's edges). The JS bound counts a shard's hashed features in steps of this many.
FEATURES_PER_WORD = 3

Verdict = tuple[bool, dict, str]  # passed, metadata, one-line description (shown when it fails)


def _wilson(share: float, n: float, z: float) -> tuple[float, float]:
    """Wilson score interval of a share measured on n items."""
    denom = 1 + z * z / n
    centre = (share + z * z / (2 * n)) / denom
    half = z * math.sqrt(max(share * (1 - share), 0.0) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def kept_share_upper_bound(share: float, n: int, z: float = 3.0) -> float:
    """Wilson score upper bound of a share measured on n items: how high the true share may plausibly be.

    The tail check measures the share of raw's rare bigrams that the edit kept. In a shard with 50 rare
    bigrams one changed word moves that share by 2%, the whole tolerance; in a shard with 10^5 it moves
    by 0.002%. Judging the bound instead of the share lets a small shard lose what is within the noise of
    its size, while a real collapse is still stopped (losing a tenth from 28 rare bigrams up, half at any
    size), and a large shard is held to the threshold itself (the bound approaches the share as n grows).
    """
    if n <= 0:
        return 1.0
    return _wilson(share, n, z)[1]


def js_lower_bound(js: float, features: int, z: float = 3.0) -> float:
    """Wilson score lower bound of the JS divergence of a shard with `features` hashed features: how low the
    divergence an edit causes may plausibly be, given what this shard shows.

    JS (bits) never exceeds the share of feature occurrences that moved (the total variation), and one
    changed word moves at most FEATURES_PER_WORD of them, each 1/features of the mass. So at 70 tokens (about
    100 features) one changed word shows up to 0.03 bits, three times the default bound, while at 10^5
    features it shows 0.00003. The JS is judged like a share measured on features / FEATURES_PER_WORD words:
    a small shard may show the divergence of a changed word or two (what a 1 % edit leaves by chance in a
    few dozen words), a text mostly replaced fails at any size (about 0.5 bits and more), and a large shard
    is held to the bound itself (the lower bound approaches the JS as the count grows). Without a count
    (health rows stored before it was), the JS itself is returned: the absolute bound.
    """
    if features <= 0:
        return js
    return _wilson(min(max(js, 0.0), 1.0), features / FEATURES_PER_WORD, z)[0]


def health_verdict(health: pl.DataFrame, variant: str, shard: str, t: CheckSettings, z: float = TAIL_Z) -> Verdict:
    """Does `variant` keep raw's long tail (coverage ratio, judged by its count-aware upper bound on raw's
    rare bigrams) and stay close to raw (JS over hashed features, judged by its count-aware lower bound on
    raw's hashed features)? `health` holds distribution_health rows (variant, shard, metric, value); the
    description names what failed with its measured and allowed values."""
    v = {(r["variant"], r["metric"]): r["value"] for r in health.filter(pl.col("shard") == shard).iter_rows(named=True)}
    raw_cov = v.get(("raw", "tail_coverage"))
    cov = v.get((variant, "tail_coverage"))
    js = v.get((variant, "js_divergence_vs_raw"))
    if cov is None and raw_cov is not None and any(var == variant for var, _ in v):
        cov = 0.0  # the variant has rows but not one word left (every token deleted): none of raw's tail either
    rare = int(v.get(("raw", "rare_bigrams")) or 0)
    ratio = None if raw_cov is None or cov is None else cov / raw_cov
    bound = None if ratio is None else kept_share_upper_bound(ratio, rare, z)
    tail_ok = ratio is None or bound is None or ratio >= t.min_tail_coverage or bound >= t.min_tail_coverage
    features = int(v.get(("raw", "hashed_features")) or 0)
    js_bound = None if js is None else js_lower_bound(js, features, z)
    js_ok = js is None or js_bound is None or js <= t.max_js_divergence or js_bound <= t.max_js_divergence
    meta = {
        "tail_coverage": cov,
        "tail_coverage_of_raw": raw_cov,
        "coverage_ratio": ratio,
        "rare_bigrams": rare,
        "coverage_ratio_upper_bound": bound,
        "min_tail_coverage": t.min_tail_coverage,
        "js_divergence_vs_raw": js,
        "hashed_features": features,
        "js_divergence_lower_bound": js_bound,
        "max_js_divergence": t.max_js_divergence,
    }
    for m in ("top64_share", "distinct_2", "hashed_effective_buckets", "ppl_p10", "ppl_p50", "ppl_p90"):
        for var in (variant, "raw", "raw_matched") if variant == "synthetic" else (variant, "raw"):
            if (var, m) in v:
                meta[f"{var}/{m}"] = v[(var, m)]
    problems = []
    if not tail_ok:
        assert ratio is not None and bound is not None
        problems.append(
            f"{variant} keeps {ratio:.4f} of raw's tail ({round(ratio * rare)} of {rare} rare bigrams; "
            f"upper bound {bound:.4f} at z={z:g}), allowed at least {t.min_tail_coverage}"
        )
    if not js_ok:
        assert js is not None and js_bound is not None
        problems.append(
            f"{variant} js_divergence_vs_raw {js:.4f}"
            + (f" (over {features} hashed features; lower bound {js_bound:.4f} at z={z:g})" if features else "")
            + f", allowed at most {t.max_js_divergence}"
        )
    meta = {k: (round(x, 6) if isinstance(x, float) else x) for k, x in meta.items() if x is not None}
    return tail_ok and js_ok, meta, "; ".join(problems)
