"""The console's pure parts: the SVG charts' geometry, and how templates show values from
outside (HTML escaped, control characters escaped as the CLI shows them)."""

from __future__ import annotations

import pytest

from api.console.charts import HEIGHT, LEFT, TOP, WIDTH, line_chart, nice_ceiling
from api.console.rendering import ENVIRONMENT, moment, stage_name

MINUTE = 60_000
START = 1_764_756_000_000  # 2025-12-03 10:00 UTC, a quarter hour


@pytest.mark.parametrize(("value", "expected"), [
    (0, 1), (0.3, 0.5), (1, 1), (1.01, 2), (3, 5), (5, 5), (7, 10), (37, 50), (120, 200),
    (5000, 5000), (32_800, 50_000)])
def test_the_y_axis_ends_on_1_2_or_5_times_a_power_of_ten(value: float, expected: float) -> None:
    assert nice_ceiling(value) == pytest.approx(expected)


def test_series_become_polylines_with_gaps_and_lone_dots() -> None:
    minutes = [START + i * MINUTE for i in range(6)]
    chart = line_chart("t", minutes, [("a", "s-a", [0, 10, None, 5, None, 20]),
                                      ("b", "s-b", [None] * 6)], lambda v: f"{v:g}")
    a, b = chart.series
    # x from the left edge to the right one; y from the top (20 -> top) to 0 (bottom)
    plot_h = HEIGHT - TOP - 28
    [line] = a.lines
    assert [tuple(map(float, p.split(","))) for p in line.split()] == [
        (LEFT, TOP + plot_h), (LEFT + 104.8, TOP + plot_h / 2)]
    assert a.dots == [(LEFT + 314.4, TOP + plot_h * 0.75), (WIDTH - 12, TOP)]
    assert a.latest == "20" and b.latest == "-" and b.lines == [] and b.dots == []
    assert [label for _, label in chart.y_ticks] == ["0", "4", "8", "12", "16", "20"]
    assert chart.x_ticks == [(LEFT, "10:00")]
    assert chart.rows[2] == ["10:02", "-", "-"] and chart.rows[5] == ["10:05", "20", "-"]
    assert not chart.empty


def test_an_empty_chart_says_so_and_counts_keep_whole_ticks() -> None:
    minutes = [START + i * MINUTE for i in range(60)]
    chart = line_chart("t", minutes, [("a", "s-a", [0.0] * 60)], lambda v: f"{v:g}",
                       least_top=5)
    assert [label for _, label in chart.y_ticks] == ["0", "1", "2", "3", "4", "5"]
    assert [label for _, label in chart.x_ticks] == ["10:00", "10:15", "10:30", "10:45"]
    assert line_chart("t", minutes, [("a", "s-a", [None] * 60)], str).empty


def test_values_from_outside_are_escaped_for_html_and_for_the_eye() -> None:
    page = ENVIRONMENT.from_string("<p>{{ value }}</p>").render(
        value="<script>alert(1)</script>\x1b[2J\u202eevil\nnext")
    assert page == ("<p>&lt;script&gt;alert(1)&lt;/script&gt;\\x1b[2J\\u202eevil\\nnext</p>")
    assert ENVIRONMENT.from_string("{{ v }}").render(v=None) == ""
    shown = ENVIRONMENT.from_string("<pre>{{ v|pretty_json }}</pre>").render(
        v={"summary": "<b>\u202e\x1b[2J</b>", "n": 1})
    assert shown == ('<pre>{\n  &#34;summary&#34;: &#34;&lt;b&gt;\\u202e\\u001b[2J&lt;/b&gt;'
                     '&#34;,\n  &#34;n&#34;: 1\n}</pre>')  # lines kept, each value escaped


def test_times_and_stage_names_for_people() -> None:
    assert moment(1_764_756_002_000) == "2025-12-03 10:00:02 UTC"
    assert moment("2025-12-03T10:00:02.120+00:00") == "2025-12-03 10:00:02 UTC"
    assert moment(None) == "-" and moment("not a time") == "not a time"
    assert stage_name("retry_scheduled") == "Retry scheduled"
    assert stage_name("pagerduty_acknowledged") == "PagerDuty acknowledged"
    assert stage_name("pagerduty_annotated") == "PagerDuty annotated"
