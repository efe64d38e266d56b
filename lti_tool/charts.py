"""SVG charts rendered on the server (no JavaScript build step, readable without colour).

Every chart has a title and a description for screen readers, and the page shows the same
numbers as a table next to it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from markupsafe import Markup, escape

from mappings.progress import LevelInfo

WIDTH, HEIGHT = 640, 260
LEFT, RIGHT, TOP, BOTTOM = 150, 70, 16, 36


def timeline_svg(series: Sequence[tuple[dt.datetime, float]], levels: Sequence[LevelInfo],
                 *, title: str) -> Markup:
    """The learner's level over time: one point per piece of accepted evidence, on a
    vertical axis labelled with the scale's levels; the mastery level is a dashed line."""
    levels = sorted(levels, key=lambda lv: lv.points)
    low, high = levels[0].points, levels[-1].points
    span = (high - low) or 1.0
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def y(points: float) -> float:
        return TOP + plot_h * (1 - (points - low) / span)

    if series:
        start, end = series[0][0], series[-1][0]
        total = (end - start).total_seconds() or 1.0
    out = [f'<svg class="timeline" role="img" aria-labelledby="chart-title chart-desc" '
           f'viewBox="0 0 {WIDTH} {HEIGHT}" width="100%" preserveAspectRatio="xMidYMid meet" '
           f'xmlns="http://www.w3.org/2000/svg">',
           f'<title id="chart-title">{escape(title)}</title>']
    if series:
        desc = (f"{len(series)} points from {series[0][0]:%d %b %Y} to {series[-1][0]:%d %b %Y}; "
                f"latest {_level_name(series[-1][1], levels)}.")
    else:
        desc = "No accepted evidence yet."
    out.append(f'<desc id="chart-desc">{escape(desc)}</desc>')
    for level in levels:
        yy = y(level.points)
        dash = ' stroke-dasharray="6 4" stroke="#1e6b3a" stroke-width="2"' if level.mastery \
            else ' stroke="#d5dae1"'
        out.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{yy:.1f}" y2="{yy:.1f}"{dash}/>')
        out.append(f'<text x="{LEFT - 8}" y="{yy + 4:.1f}" text-anchor="end">'
                   f"{escape(level.name)}</text>")
        if level.mastery:
            out.append(f'<text x="{WIDTH - RIGHT + 6}" y="{yy + 4:.1f}">mastery</text>')
    if series:
        points = []
        for when, value in series:
            xx = LEFT + plot_w * ((when - start).total_seconds() / total if len(series) > 1
                                  else 0.5)
            points.append((xx, y(value), when, value))
        path = " ".join(f"{px:.1f},{py:.1f}" for px, py, _, _ in points)
        out.append(f'<polyline points="{path}" fill="none" stroke="#1f4e99" stroke-width="2.5"/>')
        for px, py, when, value in points:
            out.append(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="4.5" fill="#1f4e99">'
                       f"<title>{when:%d %b %Y}: {escape(_level_name(value, levels))}"
                       f"</title></circle>")
        out.append(f'<text x="{LEFT}" y="{HEIGHT - 10}">{start:%d %b %Y}</text>')
        if len(series) > 1:
            out.append(f'<text x="{WIDTH - RIGHT}" y="{HEIGHT - 10}" text-anchor="end">'
                       f"{end:%d %b %Y}</text>")
    out.append("</svg>")
    return Markup("".join(out))


def _level_name(points: float, levels: Sequence[LevelInfo]) -> str:
    reached = [lv for lv in levels if points >= lv.points - 1e-9]
    return f"{reached[-1].name} ({points:.2f})" if reached else f"{points:.2f}"
