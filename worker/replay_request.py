"""A replay as an operator asks for it, from any door: which dead letters, then the
`Replayer`'s decisions, then what they add up to.

The CLI (`monitao-pd replay`) and the HTTP API (`POST /v1/dead-letters/replay`) both call
`replay_dead_letters` and only render its `ReplayReport`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis

from config.keyspace import Keyspace
from config.settings import Settings
from worker import dead_letters
from worker.replay import Decision, Replayer, select

# Skips that are the replay working as intended, not a refusal.
EXPECTED_SKIPS = ("already_pending",)


@dataclass
class ReplayReport:
    """The decisions of one replay, in the order the events were selected."""

    decisions: list[Decision]
    dry_run: bool

    @property
    def tally(self) -> dict[str, int]:
        """How many decisions ended in each outcome, by outcome name."""
        return dict(sorted(Counter(d.outcome for d in self.decisions).items()))

    @property
    def refused(self) -> list[Decision]:
        """The events skipped for a reason other than a replay already on its way."""
        return [d for d in self.decisions
                if d.outcome == "skipped" and d.reason not in EXPECTED_SKIPS]

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data."""
        return {"dry_run": self.dry_run, "decisions": [d.as_dict() for d in self.decisions],
                "tally": self.tally, "refused": len(self.refused)}


def replay_dead_letters(
    client: redis.Redis, settings: Settings, *, event_ids: Sequence[str] = (),
    filters: dead_letters.Filters | None = None, everything: bool = False,
    dry_run: bool = False, force: bool = False, operator: str | None = None,
) -> ReplayReport:
    """Replay the named dead letters (full ids or unique prefixes), or those matching
    `filters` (or `everything`).

    Raises `InvalidInputError` for a selection naming nothing or both ids and filters,
    `NotFoundError`/`AmbiguousIdError` for ids naming no or several events (nothing is
    replayed then).
    """
    filters = filters or dead_letters.Filters()
    dead_letters.check_selection(event_ids, filters, everything)
    keys = Keyspace(settings.key_prefix)
    if event_ids:
        ids = dead_letters.resolve_ids(client, keys, event_ids)
    else:
        ids = select(client, keys, filters)
    replayer = Replayer(client, settings, force=force, dry_run=dry_run, operator=operator)
    return ReplayReport(replayer.replay(ids), dry_run)
