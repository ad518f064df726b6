"""Maintenance windows: when a destination (or some of its monitors) must not be paged.

A window is one-off (`start`, `end`, ISO 8601) or weekly (`weekly = "sun 02:00-04:00"`,
UTC; an end at or before the start ends the next day). Its `mode` says what happens to an
event that falls in it: `suppress` ends it as `suppressed` (and the follow-ups of a
suppressed trigger are suppressed too), `hold` keeps it and delivers it when the window
ends. Windows come from the destinations file and, at run time, from
`monitao-pd maintenance add`. A window of the whole destination (no `monitors`) whose
destination has PagerDuty REST credentials is also created on its PagerDuty service
(worker/maintenance_sync.py), unless `sync = false`.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
WEEKLY = re.compile(r"^(mon|tue|wed|thu|fri|sat|sun) ([01]\d|2[0-3]):([0-5]\d)-"
                    r"([01]\d|2[0-3]):([0-5]\d)$")


class MaintenanceWindow(BaseModel):
    """One maintenance window of one destination."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(default_factory=lambda: uuid.uuid4().hex[:8], pattern=r"^[A-Za-z0-9_-]+$")
    destination: str = ""
    monitors: tuple[str, ...] = ()
    start: datetime | None = None
    end: datetime | None = None
    weekly: str | None = None
    mode: Literal["suppress", "hold"] = "suppress"
    reason: str = Field("", max_length=500)
    origin: Literal["config", "runtime"] = "runtime"
    # whether the window is also created on the destination's PagerDuty service
    sync: bool = True

    @field_validator("start", "end")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value

    @field_validator("weekly")
    @classmethod
    def _weekly_form(cls, value: str | None) -> str | None:
        if value is not None and not WEEKLY.match(value.strip().lower()):
            raise ValueError('must look like "sun 02:00-04:00" (a day, then HH:MM-HH:MM, UTC)')
        return value.strip().lower() if value else value

    @field_validator("monitors", mode="before")
    @classmethod
    def _monitor_ids(cls, value: object) -> object:
        if isinstance(value, list | tuple):
            return tuple(str(v) for v in value)
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> MaintenanceWindow:
        one_off = self.start is not None or self.end is not None
        if one_off == (self.weekly is not None):
            raise ValueError("give either start and end, or weekly")
        if one_off and (self.start is None or self.end is None or self.end <= self.start):
            raise ValueError("a one-off window needs a start before its end")
        return self

    def applies_to(self, destination: str, monitor_id: str) -> bool:
        """Whether the window covers this destination and monitor."""
        return self.destination == destination and (
            not self.monitors or monitor_id in self.monitors
        )

    def active_until(self, now: datetime) -> datetime | None:
        """When the window ends if it is active at `now`, else None."""
        if self.start is not None and self.end is not None:
            return self.end if self.start <= now < self.end else None
        start, end = self._weekly_span(now)
        return end if start <= now < end else None

    def occurrence(self, now: datetime) -> tuple[datetime, datetime] | None:
        """The window's span that matters at `now`: a one-off window's own until it ends
        (then None); a weekly window's current occurrence while active, else its next."""
        if self.start is not None and self.end is not None:
            return (self.start, self.end) if now < self.end else None
        start, end = self._weekly_span(now)
        if now >= end:
            start, end = start + timedelta(days=7), end + timedelta(days=7)
        return start, end

    def _weekly_span(self, now: datetime) -> tuple[datetime, datetime]:
        """The weekly occurrence that began on the window's latest day on or before today."""
        assert self.weekly is not None
        match = WEEKLY.match(self.weekly)
        assert match is not None
        day, sh, sm, eh, em = match.groups()
        # the latest occurrence of the window's day on or before today; one that crosses
        # midnight is found from the day after, since it began on that latest day
        midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
        base = midnight - timedelta(days=(midnight.weekday() - DAYS.index(day)) % 7)
        start = base + timedelta(hours=int(sh), minutes=int(sm))
        end = base + timedelta(hours=int(eh), minutes=int(em))
        if end <= start:
            end += timedelta(days=1)
        return start, end

    def describe(self) -> str:
        """The window's time in a few words."""
        if self.weekly:
            return f"weekly {self.weekly} UTC"
        assert self.start is not None and self.end is not None
        return f"{self.start.isoformat()} to {self.end.isoformat()}"


def active_window(
    windows: Iterable[MaintenanceWindow], destination: str, monitor_id: str, now: datetime
) -> tuple[MaintenanceWindow, datetime] | None:
    """The window that governs an event now (suppress wins over hold), and when it ends."""
    found: list[tuple[MaintenanceWindow, datetime]] = []
    for window in windows:
        if window.applies_to(destination, monitor_id):
            until = window.active_until(now)
            if until is not None:
                found.append((window, until))
    if not found:
        return None
    found.sort(key=lambda pair: (pair[0].mode != "suppress", -pair[1].timestamp()))
    return found[0]
