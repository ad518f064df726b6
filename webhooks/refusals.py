"""Refused requests: each one counted in the metric, the log told at a bounded rate.

Anyone who can reach the receiver can send it requests it refuses (unsigned, too large, not
JSON, too slow, not HTTP); a line per refusal let 3,500 requests write 3,500 lines. Here the
first refusal of an interval is logged as it comes, the others in that interval are only
tallied, and when the interval ends one line says how many more there were, by reason and
by client address. So a flood costs at most two lines an interval, and the metric
(`monitao_pd_webhooks_total{result=...}`) still counts every one.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable

from config import defaults
from worker.metrics import record_webhook

# Client addresses named in a summary line; the rest are counted.
NAMED_CLIENTS = 3
# Distinct client addresses tallied in one interval (a flood from many addresses must not
# grow memory without bound); refusals from further ones are summed up without an address.
TRACKED_CLIENTS = 1000


class Refusals:
    """Counts and logs refused requests; `refused()` may be called from any thread."""

    def __init__(self, logger: logging.Logger,
                 interval: float = defaults.WEBHOOK_REFUSAL_LOG_SECONDS, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger
        self.interval = interval
        self.clock = clock
        self._lock = threading.Lock()
        self._interval_end: float | None = None
        self._reasons: Counter[str] = Counter()
        self._clients: Counter[str] = Counter()
        self._flush_scheduled = False

    def refused(self, client: str, result: str, reason: str,
                event_type: str = "other") -> None:
        """Count one refused request under `result` and log it, or tally it for the
        interval's summary line."""
        record_webhook(event_type, result)
        now = self.clock()
        schedule = False
        with self._lock:
            summary = self._close(now) if self._interval_end is not None and \
                now >= self._interval_end else None
            first = self._interval_end is None
            if first:
                self._interval_end = now + self.interval
            else:
                self._reasons[reason] += 1
                if client in self._clients or len(self._clients) < TRACKED_CLIENTS:
                    self._clients[client] += 1
                schedule, self._flush_scheduled = not self._flush_scheduled, True
        if summary:
            self.logger.warning(summary)
        if first:
            self.logger.warning("webhooks: refused a request from %s: %s (more within %.0f s "
                                "are summed up in one line)", client, reason, self.interval)
        if schedule:
            self._schedule_flush(now)

    def flush(self) -> None:
        """Log the summary of the interval so far (if any refusal was held back) and start
        a new one; called when the interval ends and when the receiver stops."""
        with self._lock:
            summary = self._close(self.clock())
        if summary:
            self.logger.warning(summary)

    def _close(self, now: float) -> str | None:
        """End the current interval; its summary line, if anything was held back."""
        held, started = sum(self._reasons.values()), self._interval_end
        reasons, clients = self._reasons, self._clients
        self._interval_end, self._reasons, self._clients = None, Counter(), Counter()
        self._flush_scheduled = False
        if not held or started is None:
            return None
        elapsed = min(self.interval, max(0.0, now - (started - self.interval)))
        by_reason = ", ".join(f"{count:,} {reason}" for reason, count in reasons.most_common())
        named = [f"{client} ({count:,})" for client, count in
                 clients.most_common(NAMED_CLIENTS)]
        others = len(clients) - len(named)
        if len(clients) >= TRACKED_CLIENTS:
            named.append(f"more than {others:,} other addresses")
        elif others:
            named.append(f"{others:,} other address{'es' if others > 1 else ''}")
        return (f"webhooks: refused {held:,} more request{'s' if held > 1 else ''} in "
                f"{elapsed:.0f} s: {by_reason}; from {', '.join(named)}")

    def _schedule_flush(self, now: float) -> None:
        """Have the summary logged when the interval ends, even if no refusal follows
        (from the event loop the receiver runs in; elsewhere the next call or `flush()`)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        with self._lock:
            end = self._interval_end
        if end is not None:
            loop.call_later(max(0.0, end - now), self._end_interval, end)

    def _end_interval(self, end: float) -> None:
        with self._lock:
            summary = self._close(max(end, self.clock())) if self._interval_end == end \
                else None
        if summary:
            self.logger.warning(summary)
