"""Charts as inline SVG, rendered on the server: axes, units, a legend, and a <title> per point for hovering.

No JavaScript and nothing fetched: the page carries its charts, so they show without scripts and offline.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape

from markupsafe import Markup

COLOURS = ("#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed")
WIDTH, HEIGHT, LEFT, BOTTOM, TOP, RIGHT = 640, 220, 64, 28, 12, 12


@dataclass(frozen=True)
class Line:
    label: str
    values: list[float | None]     # one per point; None: nothing to show there (no gap in the axis)


def human(value: float, unit: str) -> str:
    if unit == "bytes":
        for suffix in ("B", "KiB", "MiB", "GiB", "TiB"):
            if abs(value) < 1024 or suffix == "TiB":
                return f"{value:.0f} {suffix}" if suffix == "B" else f"{value:.1f} {suffix}"
            value /= 1024
    if unit == "%":
        return f"{value:.0f}%"
    if unit == "s":
        return f"{value:g} s"
    return f"{value:,.0f}" if value == int(value) else f"{value:.2f}"


def _ceiling(top: float) -> float:
    """A round axis maximum at or above `top`."""
    if top <= 0:
        return 1.0
    step = 10 ** (len(str(int(top))) - 1)
    for nice in (1, 2, 2.5, 5, 10):
        if top <= nice * step:
            return nice * step
    return 10 * step


def line_chart(title: str, times: list[int], lines: list[Line], unit: str, maximum: float | None = None) -> Markup:
    """A line chart of `lines` over `times` (epoch seconds, one per value), y axis in `unit`."""
    values = [v for line in lines for v in line.values if v is not None]
    top = maximum if maximum is not None else _ceiling(max(values, default=0))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    n = max(len(times), 1)

    def x(i: int) -> float:
        return LEFT + (plot_w * i / (n - 1) if n > 1 else plot_w / 2)

    def y(v: float) -> float:
        return TOP + plot_h * (1 - v / top)
    parts = [f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT + 24}" role="img" aria-label="{escape(title)}" '
             'xmlns="http://www.w3.org/2000/svg">', f"<title>{escape(title)}</title>"]
    for k in range(5):   # the y axis: five gridlines with their values
        v = top * k / 4
        parts.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y(v):.1f}" y2="{y(v):.1f}" class="grid"/>')
        parts.append(f'<text x="{LEFT - 6}" y="{y(v) + 4:.1f}" text-anchor="end" class="axis">'
                     f"{escape(human(v, unit))}</text>")
    if times:   # the x axis: first, middle and last bucket
        fmt = "%H:%M" if times[-1] - times[0] <= 86400 else "%m-%d"
        for i in sorted({0, (n - 1) // 2, n - 1}):
            label = datetime.fromtimestamp(times[i], UTC).strftime(fmt)
            parts.append(f'<text x="{x(i):.1f}" y="{HEIGHT - 8}" text-anchor="middle" class="axis">{label}</text>')
    for index, line in enumerate(lines):
        colour = COLOURS[index % len(COLOURS)]
        points = [(x(i), y(v), i, v) for i, v in enumerate(line.values) if v is not None]
        if points:
            path = " ".join(f"{px:.1f},{py:.1f}" for px, py, _, _ in points)
            parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{path}" '
                         f'data-series="{escape(line.label)}"/>')
        for px, py, i, v in points:
            when = datetime.fromtimestamp(times[i], UTC).strftime("%Y-%m-%d %H:%M UTC")
            parts.append(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="2.5" fill="{colour}" data-value="{v}">'
                         f"<title>{escape(line.label)} {escape(when)}: {escape(human(v, unit))}</title></circle>")
        legend_x = LEFT + index * 160
        parts.append(f'<rect x="{legend_x}" y="{HEIGHT + 8}" width="12" height="12" fill="{colour}"/>'
                     f'<text x="{legend_x + 16}" y="{HEIGHT + 18}" class="legend">{escape(line.label)}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def sparkline(values: list[float], label: str) -> Markup:
    """A small unlabelled trend line (the overview's pulls per hour)."""
    w, h = 120, 28
    top = max(values, default=0) or 1
    step = w / max(len(values) - 1, 1)
    path = " ".join(f"{i * step:.1f},{h - 2 - (h - 4) * v / top:.1f}" for i, v in enumerate(values))
    return Markup(f'<svg class="spark" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" '
                  f'aria-label="{escape(label)}" xmlns="http://www.w3.org/2000/svg"><title>{escape(label)}</title>'
                  f'<polyline fill="none" stroke="#2563eb" stroke-width="1.5" points="{path}"/></svg>')
