"""Small hand-built SVG line charts for the Dagster UI (no plotting library).

The Dagster UI renders markdown metadata and allows `data:` image sources, so a chart is an SVG embedded
as a base64 data URI inside a MetadataValue.md. Log axes are what the paper's figures use for rank-frequency
curves and perplexity spreads.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Sequence
from xml.sax.saxutils import escape

# One color and dash per corpus variant, the same in every chart.
STYLE = {
    "raw": ("#1f77b4", ""),
    "edited": ("#2ca02c", "6 3"),
    "synthetic": ("#d62728", ""),
    "raw_matched": ("#7f7f7f", "2 3"),
    # The collapse probe's training sets (raw, edited and synthetic above) and its comparison with the paper.
    "mix_25": ("#ff7f0e", "2 2"),
    "mix_50": ("#e377c2", "2 2"),
    "mix_75": ("#8c564b", "2 2"),
    "this probe": ("#1f77b4", ""),
    "paper (GPT-2, Table 1)": ("#7f7f7f", "6 3"),
}
# Any other series (later generations, metrics across generations) takes the next of these, in order.
PALETTE = ("#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#1f77b4", "#2ca02c", "#d62728")
_W, _H, _L, _R, _T, _B = 640, 360, 64, 150, 28, 44


def _ticks(lo: float, hi: float, log: bool) -> list[float]:
    if log:
        return [10.0**e for e in range(math.floor(lo), math.ceil(hi) + 1)]
    step = 10 ** math.floor(math.log10(max(hi - lo, 1e-12)))
    if (hi - lo) / step < 4:
        step /= 2
    first = math.floor(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step) + 2)]


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1e4 or abs(v) < 1e-2:
        return f"1e{round(math.log10(abs(v)))}" if math.log10(abs(v)).is_integer() else f"{v:.0e}"
    return f"{v:g}"


def line_chart_svg(
    series: dict[str, Sequence[tuple[float, float]]],
    title: str,
    xlabel: str,
    ylabel: str,
    log_x: bool = False,
    log_y: bool = False,
    x_ticks: Sequence[float] | None = None,
) -> str:
    """One SVG with a polyline per series; non-positive values are dropped on a log axis.

    x_ticks: the x-axis ticks to label (linear axis), e.g. whole generations; by default evenly spaced ones.
    """
    tx = (lambda v: math.log10(v)) if log_x else (lambda v: v)
    ty = (lambda v: math.log10(v)) if log_y else (lambda v: v)
    pts = {
        name: [(tx(x), ty(y)) for x, y in data if (x > 0 or not log_x) and (y > 0 or not log_y)] for name, data in series.items()
    }
    allx = [x for p in pts.values() for x, _ in p] or [0.0, 1.0]
    ally = [y for p in pts.values() for _, y in p] or [0.0, 1.0]
    x0, x1 = min(allx), max(allx)
    y0, y1 = min(ally), max(ally)
    if log_x:
        x0, x1 = math.floor(x0), max(math.ceil(x1), math.floor(x0) + 1)
    if log_y:
        y0, y1 = math.floor(y0), max(math.ceil(y1), math.floor(y0) + 1)
    if not log_y:
        y0 = min(y0, 0.0)
    x1, y1 = (x1 if x1 > x0 else x0 + 1), (y1 if y1 > y0 else y0 + 1)
    if not log_y:  # headroom: an extreme point sits inside the frame, not on it (read as cut off)
        pad = 0.05 * (y1 - y0)
        y0, y1 = (y0 - pad if y0 < 0 else y0), y1 + pad
    pw, ph = _W - _L - _R, _H - _T - _B

    def sx(x: float) -> float:
        return _L + (x - x0) / (x1 - x0) * pw

    def sy(y: float) -> float:
        return _T + ph - (y - y0) / (y1 - y0) * ph

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_W}" height="{_H}" font-family="sans-serif" font-size="11">',
        f'<rect width="{_W}" height="{_H}" fill="white"/>',
        f'<text x="{_W / 2}" y="16" text-anchor="middle" font-size="13">{escape(title)}</text>',
    ]
    for t in (
        list(x_ticks)
        if x_ticks is not None and not log_x
        else _ticks(x0, x1, False)
        if not log_x
        else [math.log10(v) for v in _ticks(x0, x1, True)]
    ):
        if x0 - 1e-9 <= t <= x1 + 1e-9:
            label = _fmt(10**t if log_x else t)
            out.append(f'<line x1="{sx(t):.1f}" y1="{_T}" x2="{sx(t):.1f}" y2="{_T + ph}" stroke="#eee"/>')
            out.append(f'<text x="{sx(t):.1f}" y="{_T + ph + 14}" text-anchor="middle">{label}</text>')
    for t in _ticks(y0, y1, False) if not log_y else [math.log10(v) for v in _ticks(y0, y1, True)]:
        if y0 - 1e-9 <= t <= y1 + 1e-9:
            label = _fmt(10**t if log_y else t)
            out.append(f'<line x1="{_L}" y1="{sy(t):.1f}" x2="{_L + pw}" y2="{sy(t):.1f}" stroke="#eee"/>')
            out.append(f'<text x="{_L - 4}" y="{sy(t) + 4:.1f}" text-anchor="end">{label}</text>')
    out.append(f'<rect x="{_L}" y="{_T}" width="{pw}" height="{ph}" fill="none" stroke="#333"/>')
    out.append(f'<text x="{_L + pw / 2}" y="{_H - 8}" text-anchor="middle">{escape(xlabel)}</text>')
    out.append(
        f'<text x="14" y="{_T + ph / 2}" text-anchor="middle" transform="rotate(-90 14 {_T + ph / 2})">{escape(ylabel)}</text>'
    )
    others = iter(PALETTE * (1 + len(pts) // len(PALETTE)))
    for i, (name, p) in enumerate(pts.items()):
        color, dash = STYLE[name] if name in STYLE else (next(others), "")
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        if p:
            path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in p)
            out.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"{dash_attr}/>')
        ly = _T + 12 + 18 * i
        out.append(
            f'<line x1="{_L + pw + 12}" y1="{ly}" x2="{_L + pw + 36}" y2="{ly}" stroke="{color}" stroke-width="2"{dash_attr}/>'
        )
        out.append(f'<text x="{_L + pw + 42}" y="{ly + 4}">{escape(name)}</text>')
    out.append("</svg>")
    return "".join(out)


def svg_markdown(svg: str, alt: str) -> str:
    """Markdown that shows the SVG inline (a base64 data URI image)."""
    return f"![{alt}](data:image/svg+xml;base64,{base64.b64encode(svg.encode('utf-8')).decode('ascii')})"


def bar_chart_svg(bars: dict[str, tuple[float, float]], title: str, ylabel: str) -> str:
    """One bar per name with a whisker of +-sd (value, sd), colored as in the line charts; the axis starts at 0."""
    top = max([v + sd for v, sd in bars.values()] or [1.0])
    y1 = top if top > 0 else 1.0
    pw, ph = _W - _L - 20, _H - _T - _B
    slot = pw / max(len(bars), 1)

    def sy(y: float) -> float:
        return _T + ph - y / y1 * ph

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_W}" height="{_H}" font-family="sans-serif" font-size="11">',
        f'<rect width="{_W}" height="{_H}" fill="white"/>',
        f'<text x="{_W / 2}" y="16" text-anchor="middle" font-size="13">{escape(title)}</text>',
    ]
    for t in _ticks(0.0, y1, False):
        if t <= y1 + 1e-9:
            out.append(f'<line x1="{_L}" y1="{sy(t):.1f}" x2="{_L + pw}" y2="{sy(t):.1f}" stroke="#eee"/>')
            out.append(f'<text x="{_L - 4}" y="{sy(t) + 4:.1f}" text-anchor="end">{_fmt(t)}</text>')
    out.append(f'<rect x="{_L}" y="{_T}" width="{pw}" height="{ph}" fill="none" stroke="#333"/>')
    out.append(
        f'<text x="14" y="{_T + ph / 2}" text-anchor="middle" transform="rotate(-90 14 {_T + ph / 2})">{escape(ylabel)}</text>'
    )
    for i, (name, (value, sd)) in enumerate(bars.items()):
        color, _ = STYLE.get(name, ("#9467bd", ""))
        x = _L + i * slot + slot * 0.15
        w = slot * 0.7
        out.append(f'<rect x="{x:.1f}" y="{sy(value):.1f}" width="{w:.1f}" height="{sy(0) - sy(value):.1f}" fill="{color}"/>')
        if sd > 0:
            cx = x + w / 2
            out.append(
                f'<line x1="{cx:.1f}" y1="{sy(value + sd):.1f}" x2="{cx:.1f}" y2="{sy(max(value - sd, 0)):.1f}" stroke="#000"/>'
            )
            for yy in (value + sd, max(value - sd, 0)):
                out.append(f'<line x1="{cx - 5:.1f}" y1="{sy(yy):.1f}" x2="{cx + 5:.1f}" y2="{sy(yy):.1f}" stroke="#000"/>')
        out.append(f'<text x="{x + w / 2:.1f}" y="{sy(value) - 4:.1f}" text-anchor="middle">{value:.4g}</text>')
        out.append(f'<text x="{x + w / 2:.1f}" y="{_T + ph + 14}" text-anchor="middle">{escape(name)}</text>')
    out.append("</svg>")
    return "".join(out)
