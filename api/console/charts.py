"""Charts drawn on the server as SVG: the geometry here (pure), the markup in a template.

A chart is a few series over the same minutes; each becomes polylines in a fixed viewBox
(a gap where a value is missing), with a y axis rounded to 1, 2 or 5 times a power of
ten in five steps, and ticks on the x axis every 15 minutes. The template also gets the values as a
table, for screen readers and for reading exact figures.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

WIDTH, HEIGHT = 600, 240
LEFT, RIGHT, TOP, BOTTOM = 64, 12, 12, 28  # room for the axes' labels
Y_TICKS = 5
X_TICK_MINUTES = 15


@dataclass
class Series:
    """One line: its name, CSS class (colour and dash), polylines, and last value."""

    name: str
    css: str
    lines: list[str] = field(default_factory=list)  # SVG `points` of each unbroken run
    dots: list[tuple[float, float]] = field(default_factory=list)  # lone points
    latest: str = "-"


@dataclass
class Chart:
    """A chart ready for the template."""

    title: str
    series: list[Series]
    y_ticks: list[tuple[float, str]]
    x_ticks: list[tuple[float, str]]
    rows: list[list[str]]  # the data table: a minute, then each series' value
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    right: int = WIDTH - RIGHT
    top: int = TOP
    bottom: int = HEIGHT - BOTTOM
    empty: bool = False


def nice_ceiling(value: float) -> float:
    """The smallest of 1, 2 or 5 times a power of ten that is at least `value` (1 for 0)."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if step * power >= value * (1 - 1e-12):
            return float(step * power)
    return float(10 * power)  # unreachable


def line_chart(title: str, minutes_ms: Sequence[int],
               series: Sequence[tuple[str, str, Sequence[float | None]]],
               label: Callable[[float], str], *, least_top: float = 0.0) -> Chart:
    """A chart of `series` (name, CSS class, one value or None per minute) over
    `minutes_ms` (each minute's start, epoch ms); `label` formats a value. The y axis
    reaches at least `least_top` (counts: 5, so that every tick is a whole number)."""
    count = len(minutes_ms)
    values = [v for _, _, points in series for v in points if v is not None]
    top_value = nice_ceiling(max([*values, least_top]))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(index: int) -> float:
        return round(LEFT + (plot_w * index / max(1, count - 1)), 1)

    def y(value: float) -> float:
        return round(TOP + plot_h * (1 - value / top_value), 1)

    drawn = []
    for name, css, points in series:
        line = Series(name, css)
        run: list[tuple[float, float]] = []
        for index, value in enumerate([*points, None]):
            if value is not None:
                run.append((x(index), y(value)))
                continue
            if len(run) == 1:
                line.dots.append(run[0])
            elif run:
                line.lines.append(" ".join(f"{px},{py}" for px, py in run))
            run = []
        last = next((v for v in reversed(points) if v is not None), None)
        line.latest = label(last) if last is not None else "-"
        drawn.append(line)
    y_ticks = [(y(top_value * i / Y_TICKS), label(top_value * i / Y_TICKS))
               for i in range(Y_TICKS + 1)]
    x_ticks = [(x(i), _clock(minute)) for i, minute in enumerate(minutes_ms)
               if (minute // 60_000) % X_TICK_MINUTES == 0]
    rows = [[_clock(minute), *(label(points[i]) if points[i] is not None else "-"
                               for _, _, points in series)]
            for i, minute in enumerate(minutes_ms)]
    return Chart(title, drawn, y_ticks, x_ticks, rows, empty=not values)


def _clock(millis: int) -> str:
    return datetime.fromtimestamp(millis / 1000, UTC).strftime("%H:%M")
