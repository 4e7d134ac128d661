"""Charts as inline SVG strings, rendered on the server: no JavaScript, no front-end build.

NPS runs from −100 to 100 on every chart, so charts side by side compare at a glance. Each data point
is an element with ``data-*`` attributes and a ``<title>`` (the browser's tooltip).
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from markupsafe import Markup

from nps_sync.analytics.nps import NpsStat, PeriodStat

COLORS = {"detractor": "#d64545", "passive": "#e6a23c", "promoter": "#2f9e44", "accent": "#3b5bdb"}
_FONT = 'font-family="-apple-system, Segoe UI, Helvetica, Arial, sans-serif" font-size="12"'


def _fmt(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".")


def trend_svg(points: Sequence[PeriodStat], *, width: int = 720, height: int = 260) -> Markup:
    """NPS per period: a line with its 95 % confidence band."""
    left, right, top, bottom = 44, 34, 14, 34
    plot_w, plot_h = width - left - right, height - top - bottom

    def y(v: float) -> float:
        return top + (100.0 - v) / 200.0 * plot_h

    data = [(p, p.stat.nps, p.stat.ci) for p in points if p.stat.nps is not None and p.stat.ci is not None]
    step = plot_w / max(1, len(data) - 1) if len(data) > 1 else 0.0

    def x(i: int) -> float:
        return left + (i * step if len(data) > 1 else plot_w / 2)

    parts = [
        f'<svg class="chart trend" role="img" aria-label="NPS per period with 95% confidence band" '
        f'viewBox="0 0 {width} {height}" width="100%" xmlns="http://www.w3.org/2000/svg" {_FONT}>'
    ]
    for v in (-100, -50, 0, 50, 100):
        stroke = "#9aa5b1" if v == 0 else "#e4e7eb"
        parts.append(
            f'<line x1="{left}" x2="{width - right}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="{stroke}"/>'
            f'<text x="{left - 8}" y="{y(v) + 4:.1f}" text-anchor="end" fill="#616e7c">{v}</text>'
        )
    if not data:
        parts.append(
            f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle" fill="#616e7c">'
            "No answers yet</text>"
        )
        return Markup("".join(parts) + "</svg>")  # noqa: S704 - every label in it went through escape()
    upper = [f"{x(i):.1f},{y(ci[1]):.1f}" for i, (_, _, ci) in enumerate(data)]
    lower = [f"{x(i):.1f},{y(ci[0]):.1f}" for i, (_, _, ci) in reversed(list(enumerate(data)))]
    if len(data) == 1:
        cx = x(0)
        upper = [f"{cx - 14:.1f},{y(data[0][2][1]):.1f}", f"{cx + 14:.1f},{y(data[0][2][1]):.1f}"]
        lower = [f"{cx + 14:.1f},{y(data[0][2][0]):.1f}", f"{cx - 14:.1f},{y(data[0][2][0]):.1f}"]
    parts.append(
        f'<polygon class="ci-band" points="{" ".join(upper + lower)}" fill="{COLORS["accent"]}" '
        'fill-opacity="0.14" stroke="none"/>'
    )
    line = " ".join(f"{x(i):.1f},{y(nps):.1f}" for i, (_, nps, _) in enumerate(data))
    parts.append(
        f'<polyline class="nps-line" points="{line}" fill="none" stroke="{COLORS["accent"]}" '
        'stroke-width="2.5" stroke-linejoin="round"/>'
    )
    every = max(1, (len(data) + 9) // 10)
    for i, (p, nps, ci) in enumerate(data):
        label = escape(p.label)
        tip = f"{label}: NPS {_fmt(nps)} (95% CI {_fmt(ci[0])} to {_fmt(ci[1])}), n={p.stat.responses}"
        parts.append(
            f'<circle class="point" cx="{x(i):.1f}" cy="{y(nps):.1f}" r="4.5" fill="#fff" '
            f'stroke="{COLORS["accent"]}" stroke-width="2.5" data-period="{label}" data-nps="{_fmt(nps)}" '
            f'data-ci-low="{_fmt(ci[0])}" data-ci-high="{_fmt(ci[1])}" data-n="{p.stat.responses}">'
            f"<title>{tip}</title></circle>"
        )
        if i % every == 0 or i == len(data) - 1:
            parts.append(
                f'<text x="{x(i):.1f}" y="{height - 12}" text-anchor="middle" fill="#616e7c">{label}</text>'
            )
    return Markup("".join(parts) + "</svg>")  # noqa: S704 - every label in it went through escape()


def segments_svg(rows: Sequence[tuple[str, NpsStat]], *, width: int = 720, bar: int = 26) -> Markup:
    """NPS per segment value: bars from zero with the 95 % interval as a whisker."""
    rows = [(label, s) for label, s in rows if s.nps is not None]
    left, right, top = 150, 90, 24
    height = top + len(rows) * (bar + 8) + 10
    plot_w = width - left - right

    def x(v: float) -> float:
        return left + (v + 100.0) / 200.0 * plot_w

    parts = [
        f'<svg class="chart segments" role="img" aria-label="NPS per segment" viewBox="0 0 {width} {height}" '
        f'width="100%" xmlns="http://www.w3.org/2000/svg" {_FONT}>'
    ]
    for v in (-100, -50, 0, 50, 100):
        stroke = "#9aa5b1" if v == 0 else "#e4e7eb"
        parts.append(
            f'<line x1="{x(v):.1f}" x2="{x(v):.1f}" y1="{top - 6}" y2="{height - 6}" stroke="{stroke}"/>'
            f'<text x="{x(v):.1f}" y="{top - 10}" text-anchor="middle" fill="#616e7c">{v}</text>'
        )
    for i, (label, s) in enumerate(rows):
        nps, ci = s.nps, s.ci
        assert nps is not None
        assert ci is not None
        y0 = top + i * (bar + 8)
        color = COLORS["promoter"] if nps >= 30 else COLORS["passive"] if nps >= 0 else COLORS["detractor"]
        x0, x1 = sorted((x(0), x(nps)))
        name = escape(label if len(label) <= 22 else label[:21] + "…")
        tip = f"{escape(label)}: NPS {_fmt(nps)} (95% CI {_fmt(ci[0])} to {_fmt(ci[1])}), n={s.responses}"
        mid = y0 + bar / 2
        parts.append(
            f'<text x="{left - 10}" y="{mid + 4:.1f}" text-anchor="end" fill="#1f2933">{name}</text>'
            f'<rect class="bar" x="{x0:.1f}" y="{y0}" width="{max(1.5, x1 - x0):.1f}" height="{bar}" rx="3" '
            f'fill="{color}" fill-opacity="0.85" data-segment="{escape(label)}" data-nps="{_fmt(nps)}" '
            f'data-n="{s.responses}"><title>{tip}</title></rect>'
            f'<line x1="{x(ci[0]):.1f}" x2="{x(ci[1]):.1f}" y1="{mid:.1f}" y2="{mid:.1f}" stroke="#1f2933" '
            'stroke-width="1.5"/>'
            f'<text x="{width - right + 8}" y="{mid + 4:.1f}" fill="#1f2933">{_fmt(nps)} '
            f'<tspan fill="#616e7c">n={s.responses}</tspan></text>'
        )
    return Markup("".join(parts) + "</svg>")  # noqa: S704 - every label in it went through escape()


def scores_svg(counts: Sequence[int], *, width: int = 340, height: int = 150) -> Markup:
    """How many people gave each score 0–10, coloured by category."""
    left, bottom, top = 8, 22, 16
    slot = (width - 2 * left) / 11
    peak = max([*counts, 1])
    parts = [
        f'<svg class="chart scores" role="img" aria-label="Answers per score" viewBox="0 0 {width} {height}" '
        f'width="100%" xmlns="http://www.w3.org/2000/svg" {_FONT}>'
    ]
    for score, n in enumerate(counts):
        cat = "detractor" if score <= 6 else "passive" if score <= 8 else "promoter"
        h = (height - top - bottom) * n / peak
        bx = left + score * slot + 3
        parts.append(
            f'<rect class="score-bar" x="{bx:.1f}" y="{height - bottom - h:.1f}" width="{slot - 6:.1f}" '
            f'height="{h:.1f}" rx="2" fill="{COLORS[cat]}" data-score="{score}" data-n="{n}">'
            f"<title>score {score}: {n}</title></rect>"
            f'<text x="{bx + (slot - 6) / 2:.1f}" y="{height - 6}" text-anchor="middle" fill="#616e7c">'
            f"{score}</text>"
        )
        if n:
            parts.append(
                f'<text x="{bx + (slot - 6) / 2:.1f}" y="{height - bottom - h - 4:.1f}" '
                f'text-anchor="middle" fill="#1f2933" font-size="11">{n}</text>'
            )
    return Markup("".join(parts) + "</svg>")  # noqa: S704 - every label in it went through escape()
