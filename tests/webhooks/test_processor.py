"""The processor against real Redis: an entry that cannot be processed never holds up the
inbox; after a bounded number of attempts it is set aside in `webhook-unmatched`."""

from __future__ import annotations

import json

import redis

from config.keyspace import Keyspace
from config.settings import Settings
from tests.conftest import wait_until
from tests.webhooks.conftest import (
    SECRET_A,
    counted,
    entries,
    event_body,
    post,
)
from webhooks import WebhookService, signature_header
from webhooks.processor import GROUP, Processor
from worker import timeline

# A signed body whose incident_key holds a lone surrogate (JSON may spell one; no Redis key
# can hold it): it used to raise in matching and stay pending for ever.
SURROGATE_KEY_BODY = (
    b'{"event": {"id": "01SURROGATE", "event_type": "incident.acknowledged", '
    b'"resource_type": "incident", "occurred_at": "2026-11-27T10:15:00Z", '
    b'"agent": {"summary": "Jane \\udc80Responder"}, "data": {"id": "PINC1", '
    b'"status": "acknowledged", "incident_key": "monitao-monitor-123-incident-\\ud800"}}}')


def queue(redis_conn: redis.Redis, keys: Keyspace, body: bytes, webhook_id: str) -> str:
    """Put a body on the inbox as the receiver does (after its signature was verified)."""
    return redis_conn.xadd(keys.webhook_inbox, {"body": body.decode(), "webhook_id": webhook_id})


def unmatched(redis_conn: redis.Redis, keys: Keyspace) -> list[dict[str, str]]:
    return [fields for _, fields in redis_conn.xrange(keys.webhook_unmatched)]


def test_a_lone_surrogate_in_the_incident_key_is_unmatched_and_holds_up_nothing(
        receiver: WebhookService, redis_conn: redis.Redis, keys: Keyspace, incident: str,
) -> None:
    before = counted("incident.acknowledged", "unmatched")
    answer = post(receiver, SURROGATE_KEY_BODY,
                  signature_header([SECRET_A], SURROGATE_KEY_BODY), webhook_id="wh-bad")
    assert answer.status_code == 202
    valid = event_body()
    assert post(receiver, valid, signature_header([SECRET_A], valid),
                webhook_id="wh-good").status_code == 202
    [kept] = wait_until(lambda: unmatched(redis_conn, keys), 10,
                        message="the surrogate webhook in webhook-unmatched")
    assert kept["result"] == "unmatched" and kept["webhook_id"] == "wh-bad"
    assert kept["dedup_key"] == "monitao-monitor-123-incident-\ufffd"
    assert kept["agent"] == "Jane \ufffdResponder"
    [recorded] = wait_until(lambda: entries(redis_conn, keys), 10, message="the valid one")
    assert recorded["pd_event_id"] == "01EVENT"
    wait_until(lambda: redis_conn.xlen(keys.webhook_inbox) == 0, 5, message="inbox emptied")
    assert redis_conn.xpending(keys.webhook_inbox, GROUP)["pending"] == 0
    wait_until(lambda: counted("incident.acknowledged", "unmatched") == before + 1, 10,
               message="the surrogate webhook counted unmatched")


def test_a_lone_surrogate_from_the_agent_is_recorded_readably(
        webhook_settings: Settings, redis_conn: redis.Redis, keys: Keyspace, incident: str,
) -> None:
    body = json.loads(SURROGATE_KEY_BODY)
    body["event"]["data"]["incident_key"] = "monitao-monitor-123-incident-456"
    queue(redis_conn, keys, json.dumps(body).encode(), "w")
    processor = Processor(redis_conn, webhook_settings, block_seconds=0.05)
    processor.ensure_group()  # a new group reads the inbox from its start
    assert processor.step() == 1
    [entry] = entries(redis_conn, keys)
    assert entry["agent"] == "Jane \ufffdResponder"
    assert all(stage["stage"] for stage in timeline.read(redis_conn, keys, incident))


def test_an_entry_that_keeps_failing_is_set_aside_and_holds_up_nothing(
        webhook_settings: Settings, redis_conn: redis.Redis, keys: Keyspace, incident: str,
) -> None:
    """MoniTao's callback queue refuses one incident's change every time: that entry is
    retried on each take-over, then set aside with the reason; the next entry, read in
    the same batch, is recorded at once."""
    redis_conn.xadd(keys.timeline("poison"), {"stage": "delivered", "event_id": "e",
                                              "dedup_key": "monitao-monitor-1-incident-poison"})
    calls: list[str] = []

    def enqueue_change(client, settings, incident_id, dedup_key, change) -> None:
        calls.append(incident_id)
        if incident_id == "poison":
            raise RuntimeError("the callback queue refused it")

    processor = Processor(redis_conn, webhook_settings, consumer="p1", claim_idle_seconds=0.05,
                          block_seconds=0.05, max_attempts=3, enqueue_change=enqueue_change)
    processor.ensure_group()
    before = counted("incident.acknowledged", "failed")
    queue(redis_conn, keys, event_body("01POISON", dedup_key="monitao-monitor-1-incident-poison"),
          "wh-poison")
    queue(redis_conn, keys, event_body("02GOOD"), "wh-good")
    assert processor.step() == 2  # one batch: the poison first, then the valid one
    assert [e["pd_event_id"] for e in entries(redis_conn, keys)] == ["02GOOD"]
    assert redis_conn.xpending(keys.webhook_inbox, GROUP)["pending"] == 1

    def set_aside() -> list[dict[str, str]]:
        processor.step()
        return unmatched(redis_conn, keys)

    [kept] = wait_until(set_aside, 10, message="the failing entry set aside")
    assert calls.count("poison") == 3
    assert kept["result"] == "failed" and kept["webhook_id"] == "wh-poison"
    assert kept["reason"] == (
        "processing failed 3 times: RuntimeError: the callback queue refused it")
    assert json.loads(kept["body"])["event"]["id"] == "01POISON"
    assert redis_conn.xpending(keys.webhook_inbox, GROUP)["pending"] == 0
    assert redis_conn.xlen(keys.webhook_inbox) == 0
    assert counted("incident.acknowledged", "failed") == before + 1
    assert not [e for e in timeline.read(redis_conn, keys, "poison")
                if e["stage"].startswith("pagerduty_")]


def test_an_entry_whose_processor_keeps_stopping_is_set_aside_unprocessed(
        webhook_settings: Settings, redis_conn: redis.Redis, keys: Keyspace, incident: str,
) -> None:
    """Processors that died holding it (read, never acknowledged, five times): the heir
    sets it aside instead of running it a sixth time."""
    Processor(redis_conn, webhook_settings).ensure_group()
    entry_id = queue(redis_conn, keys, event_body(), "wh-deadly")
    assert redis_conn.xreadgroup(GROUP, "dead-1", {keys.webhook_inbox: ">"}, count=1)
    for n in range(2, 6):
        redis_conn.xclaim(keys.webhook_inbox, GROUP, f"dead-{n}", 0, [entry_id])
    heir = Processor(redis_conn, webhook_settings, consumer="heir", claim_idle_seconds=0,
                     block_seconds=0.05, max_attempts=5)
    assert heir.step() == 1
    [kept] = unmatched(redis_conn, keys)
    assert kept["result"] == "failed" and kept["webhook_id"] == "wh-deadly"
    assert kept["reason"].startswith("delivered to a processor 5 times and neither")
    assert entries(redis_conn, keys) == []
    assert redis_conn.xpending(keys.webhook_inbox, GROUP)["pending"] == 0


def test_an_entry_is_retried_while_attempts_remain(
        webhook_settings: Settings, redis_conn: redis.Redis, keys: Keyspace, incident: str,
) -> None:
    """A failure that goes away (the callback queue refused once) is recorded on the
    retry: nothing is set aside."""
    failures = [RuntimeError("once")]

    def enqueue_change(*args: object) -> None:
        if failures:
            raise failures.pop()

    processor = Processor(redis_conn, webhook_settings, claim_idle_seconds=0.05,
                          block_seconds=0.05, max_attempts=3, enqueue_change=enqueue_change)
    processor.ensure_group()
    queue(redis_conn, keys, event_body(), "wh-1")
    processor.step()
    assert entries(redis_conn, keys) == []
    wait_until(lambda: processor.step() or entries(redis_conn, keys), 5,
               message="the retry to record it")
    assert [e["pd_event_id"] for e in entries(redis_conn, keys)] == ["01EVENT"]
    assert unmatched(redis_conn, keys) == []
