"""`monitao-pd dlq list/counts/show/purge`: filters, the masked body, every attempt,
PagerDuty's errors, an explicit confirmation, and clear errors (exit 2)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from config.embedded_redis import free_port
from config.keyspace import Keyspace
from tests.cli.operate.support import (
    STAGING_KEY,
    event,
    run,
    run_json,
)
from tests.conftest import Fleet
from worker import timeline
from worker.poison import record_malformed


@pytest.fixture
def letters(cli_env: Path, fleet: Fleet) -> dict[str, str]:
    """Three dead letters: two rejected (400) on prod, one http_404 on staging."""
    fleet.sim.set_faults(force_status=400)
    rejected = []
    for sent in (event(1, 11, "trigger", summary="[DOWN] a",
                       incident_url="https://monitao.example/i/11"),
                 event(1, 12, "trigger", summary="[DOWN] b")):
        rejected += fleet.producer.send_many([sent])  # one after the other: a known order
        assert fleet.wait_final(rejected[-1:]) == {rejected[-1]: "dead_lettered"}
    fleet.sim.set_faults(force_status=404)
    [missing] = fleet.producer.send_many([event(2, 21, "trigger", destination="staging")])
    assert fleet.wait_final([missing]) == {missing: "dead_lettered"}
    fleet.sim.set_faults(force_status=None)
    return {"a": rejected[0], "b": rejected[1], "staging": missing}


def ids_of(entries: list[dict]) -> list[str]:
    return [e["event_id"] for e in entries]


def test_list_filters_and_counts_by_reason(
    letters: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    everything = run_json(capsys, "dlq", "list")
    assert ids_of(everything) == [letters["a"], letters["b"], letters["staging"]]
    assert [e["reason"] for e in everything] == ["rejected", "rejected", "http_404"]
    assert all(e["state"] == "dead_lettered" for e in everything)

    assert ids_of(run_json(capsys, "dlq", "list", "--destination", "staging")) == [
        letters["staging"]]
    assert ids_of(run_json(capsys, "dlq", "list", "--reason", "rejected")) == [
        letters["a"], letters["b"]]
    assert ids_of(run_json(capsys, "dlq", "list", "--reason", "rejected",
                           "--destination", "staging")) == []
    assert len(run_json(capsys, "dlq", "list", "--since", "1h")) == 3
    assert run_json(capsys, "dlq", "list", "--until", "1h") == []
    assert run_json(capsys, "dlq", "list", "--since", "2999-01-01T00:00:00Z") == []
    # the boundary is the dead-lettered time, both ends included
    third = everything[2]["dead_lettered_at"]
    assert ids_of(run_json(capsys, "dlq", "list", "--since", third)) == [letters["staging"]]
    assert letters["staging"] not in ids_of(
        run_json(capsys, "dlq", "list", "--until", everything[1]["dead_lettered_at"]))

    assert run_json(capsys, "dlq", "counts") == {"rejected": 2, "http_404": 1}
    assert run_json(capsys, "dlq", "counts", "--destination", "prod") == {"rejected": 2}

    code, out, _ = run(capsys, "dlq", "list")
    assert code == 0
    assert "3 dead letter(s): rejected 2, http_404 1" in out
    code, out, err = run(capsys, "dlq", "list", "--since", "yesterday-ish")
    assert code == 2 and "is not a time" in err


def test_show_prints_event_masked_body_attempts_and_errors(
    letters: dict[str, str], routing_key: str, capsys: pytest.CaptureFixture[str]
) -> None:
    shown = run_json(capsys, "dlq", "show", letters["a"])
    assert shown["event_id"] == letters["a"] and shown["reason"] == "rejected"
    assert shown["errors"] == ["status 400 forced by the simulator"]
    assert shown["event"]["summary"] == "[DOWN] a"
    body = shown["body"]
    assert body["routing_key"] == "********"
    assert body["dedup_key"] == "monitao-monitor-1-incident-11"
    assert body["payload"]["summary"] == "[DOWN] a" and body["event_action"] == "trigger"
    assert body["links"] == [{"href": "https://monitao.example/i/11", "text": "MoniTao incident"}]
    [attempt] = shown["attempt_history"]
    assert attempt["http_status"] == 400 and attempt["attempt"] == 1
    assert attempt["task_id"] and attempt["worker"]
    assert [e["stage"] for e in shown["timeline"]] == ["enqueued", "attempt", "dead_lettered"]

    code, out, _ = run(capsys, "dlq", "show", letters["staging"])
    assert code == 0
    assert "reason: http_404" in out and '"routing_key": "********"' in out
    assert "try 1: HTTP 404" in out
    for text in (out, json.dumps(shown)):
        assert routing_key not in text and STAGING_KEY not in text
        # not even a fragment of the key
        assert routing_key[:8] not in text and routing_key[-8:] not in text


def test_show_and_purge_refuse_unknown_ids_with_exit_2(
    letters: dict[str, str], fleet: Fleet, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "dlq", "show", "no-such-event")
    assert code == 2 and err == "error: no event 'no-such-event'\n"
    [delivered] = fleet.producer.send_many([event(3, 31, "trigger")])
    fleet.wait_final([delivered])
    code, _, err = run(capsys, "dlq", "show", delivered)
    assert code == 2 and "is not a dead letter (state delivered)" in err
    code, _, err = run(capsys, "dlq", "purge", "no-such-event", "--yes")
    assert code == 2 and err == "error: no event 'no-such-event'\n"
    code, _, err = run(capsys, "dlq", "purge", delivered, "--yes")
    assert code == 2 and f"{delivered!r} is not a dead letter (state delivered)" in err


def test_purge_needs_a_selection_and_yes_then_retires_only_the_matches(
    letters: dict[str, str], fleet: Fleet, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "dlq", "purge", "--yes")
    assert code == 2 and "name event ids, give filters, or --all" in err
    code, out, err = run(capsys, "dlq", "purge", "--reason", "rejected")
    assert code == 2 and "2 dead letter(s) match; nothing purged: add --yes" in err
    assert letters["a"][:12] in out and letters["staging"][:12] not in out  # the matches
    assert len(run_json(capsys, "dlq", "list")) == 3

    assert run_json(capsys, "dlq", "purge", "--reason", "rejected", "--yes") == {
        letters["a"]: "purged", letters["b"]: "purged"}
    assert ids_of(run_json(capsys, "dlq", "list")) == [letters["staging"]]
    assert fleet.state(letters["a"]) == "purged"
    assert fleet.redis.pttl(fleet.keys.event(letters["a"])) > 0  # kept for the retention only
    stages = [e["stage"] for e in timeline.read(fleet.redis, fleet.keys, "11")]
    assert stages == ["enqueued", "attempt", "dead_lettered", "purged"]
    code, _, err = run(capsys, "replay", letters["a"])
    assert code == 1  # a purged event cannot come back

    code, out, _ = run(capsys, "dlq", "purge", letters["staging"], "--yes")
    assert code == 0 and out == "purged 1 dead letter(s)\n"
    assert run_json(capsys, "dlq", "list") == []


def test_ids_may_be_shortened_to_a_unique_prefix_of_8_characters(
    letters: dict[str, str], fleet: Fleet, capsys: pytest.CaptureFixture[str]
) -> None:
    # The tables show 12 characters: what they show is enough to act on.
    code, out, _ = run(capsys, "dlq", "list")
    shown = letters["a"][:12]
    assert code == 0 and shown in out and letters["a"] not in out
    assert run_json(capsys, "dlq", "show", shown)["event_id"] == letters["a"]
    assert run_json(capsys, "dlq", "show", letters["b"][:8])["event_id"] == letters["b"]
    # shorter than 8 characters is never taken as a prefix
    code, _, err = run(capsys, "dlq", "show", letters["a"][:7])
    assert code == 2 and err == f"error: no event {letters['a'][:7]!r}\n"
    [decision] = run_json(capsys, "replay", letters["staging"][:10], "--dry-run")
    assert decision["event_id"] == letters["staging"] and decision["outcome"] == "would_queue"
    assert run_json(capsys, "dlq", "purge", letters["b"][:9], "--yes") == {
        letters["b"]: "purged"}


def test_an_ambiguous_prefix_is_refused_naming_the_candidates(
    cli_env: Path, redis_conn, prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = Keyspace(prefix)
    twins = ["abcdef0123456789aaaa", "abcdef0123456789bbbb"]
    for event_id in twins:
        redis_conn.hset(keys.event(event_id), mapping={
            "state": "dead_lettered", "reason": "rejected", "slot": "prod/k",
            "incident_id": "7", "action": "trigger", "finished_at": 1})
        redis_conn.zadd(keys.dead_letters, {event_id: 1})
    for command in (("dlq", "show"), ("replay",), ("dlq", "purge")):
        code, out, err = run(capsys, *command, "abcdef0123")
        assert code == 2 and out == ""
        assert err == ("error: ambiguous id: 'abcdef0123' begins the ids of 2 dead letters "
                       f"({twins[0]}, {twins[1]}): give more characters\n")
    assert run_json(capsys, "dlq", "show", "abcdef0123456789b")["event_id"] == twins[1]


def test_purging_nothing_is_not_an_error_with_or_without_yes(
    cli_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for extra in ((), ("--yes",)):
        code, out, err = run(capsys, "dlq", "purge", "--all", *extra)
        assert (code, out, err) == (0, "no dead letters match; nothing to purge\n", "")
    assert run_json(capsys, "dlq", "purge", "--reason", "rejected") == {}


COMMANDS = [
    ("timeline", "1"), ("dlq", "list"), ("dlq", "counts"), ("dlq", "show", "x"),
    ("dlq", "purge", "--all", "--yes"), ("replay", "--all"), ("replay", "x", "--dry-run"),
    ("status",), ("test-destination", "prod"),
]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_unreachable_redis_is_one_line_and_exit_2(
    command: tuple[str, ...], cli_env: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("MONITAO_PD_REDIS_URL", f"redis://:hunter2@127.0.0.1:{free_port()}/0")
    code, out, err = run(capsys, *command)
    assert code == 2
    assert err.startswith("error: cannot reach Redis at redis://:***@127.0.0.1:")
    assert err.count("\n") == 1 and "hunter2" not in err and out == ""


def test_malformed_dead_letters_are_shown_raw_with_key_shaped_tokens_masked(
    cli_env: Path, redis_conn, prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    garbage = b'{"args": ["Ab3dEfGh1jKlMn0pQrStUvWxYz123456"], \xff\xfe not json'
    context = SimpleNamespace(redis=redis_conn, keys=Keyspace(prefix))  # a worker's, in short
    event_id = record_malformed(context, garbage, "undecodable message", "DecodeError: bad")
    [letter] = run_json(capsys, "dlq", "list")
    assert letter["event_id"] == event_id
    assert letter["reason"] == "malformed" and letter["destination"] == ""

    shown = run_json(capsys, "dlq", "show", event_id)
    assert shown["origin"] == "undecodable message" and shown["body"] is None
    assert shown["raw"] == '{"args": ["********"], \\xff\\xfe not json'
    code, out, _ = run(capsys, "dlq", "show", event_id)
    assert code == 0 and "Ab3dEfGh1jKlMn0pQrStUvWxYz123456" not in out
    assert "origin       undecodable message" in out and "\\xff\\xfe not json" in out

    [decision] = run_json(capsys, "replay", event_id, expect=1)
    assert (decision["outcome"], decision["reason"]) == ("skipped", "malformed")
