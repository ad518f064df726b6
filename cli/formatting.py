"""Plain-text tables and summaries for the terminal.

Every value shown comes through `config.text.printable`: a control character in a stored
or received value (an escape sequence, a newline) is shown escaped, so it can neither act
on the terminal nor start a row of its own.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from config.text import duration, printable

TIMELINE_COLUMNS = (
    ("ts", "time"), ("stage", "stage"), ("action", "action"), ("event_id", "event"),
    ("destination", "destination"), ("detail", "detail"),
)


def table(rows: Iterable[Sequence[object]], headers: Sequence[str]) -> str:
    """Left-aligned columns separated by two spaces, each cell one line of printable text."""
    rows = [[printable(cell) for cell in row] for row in rows]
    headers = [printable(h) for h in headers]
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
              for row in rows]
    return "\n".join(lines)


def _latency(value: Any) -> str:
    try:
        return f"{float(value):.1f} ms"
    except (TypeError, ValueError):
        return "?"


def timeline_detail(entry: dict[str, Any]) -> str:
    """The stage-specific part of a timeline entry, in a few words."""
    stage = entry.get("stage")
    if stage == "attempt":
        status = entry.get("http_status", "no answer")
        text = f"try {entry.get('attempt')}: HTTP {status} in {_latency(entry.get('latency_ms'))}"
        if entry.get("error"):
            text += f" ({entry['error']})"
        if entry.get("probe"):
            text += " (circuit probe)"
        text += f" [{entry.get('worker', '?')}"
        if entry.get("task_id"):
            text += f" task {entry['task_id']}"
        return text + "]"
    if stage in ("retry_scheduled", "rate_limited"):
        reason = entry.get("reason")
        text = f"retry in {int(entry.get('delay_ms', 0)) / 1000:.1f} s"
        return f"{text} ({reason})" if reason else text
    if stage == "delivered":
        return f"dedup_key {entry.get('pd_dedup_key') or entry.get('dedup_key')}"
    if stage == "replayed":
        parts = [f"was {entry['reason']}" if entry.get("reason") else "",
                 f"ahead of {entry['ahead_of']} later event(s)" if entry.get("ahead_of") else "",
                 "forced" if entry.get("forced") else "",
                 f"by {entry['operator']}" if entry.get("operator") else ""]
        return ", ".join(p for p in parts if p)
    if stage in ("dead_lettered", "superseded", "suppressed", "purged"):
        parts = [entry.get("reason", ""), entry.get("error", "")]
        errors = entry.get("errors")
        if errors:
            parts.append("; ".join(map(str, errors)) if isinstance(errors, list) else str(errors))
        if entry.get("operator"):
            parts.append(f"by {entry['operator']}")
        return " - ".join(p for p in parts if p)
    if str(stage).startswith("pagerduty_"):
        parts = [f"by {entry['agent']}" if entry.get("agent") else "",
                 f"PagerDuty incident {entry['pd_incident']}" if entry.get("pd_incident") else ""]
        return ", ".join(p for p in parts if p)
    return ""


def timeline_table(entries: Iterable[dict[str, Any]]) -> str:
    """An incident's timeline as a table, one line per entry."""
    rows = []
    for entry in entries:
        shown = dict(entry, detail=timeline_detail(entry),
                     event_id=str(entry.get("event_id", ""))[:12])
        rows.append([str(shown.get(key, "")) for key, _ in TIMELINE_COLUMNS])
    return table(rows, [title for _, title in TIMELINE_COLUMNS])


# How the summary names final states: PagerDuty's own word for a delivered event is
# "accepted" (HTTP 202), which keeps the summary apart from the table's `delivered` rows.
STATE_WORDS = {"delivered": "accepted by PagerDuty", "dead_lettered": "dead-lettered"}


def _states(states: Mapping[str, int]) -> str:
    return ", ".join(f"{n} {STATE_WORDS.get(state, state)}"
                     for state, n in states.items()) or "none"


def timeline_summary(summary: Mapping[str, Any]) -> str:
    """The derived figures of an incident's timeline, a few lines."""
    return "\n".join(printable(line) for line in _summary_lines(summary))


def _summary_lines(summary: Mapping[str, Any]) -> list[str]:
    lines = [
        f"incident {summary['incident_id']}: {summary['entries']} entries, "
        f"{summary['events']} event(s): {_states(summary['states'])}",
        f"  attempts: {summary['attempts']} (retries scheduled {summary['retries_scheduled']}, "
        f"rate-limited {summary['rate_limited']}, replayed {summary['replayed']})",
        f"  enqueued to first accepted: {duration(summary['enqueue_to_first_delivery_ms'])}",
        f"  trigger accepted to resolve accepted: {duration(summary['trigger_to_resolve_ms'])}",
    ]
    if len(summary["keys"]) > 1:
        for key in summary["keys"]:
            lines.append(
                f"  {key['destination']}/{key['dedup_key']}: {key['attempts']} attempts, "
                f"first accepted after {duration(key['enqueue_to_first_delivery_ms'])}, "
                f"trigger to resolve {duration(key['trigger_to_resolve_ms'])}")
    return lines


def dead_letter_table(letters: Iterable[Mapping[str, Any]]) -> str:
    """`dlq list` as a table."""
    rows = [
        [e["dead_lettered_at"] or "", e["event_id"][:12], e["destination"], e["action"] or "",
         e["incident_id"] or "", e["reason"],
         "replay pending" if e["state"] == "replay_pending" else e["state"],
         str(e["attempts"]), "; ".join(map(str, e["errors"])) or (e["error"] or "")]
        for e in letters
    ]
    return table(rows, ["dead-lettered", "event", "destination", "action", "incident",
                        "reason", "state", "attempts", "error"])


def reason_counts(counts: Mapping[str, int]) -> str:
    """`rejected 10, expired 2`."""
    return printable(", ".join(f"{reason} {n}" for reason, n in counts.items()) or "none")


def dead_letter_detail(letter: Mapping[str, Any]) -> str:
    """`dlq show` as text: the record, PagerDuty's errors, the masked body, each attempt."""
    record = [
        f"event        {letter['event_id']}",
        f"state        {letter['state']}  (reason: {letter['reason']})",
        f"destination  {letter['destination']}",
        f"dedup_key    {letter['dedup_key']}",
        f"incident     {letter['incident_id']}   action: {letter['action']}",
        f"attempts     {letter['attempts']}   replays: {letter['replays']}",
        f"first seen   {letter['first_seen']}",
        f"last attempt {letter['last_attempt']}",
        f"dead-lettered {letter['dead_lettered_at']}",
        f"error        {letter['error'] or '-'}",
        "PagerDuty's errors:",
        *([f"  - {e}" for e in letter["errors"]] or ["  (none)"]),
        *([f"origin       {letter['origin']}"] if letter.get("origin") else []),
        *(["raw (as received; key-shaped tokens masked):", f"  {letter['raw']}"]
          if letter.get("raw") is not None else []),
    ]
    # The blocks below are JSON (control characters already escaped) and a table.
    lines = [
        *(printable(line) for line in record),
        "",
        "event:",
        _indent(json.dumps(letter["event"], indent=2, sort_keys=True)),
        "",
        printable(f"body ({letter['body_note']}):"),
        _indent(json.dumps(letter["body"], indent=2) if letter["body"] is not None else "-"),
        "",
        "history:",
        _indent(timeline_table(letter["timeline"]) if letter["timeline"] else
                "(no timeline entries left)"),
    ]
    return "\n".join(lines)


def _indent(text: str, prefix: str = "  ") -> str:
    return "\n".join(prefix + line for line in text.splitlines())


REPLAY_LABELS = {
    "queued": "queued", "would_queue": "would queue", "superseded": "superseded",
    "would_supersede": "would be superseded", "skipped": "skipped", "unknown": "unknown",
}


def replay_table(decisions: Iterable[Mapping[str, Any]]) -> str:
    """`replay` outcomes as a table."""
    rows = [
        [d["event_id"][:12], d["action"], d["destination"], d["incident_id"],
         REPLAY_LABELS.get(d["outcome"], d["outcome"]) + (
             f" ({d['reason']})" if d["reason"] and d["outcome"] != "superseded" else ""),
         d["detail"]]
        for d in decisions
    ]
    return table(rows, ["event", "action", "destination", "incident", "result", "why"])


def status_screen(status: Mapping[str, Any]) -> str:
    """`monitao-pd status` on one screen."""
    workers = status["workers"]
    if workers is None:
        worker_line = f"unknown ({status['workers_error']})"
    else:
        worker_line = str(len(workers)) + (f"  ({', '.join(workers)})" if workers else "")
    age = status["oldest_pending_age_seconds"]
    oldest = "-" if age is None else (
        f"{duration(age * 1000)}  (event {status['oldest_pending_event']})")
    waiting = []
    for name in status["destinations_waiting"]:
        d = status["destinations"][name]
        why = []
        if d["cooling_down"]:
            why.append(f"429 cooldown {duration(d['cooldown_remaining_seconds'] * 1000)} left")
        if d["rate_waiting_keys"]:
            why.append(f"{d['rate_waiting_keys']} key(s) waiting for the rate budget")
        if d["circuit"] == "open":
            why.append("circuit open")
        waiting.append(f"{name} ({', '.join(why)})")
    circuits = _circuits(status["destinations"])
    queue = status["queue_length"]
    rows = [
        ("workers online", worker_line),
        ("pending events", f"{status['pending_events']} in {status['scheduled_keys']} key(s)"),
        ("oldest pending", oldest),
        ("keys due now", str(status["due_keys"])),
        ("in flight", f"{status['in_flight']} key(s) being delivered, "
                      f"{status['backing_off']} backing off"),
        ("broker queue", "unknown" if queue is None else f"{queue} task(s)"),
        ("dead letters", f"{status['dead_letters_total']}: {reason_counts(status['dead_letters'])}"
                         + (f"  ({status['replays_pending']} replay(s) pending)"
                            if status["replays_pending"] else "")),
        ("cooling down", "; ".join(waiting) or "none"),
        ("circuits", circuits),
    ]
    rows += _registry_rows(status)
    if status.get("rest_summary"):
        rows.append(("pagerduty rest", status["rest_summary"]))
    sync = status.get("maintenance_sync") or {}
    if any(sync.get(k) for k in ("synced", "pending", "failed")):
        text = (f"{sync['synced']} synced, {sync['pending']} pending, "
                f"{sync['failed']} failed")
        if sync.get("first_failure"):
            text += f"  (first failure: {sync['first_failure']})"
        rows.append(("pagerduty windows", text))
    width = max(len(label) for label, _ in rows)
    lines = [f"{label.ljust(width)}  {printable(value)}" for label, value in rows]
    verdict = status["verdict"]
    lines.append("")
    lines.append(("OK: " if status["healthy"] else "ALERT: ") + printable(verdict))
    return "\n".join(lines)


# Past this many destinations, `status` counts closed circuits instead of naming each.
CIRCUITS_NAMED = 10


def _circuits(destinations: Mapping[str, Mapping[str, Any]]) -> str:
    known = {name: d["circuit"] for name, d in destinations.items() if d["circuit"] != "unknown"}
    if not known:
        return "unknown (no MONITAO_PD_CONFIG)"
    if len(known) <= CIRCUITS_NAMED:
        return ", ".join(f"{name} {circuit}" for name, circuit in known.items())
    others = [f"{name} {circuit}" for name, circuit in known.items() if circuit != "closed"]
    closed = len(known) - len(others)
    return "; ".join([f"{closed} closed", *others[:CIRCUITS_NAMED]]
                     + ([f"{len(others) - CIRCUITS_NAMED} more not closed"]
                        if len(others) > CIRCUITS_NAMED else []))


def _registry_rows(status: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The run-time destinations' lines: how many, under which keys, which do not open."""
    registry = status.get("registry") or {}
    count = registry.get("destinations", status.get("registry_destinations", 0))
    rows = []
    if count:
        keys = ", ".join(f"{k} ({n})" for k, n in registry.get("by_key_id", {}).items())
        text = f"{count} run-time destination(s); routing keys under key id {keys}"
        if registry.get("ring") is None:
            text += " (MONITAO_PD_SECRET_KEYS not set here: not checked)"
        elif registry.get("missing"):
            text += "; NOT in this MONITAO_PD_SECRET_KEYS: " + ", ".join(
                f"{k} ({n})" for k, n in registry["missing"].items())
        rows.append(("registry", text))
    undecryptable = status.get("undecryptable") or {}
    if undecryptable:
        named = ", ".join(f"{name} ({n} event(s))"
                          for name, n in list(undecryptable.items())[:CIRCUITS_NAMED])
        more = len(undecryptable) - CIRCUITS_NAMED
        rows.append(("undecryptable", named + (f", {more} more" if more > 0 else "")
                     + ": a worker's MONITAO_PD_SECRET_KEYS cannot open their routing key; "
                       "fix it, then `monitao-pd replay --reason undecryptable`"))
    return rows
