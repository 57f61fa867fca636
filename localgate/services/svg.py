"""Server-rendered SVG charts: a page shows spend without any JavaScript.

Pure functions from numbers to SVG text. Every piece of text is escaped here,
so the caller may mark the result safe for the template.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from localgate.money import format_money

WIDTH = 640
HEIGHT = 150
TOP = 14  # room for the max label
BOTTOM = 22  # room for the day labels
LEFT = 4


def spend_chart(
    days: Sequence[str],
    micros: Sequence[int],
    currency: str,
    *,
    label: str,
    css_class: str = "",
) -> str:
    """Daily bars with a hover title per day, the highest day labelled, and
    first / middle / last day names under the axis."""
    n = max(len(days), 1)
    peak = max(micros, default=0)
    total = sum(micros)
    plot_h = HEIGHT - TOP - BOTTOM
    slot = (WIDTH - LEFT) / n
    bar_w = max(slot * 0.72, 1.0)
    summary = f"{label}: {format_money(total, currency)} over {len(days)} days"
    parts = [
        f'<svg class="chart {escape(css_class)}" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'role="img" aria-label="{escape(summary)}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(summary)}</title>",
        f'<line class="axis" x1="0" y1="{TOP + plot_h}" x2="{WIDTH}" y2="{TOP + plot_h}"/>',
    ]
    if peak:
        parts.append(f'<line class="grid" x1="0" y1="{TOP}" x2="{WIDTH}" y2="{TOP}"/>')
        parts.append(
            f'<text class="max" x="{WIDTH}" y="{TOP - 3}" text-anchor="end">'
            f"{escape(format_money(peak, currency))} / day</text>"
        )
    for i, (day, value) in enumerate(zip(days, micros, strict=True)):
        h = 0.0 if not peak else max(plot_h * value / peak, 1.5 if value else 0.0)
        x = LEFT + i * slot + (slot - bar_w) / 2
        y = TOP + plot_h - h
        tip = f"{day}: {format_money(value, currency)}"
        # A full-height transparent hit area keeps the hover title on empty days too.
        parts.append(
            f"<g><title>{escape(tip)}</title>"
            f'<rect class="hit" x="{x:.1f}" y="{TOP}" width="{bar_w:.1f}" height="{plot_h}"/>'
            f'<rect class="bar" x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" height="{h:.1f}"/></g>'
        )
    for i in sorted({0, (len(days) - 1) // 2, len(days) - 1}):
        if 0 <= i < len(days):
            x = LEFT + i * slot + slot / 2
            anchor = "start" if i == 0 else "end" if i == len(days) - 1 else "middle"
            x = LEFT if anchor == "start" else WIDTH if anchor == "end" else x
            parts.append(
                f'<text class="day" x="{x:.1f}" y="{HEIGHT - 6}" text-anchor="{anchor}">'
                f"{escape(days[i][5:])}</text>"
            )
    parts.append("</svg>")
    return "".join(parts)
