"""`monitao-pd destinations ...` and `secrets generate-key` against the real Redis: each
command's success, and bad input for each (one line per problem, exit 2, nothing stored);
the routing key never in any output or Redis value."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from cli.main import main
from config.keyspace import Keyspace, slot_of
from config.secrets import fingerprint, generate_key
from tests.conftest import random_routing_key

REPO = Path(__file__).resolve().parents[2]
URL = "http://127.0.0.1:9/v2/enqueue"


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, redis_url: str, prefix: str,
        routing_key: str) -> dict[str, str]:
    config = tmp_path / "destinations.toml"
    config.write_text(f'[destinations.prod]\nrouting_key_env = "PD_KEY_PROD"\n'
                      f'events_url = "{URL}"\n', encoding="utf-8")
    values = {"MONITAO_PD_REDIS_URL": redis_url, "MONITAO_PD_KEY_PREFIX": prefix,
              "MONITAO_PD_CONFIG": str(config), "PD_KEY_PROD": routing_key,
              "MONITAO_PD_SECRET_KEYS": generate_key()}
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def stdin(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(text))


def redis_text(client: redis.Redis, prefix: str) -> str:
    """Every key under the prefix and every value, as one text to search."""
    parts = []
    for key in client.scan_iter(match=f"{prefix}*"):
        kind = client.type(key)
        value = {"hash": client.hgetall, "zset": lambda k: client.zrange(k, 0, -1),
                 "string": client.get, "set": client.smembers,
                 "list": lambda k: client.lrange(k, 0, -1), "stream": client.xrange}[kind](key)
        parts.append(f"{key} {value}")
    return "\n".join(parts)


def test_add_list_show_update_remove_never_show_the_key(
    env, capsys, monkeypatch, redis_conn, prefix: str
) -> None:
    key = random_routing_key()
    stdin(monkeypatch, key + "\n")
    code, out, err = run(capsys, "destinations", "add", "acme", "--routing-key-stdin",
                         "--events-url", URL, "--account", "acme", "--severity",
                         "critical=critical", "--severity", "minor=warning", "--rate-limit", "40")
    assert (code, err) == (0, ""), err
    assert f"sha256 {fingerprint(key)}" in out
    outputs = [out]
    code, out, _ = run(capsys, "destinations", "list")
    assert code == 0 and "acme" in out and "prod" in out and fingerprint(key) in out
    outputs.append(out)
    code, out, _ = run(capsys, "destinations", "list", "--json")
    records = json.loads(out)
    assert [r["name"] for r in records] == ["acme", "prod"]
    assert records[0]["routing_key"]["fingerprint"] == fingerprint(key)
    outputs.append(out)
    code, out, _ = run(capsys, "destinations", "list", "--account", "acme")
    assert "acme" in out and "prod" not in out
    code, out, _ = run(capsys, "destinations", "show", "acme")
    assert code == 0 and "per minute:     40" in out and "pending events: 0" in out
    outputs.append(out)
    code, out, _ = run(capsys, "destinations", "show", "acme", "--json")
    shown = json.loads(out)
    assert shown["severity_map"] == {"critical": "critical", "minor": "warning"}
    assert shown["state"]["circuit"] == "closed"
    outputs.append(out)

    new_key = random_routing_key()
    monkeypatch.setenv("ACME_NEW_KEY", new_key)
    code, out, _ = run(capsys, "destinations", "update", "acme", "--routing-key-env",
                       "ACME_NEW_KEY", "--severity", "minor=", "--no-coalesce")
    assert code == 0 and f"sha256 {fingerprint(new_key)}" in out and "version 2" in out
    assert "minor" not in out.split("severity map:")[1].splitlines()[0]
    outputs.append(out)
    code, out, _ = run(capsys, "destinations", "remove", "acme")
    assert code == 0 and "removed destination acme" in out
    for text in outputs:
        assert key not in text and new_key not in text
    assert key not in redis_text(redis_conn, prefix)
    assert new_key not in redis_text(redis_conn, prefix)


def test_add_refuses_bad_input_one_line_per_problem_and_stores_nothing(
    env, capsys, monkeypatch, redis_conn, prefix: str
) -> None:
    stdin(monkeypatch, "short-key\n")
    code, out, err = run(capsys, "destinations", "add", "bad name", "--routing-key-stdin",
                         "--region", "mars", "--rate-limit", "lots", "--severity", "critical",
                         "--severity", "minor=loud", "--events-url", "ftp://x",
                         "--account", "a b", "--source", "x\x1b[31m")
    assert code == 2 and out == ""
    problems = [line.strip() for line in err.splitlines()[1:]]
    for start in ("routing_key:", "severity_map: 'critical' is not LEVEL=SEVERITY", "name:",
                  "region:", "rate_limit_per_minute:", "severity_map.minor:", "events_url:",
                  "account:", "source:"):
        assert any(p.startswith(start) for p in problems), (start, err)
    assert len(problems) == 9, err
    assert "short-key" not in err and "\x1b" not in err
    assert redis_text(redis_conn, prefix) == ""


@pytest.mark.parametrize(("args", "variables", "expected"), [
    (["--routing-key-stdin", "--routing-key-env", "K"], {"K": "x"},
     "give either --routing-key-stdin or --routing-key-env"),
    (["--routing-key-env", "NOT_SET_ANYWHERE"], {}, "$NOT_SET_ANYWHERE is not set"),
    (["--routing-key-env", "KEY_AS_NAME"], {}, "looks like a routing key itself"),
    ([], {}, "routing_key: required"),
])
def test_add_routing_key_sources(env, capsys, monkeypatch, args, variables, expected) -> None:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    key = random_routing_key()
    args = [key if a == "KEY_AS_NAME" else a for a in args]
    stdin(monkeypatch, "")
    code, out, err = run(capsys, "destinations", "add", "acme", "--events-url", URL, *args)
    assert code == 2 and expected in err, err
    assert key not in err + out


def test_add_without_a_key_ring_says_what_to_set(env, capsys, monkeypatch, redis_conn,
                                                 prefix: str) -> None:
    monkeypatch.delenv("MONITAO_PD_SECRET_KEYS")
    stdin(monkeypatch, random_routing_key())
    code, _, err = run(capsys, "destinations", "add", "acme", "--routing-key-stdin",
                       "--events-url", URL)
    assert code == 2
    [line] = [line for line in err.splitlines() if "MONITAO_PD_SECRET_KEYS" in line]
    assert "monitao-pd secrets generate-key" in line
    assert redis_text(redis_conn, prefix) == ""


def test_names_are_taken_and_file_destinations_read_only(env, capsys, monkeypatch) -> None:
    stdin(monkeypatch, random_routing_key())
    assert run(capsys, "destinations", "add", "acme", "--routing-key-stdin",
               "--events-url", URL)[0] == 0
    for args, expected in (
        (["add", "acme", "--routing-key-stdin"], "already exists"),
        (["add", "prod", "--routing-key-stdin"], "destinations file"),
        (["update", "prod", "--source", "x"], "edit the file"),
        (["remove", "prod"], "edit the file"),
        (["update", "nobody", "--source", "x"], "no destination 'nobody'"),
        (["show", "nobody"], "no destination 'nobody'"),
        (["remove", "nobody"], "no destination 'nobody'"),
        (["update", "acme"], "nothing to change"),
        (["update", "acme", "--rate-limit", "0", "--region", "mars"], "region:"),
        (["list", "--bogus"], "No such option"),
    ):
        stdin(monkeypatch, random_routing_key())
        code, _, err = run(capsys, "destinations", *args)
        assert code == 2 and expected in err, (args, err)
    code, out, _ = run(capsys, "destinations", "show", "acme", "--json")
    assert json.loads(out)["version"] == 1  # nothing changed by the refused update


def test_remove_with_pending_events_needs_yes(env, capsys, monkeypatch, redis_conn,
                                              prefix: str) -> None:
    keys = Keyspace(prefix)
    stdin(monkeypatch, random_routing_key())
    run(capsys, "destinations", "add", "acme", "--routing-key-stdin", "--events-url", URL)
    slot = slot_of("acme", "k")
    redis_conn.rpush(keys.mailbox(slot), "e1", "e2", "e3")
    redis_conn.zadd(keys.schedule, {slot: 1})
    code, _, err = run(capsys, "destinations", "remove", "acme")
    assert code == 2 and "3 pending event(s)" in err and "--yes" in err
    assert redis_conn.exists(keys.destination("acme"))
    code, out, _ = run(capsys, "destinations", "remove", "acme", "--yes")
    assert code == 0 and "3 pending event(s)" in out and "destination_removed" in out
    assert not redis_conn.exists(keys.destination("acme"))


def test_reencrypt_and_its_refusals(env, capsys, monkeypatch) -> None:
    old = env["MONITAO_PD_SECRET_KEYS"]
    stdin(monkeypatch, random_routing_key())
    run(capsys, "destinations", "add", "acme", "--routing-key-stdin", "--events-url", URL)
    new = generate_key()
    monkeypatch.setenv("MONITAO_PD_SECRET_KEYS", f"{new},{old}")
    code, out, _ = run(capsys, "destinations", "reencrypt")
    assert code == 0 and "re-encrypted 1 of 1" in out
    monkeypatch.setenv("MONITAO_PD_SECRET_KEYS", generate_key())
    code, _, err = run(capsys, "destinations", "reencrypt")
    assert code == 1 and "acme" in err and "not in MONITAO_PD_SECRET_KEYS" in err
    monkeypatch.setenv("MONITAO_PD_SECRET_KEYS", "not-a-key")
    code, _, err = run(capsys, "destinations", "reencrypt")
    assert code == 2 and "MONITAO_PD_SECRET_KEYS: key 1" in err and "not-a-key" not in err
    monkeypatch.delenv("MONITAO_PD_SECRET_KEYS")
    code, _, err = run(capsys, "destinations", "reencrypt")
    assert code == 2 and "MONITAO_PD_SECRET_KEYS is not set" in err


def test_config_check_and_status_show_keys_this_ring_cannot_open(
    env, capsys, monkeypatch
) -> None:
    stdin(monkeypatch, random_routing_key())
    run(capsys, "destinations", "add", "acme", "--routing-key-stdin", "--events-url", URL)
    code, out, _ = run(capsys, "config", "check")
    assert code == 0 and "registry: 1 run-time destination(s)" in out
    monkeypatch.setenv("MONITAO_PD_SECRET_KEYS", generate_key())
    code, out, err = run(capsys, "config", "check")
    assert code == 2 and "registry: acme: its routing key cannot be opened" in err
    code, out, _ = run(capsys, "status", "--no-ping")
    assert "NOT in this MONITAO_PD_SECRET_KEYS" in out


def test_secrets_generate_key(capsys) -> None:
    code, out, _ = run(capsys, "secrets", "generate-key")
    import base64

    assert code == 0 and len(base64.b64decode(out.strip(), validate=True)) == 32
    assert run(capsys, "secrets", "generate-key", "extra")[0] == 2


def test_the_key_piped_to_a_real_process(env, redis_conn, prefix: str) -> None:
    key = random_routing_key()
    done = subprocess.run(
        [sys.executable, "-m", "cli.main", "destinations", "add", "piped", "--events-url", URL,
         "--routing-key-stdin"], input=key + "\n", env=env, cwd=REPO, capture_output=True,
        text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert key not in done.stdout + done.stderr
    assert fingerprint(key) in done.stdout
    assert key not in redis_text(redis_conn, prefix)
