"""Plain-text tables for the terminal."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

TIMELINE_COLUMNS = (
    ("ts", "time"), ("stage", "stage"), ("action", "action"), ("event_id", "event"),
    ("destination", "destination"), ("detail", "detail"),
)


def table(rows: Iterable[Sequence[str]], headers: Sequence[str]) -> str:
    """Left-aligned columns separated by two spaces."""
    rows = [list(map(str, row)) for row in rows]
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
              for row in rows]
    return "\n".join(lines)


def timeline_detail(entry: dict[str, Any]) -> str:
    """The stage-specific part of a timeline entry, in a few words."""
    stage = entry.get("stage")
    if stage == "attempt":
        status = entry.get("http_status", "no answer")
        text = f"try {entry.get('attempt')}: HTTP {status} in {entry.get('latency_ms')} ms"
        if entry.get("error"):
            text += f" ({entry['error']})"
        return text + f" [{entry.get('worker', '?')}]"
    if stage == "retry_scheduled":
        return f"retry in {int(entry.get('delay_ms', 0)) / 1000:.1f} s"
    if stage == "delivered":
        return f"dedup_key {entry.get('pd_dedup_key') or entry.get('dedup_key')}"
    if stage in ("dead_lettered", "superseded", "suppressed"):
        parts = [entry.get("reason", ""), entry.get("error", "")]
        errors = entry.get("errors")
        if errors:
            parts.append("; ".join(map(str, errors)))
        return " - ".join(p for p in parts if p)
    return ""


def timeline_table(entries: Iterable[dict[str, Any]]) -> str:
    """An incident's timeline as a table, one line per entry."""
    rows = []
    for entry in entries:
        shown = dict(entry, detail=timeline_detail(entry), event_id=entry["event_id"][:12])
        rows.append([str(shown.get(key, "")) for key, _ in TIMELINE_COLUMNS])
    return table(rows, [title for _, title in TIMELINE_COLUMNS])
