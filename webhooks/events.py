"""What a PagerDuty webhook v3 body means for MoniTao: pure functions, no I/O.

`parse(raw)` reads one body into a `WebhookEvent` or raises `NotAnEvent` with the reason;
`incident_candidates(dedup_key)` turns the fleet's dedup_key
`monitao-monitor-{monitor_id}-incident-{incident_id}` back into (monitor, incident) pairs;
`timeline_fields` and `state_change` shape what is recorded and sent on.

JSON may spell lone UTF-16 surrogates (`"\\ud800"`), which are no text: no Redis key or
value can hold them. Every string read from a body has them replaced by U+FFFD, so such a
body is recorded like any other (a key spelt that way matches no incident).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from worker.timeline import entry

# The incident state changes synced back to MoniTao (the list).
SYNCED_TYPES = (
    "incident.acknowledged", "incident.unacknowledged", "incident.resolved",
    "incident.reopened", "incident.reassigned", "incident.escalated", "incident.annotated",
)
# Types PagerDuty sends that are valid but not synced (counted as `ignored`); any other
# type is counted under "other" so a stranger's body cannot grow the metric's label set.
KNOWN_TYPES = (*SYNCED_TYPES, "incident.triggered", "incident.priority_updated",
               "incident.responder.added", "incident.responder.replied",
               "incident.status_update_published", "incident.delegated",
               "incident.workflow.started", "incident.workflow.completed",
               "service.created", "service.updated", "service.deleted", "pagey.ping")
DEDUP_PREFIX = "monitao-monitor-"
DEDUP_SEPARATOR = "-incident-"
# What a timeline entry of a PagerDuty state change says in its `destination` column when
# the incident's timeline does not name the destination that sent the key.
UNKNOWN_DESTINATION = ""
LONE_SURROGATE = re.compile("[\ud800-\udfff]")


class NotAnEvent(ValueError):
    """A body that is JSON but not a webhook v3 event; the message is the reason."""


@dataclass(frozen=True)
class WebhookEvent:
    """The fields of one webhook v3 event that MoniTao records."""

    pd_event_id: str
    event_type: str
    occurred_at: str
    agent: str
    pd_incident: str
    pd_status: str
    incident_key: str | None
    # The PagerDuty service of the incident (`data.service.id`): whose REST credentials may
    # look the incident up when the body carries no incident_key.
    pd_service: str = ""

    @property
    def synced(self) -> bool:
        """Whether this type of event is recorded in the incident's timeline."""
        return self.event_type in SYNCED_TYPES

    @property
    def stage(self) -> str:
        """The timeline stage: `incident.acknowledged` -> `pagerduty_acknowledged`."""
        return "pagerduty_" + self.event_type.removeprefix("incident.").replace(".", "_")


def metric_type(event_type: object) -> str:
    """The `event_type` label for the metric: a known type, else `other`."""
    return event_type if isinstance(event_type, str) and event_type in KNOWN_TYPES else "other"


def as_text(value: Any) -> str:
    """`value` if it is a string (lone surrogates replaced by U+FFFD), else ""."""
    return LONE_SURROGATE.sub("\ufffd", value) if isinstance(value, str) else ""


def _agent(agent: Any) -> str:
    """Who did it, as PagerDuty gives it: the reference's summary, name, email or id."""
    if isinstance(agent, str):
        return as_text(agent)
    if isinstance(agent, dict):
        for name in ("summary", "name", "email", "id"):
            if isinstance(agent.get(name), str) and agent[name]:
                return as_text(agent[name])
    return ""


def _incident_key(data: dict[str, Any]) -> str | None:
    """The dedup_key the fleet sent, as the event's data carries it, if it does."""
    incident = data.get("incident") if isinstance(data.get("incident"), dict) else {}
    for value in (data.get("incident_key"), data.get("alert_key"), data.get("dedup_key"),
                  incident.get("incident_key")):
        if isinstance(value, str) and value:
            return as_text(value)
    return None


def _service_id(data: dict[str, Any], incident: dict[str, Any] | None) -> str:
    """`data.service.id` (a note's: `data.incident.service.id`, when it has one)."""
    for holder in (data, incident or {}):
        service = holder.get("service")
        if isinstance(service, dict) and isinstance(service.get("id"), str):
            return as_text(service["id"])
    return ""


def parse(raw: bytes | str) -> WebhookEvent:
    """Read a webhook v3 body; raise `NotAnEvent` when it is not JSON or not an event."""
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        raise NotAnEvent("not JSON") from None
    event = body.get("event") if isinstance(body, dict) else None
    if not isinstance(event, dict):
        raise NotAnEvent("no `event` object")
    event_id, event_type = event.get("id"), event.get("event_type")
    if not isinstance(event_id, str) or not event_id:
        raise NotAnEvent("`event.id` is not a string")
    if not isinstance(event_type, str) or not event_type:
        raise NotAnEvent("`event.event_type` is not a string")
    data = event.get("data")
    if not isinstance(data, dict):
        data = {}
    incident = data.get("incident") if isinstance(data.get("incident"), dict) else None
    # An incident's own data has its id; a note (incident.annotated) references its incident.
    pd_incident = as_text(incident.get("id")) if incident else as_text(data.get("id"))
    return WebhookEvent(
        pd_event_id=as_text(event_id),
        event_type=as_text(event_type),
        occurred_at=as_text(event.get("occurred_at")),
        agent=_agent(event.get("agent")),
        pd_incident=pd_incident,
        pd_status=as_text(data.get("status")),
        incident_key=_incident_key(data),
        pd_service=_service_id(data, incident),
    )


def incident_candidates(dedup_key: str) -> list[tuple[str, str]]:
    """Every (monitor_id, incident_id) that `dedup_key` can be read as, first split first.

    Ids may themselves contain `-incident-`, so a key can be read several ways; the caller
    takes the first whose incident has a timeline.
    """
    if not dedup_key.startswith(DEDUP_PREFIX):
        return []
    rest = dedup_key.removeprefix(DEDUP_PREFIX)
    found = []
    start = 0
    while (at := rest.find(DEDUP_SEPARATOR, start)) != -1:
        monitor_id, incident_id = rest[:at], rest[at + len(DEDUP_SEPARATOR):]
        if monitor_id and incident_id:
            found.append((monitor_id, incident_id))
        start = at + 1
    return found


def timeline_fields(event: WebhookEvent, destination: str, dedup_key: str) -> list[str]:
    """The timeline entry of a matched state change (`worker.timeline.entry` shape)."""
    return entry(
        event.stage, event.pd_event_id, event.event_type.removeprefix("incident."),
        destination, dedup_key,
        pd_event_id=event.pd_event_id, event_type=event.event_type,
        occurred_at=event.occurred_at, agent=event.agent, pd_incident=event.pd_incident,
        pd_status=event.pd_status,
    )


def state_change(event: WebhookEvent, monitor_id: str, incident_id: str,
                 dedup_key: str) -> dict[str, str]:
    """The change MoniTao's callback receives."""
    return {
        "event_type": event.event_type, "occurred_at": event.occurred_at,
        "agent": event.agent, "pd_incident": event.pd_incident, "pd_status": event.pd_status,
        "incident_id": incident_id, "monitor_id": monitor_id, "dedup_key": dedup_key,
        "pd_event_id": event.pd_event_id,
    }
