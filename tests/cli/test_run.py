"""`make run` (`monitao-pd run`) as a newcomer meets it, each run as a process of its own:
the demo, two runs on one Redis, the terminal kept for the demo, the CLI pointed at the
running fleet, Ctrl-C with an embedded Redis."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from contextlib import suppress
from pathlib import Path

import httpx
import pytest
import redis

from simulator import DEMO_API_TOKEN
from tests.conftest import wait_until

REPO = Path(__file__).resolve().parents[2]
COMMAND = Path(sys.executable).with_name("monitao-pd")
# What the worker and Flower print; none of it may reach the terminal.
CHILD_OUTPUT = ("[tasks]", "INFO/MainProcess", "Visit me at", "SecurityWarning",
                "Warm shutdown", "detected, shutting down", "-------------- ")
# A run whose default Redis URL (redis://127.0.0.1:6379/0) is silent: it starts an embedded one.
WITH_EMBEDDED_REDIS = (
    "import sys; from config import defaults; from config.embedded_redis import free_port; "
    "defaults.REDIS_URL = f'redis://127.0.0.1:{free_port()}/0'; from cli.main import main; "
    "sys.exit(main(['run', *sys.argv[1:]]))"
)


def run_env(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MONITAO_PD_")}
    env.update(values)
    return env


def processes_with(marker: str) -> list[int]:
    """Pids of live processes whose environment contains `marker`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "environ").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def kill_everything_with(marker: str) -> None:
    """SIGKILL every process whose environment holds `marker` (run and its children, which
    live in sessions of their own), so a failing test leaves nothing running."""
    for pid in processes_with(marker):
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def api_of(out: str) -> tuple[str, str]:
    """The API's URL and the run's token, as printed."""
    [(url, token)] = re.findall(r"^API: (http://127\.0\.0\.1:\d+)  docs: \S+/docs  "
                                r"token: (mpd_\S+)$", out, flags=re.MULTILINE)
    return url, token


def logs_of(out: str) -> Path:
    [directory] = re.findall(r"^Logs: (\S+)/ ", out, flags=re.MULTILINE)
    return Path(directory)


def remove_logs(out: str) -> None:
    """The run keeps its log directory for its user; a test removes it."""
    for directory in re.findall(r"^Logs: (/tmp/monitao-pd-run-\w+)/ ", out, flags=re.MULTILINE):
        shutil.rmtree(directory, ignore_errors=True)


def assert_quiet_terminal(text: str) -> None:
    for noise in CHILD_OUTPUT:
        assert noise not in text, f"{noise!r} reached the terminal:\n{text[-3000:]}"
    assert "Traceback" not in text


def assert_clean_logs(logs: Path, *, flower_started: bool = True) -> None:
    """Every process stopped while Redis still answered: no error, no traceback."""
    assert "ready." in (logs / "worker.log").read_text()
    if flower_started:  # with --exit-after-demo, Flower may be stopped before it is up
        assert "Visit me at" in (logs / "flower.log").read_text()
    assert "API listening on http://127.0.0.1:" in (logs / "api.log").read_text()
    for name in ("worker.log", "flower.log", "api.log", "services.log"):
        text = (logs / name).read_text()
        for sign in ("Traceback", "ERROR", "CRITICAL", "Cannot connect", "Connection refused"):
            assert sign not in text, f"{sign!r} in {name}:\n{text[-3000:]}"


@pytest.mark.slow
def test_two_runs_on_one_redis_each_deliver_their_own_demo_and_leave_no_key(
    redis_url: str, prefix: str
) -> None:
    # Both runs share the Redis, the database and MONITAO_PD_KEY_PREFIX, as two `make run`
    # on one machine do: the first run's worker used to deliver the second's trigger to the
    # first simulator, and the second run failed after 90 s.
    env = run_env(MONITAO_PD_REDIS_URL=redis_url, MONITAO_PD_KEY_PREFIX=prefix)
    runs = [subprocess.Popen([str(COMMAND), "run", "--exit-after-demo"], cwd=REPO, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             start_new_session=True) for _ in range(2)]
    results: list[tuple[str, str]] = []
    try:
        results = [run.communicate(timeout=150) for run in runs]
        _check_two_runs(runs, results, prefix, redis_url)
    finally:
        kill_everything_with(prefix)
        for out, _ in results:
            remove_logs(out)


def _check_two_runs(runs: list[subprocess.Popen[str]], results: list[tuple[str, str]],
                    prefix: str, redis_url: str) -> None:
    prefixes, apis = [], []
    for run, (out, err) in zip(runs, results, strict=True):
        assert run.returncode == 0, err[-3000:]
        table = out[out.index("Timeline of incident"):]
        delivered = [line for line in table.splitlines() if "  delivered  " in line]
        assert [line.split()[2] for line in delivered] == ["trigger", "resolve"]
        stages = [line.split()[1] for line in table.splitlines()[2:] if line.strip()]
        assert stages.index("delivered") < stages.index("pagerduty_acknowledged")
        assert "pagerduty_resolved" in stages
        [acknowledged] = [line for line in table.splitlines() if "pagerduty_acknowledged" in line]
        assert "by Demo Responder, PagerDuty incident " in acknowledged
        assert "Flower: http://127.0.0.1:" in out and "password:" in out
        assert "MONITAO_PD_DEMO_ROUTING_KEY" not in out + err
        # the demo destination's maintenance window, synchronised to the simulated PagerDuty
        assert ("Maintenance window demo-deploy (" in out and "): synchronised to the "
                "simulated PagerDuty as window P" in out and "not found there" not in out)
        assert DEMO_API_TOKEN not in out + err
        url, token = api_of(out)
        assert "(the token is shown once; it has every scope and lasts as long as this run)" in out
        assert out.count(token) == 1
        apis.append(url)
        [run_prefix] = re.findall(r"^Key prefix: (\S+) ", out, flags=re.MULTILINE)
        assert run_prefix.startswith(f"{prefix}run-")
        prefixes.append(run_prefix)
        assert_quiet_terminal(out + err)
        assert_clean_logs(logs_of(out), flower_started=False)
        assert subprocess.run(["pgrep", "-g", str(run.pid)], capture_output=True).stdout == b""
    assert prefixes[0] != prefixes[1]
    assert apis[0] != apis[1]  # one took the usual port (if free), the other a free one
    client = redis.Redis.from_url(redis_url)
    try:  # the demos' keys are gone (the API tokens too), the broker's (_kombu.binding.*,
        # the queue) too
        assert list(client.scan_iter(match=f"{prefix}*", count=1000)) == []
    finally:
        client.close()


@pytest.mark.slow
def test_ctrl_c_with_the_embedded_redis_after_using_the_printed_commands(
    prefix: str, tmp_path: Path
) -> None:
    env = run_env(MONITAO_PD_KEY_PREFIX=prefix)  # also marks this run's processes
    out_path = tmp_path / "run.out"
    with out_path.open("wb") as sink:
        run = subprocess.Popen([sys.executable, "-c", WITH_EMBEDDED_REDIS], cwd=REPO, env=env,
                               stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until(lambda: "Press Ctrl-C" in out_path.read_text() or run.poll() is not None,
                   timeout=120, message="the fleet to run")
        out = out_path.read_text()
        assert run.poll() is None, out
        assert "started an embedded one at" in out
        assert len(processes_with(prefix)) >= 3  # run, its worker and Flower

        # the printed lines, as a newcomer copies them into another terminal
        exports = dict(shlex.split(line.strip())[1].split("=", 1) for line in out.splitlines()
                       if line.startswith("  export "))
        assert set(exports) == {"MONITAO_PD_REDIS_URL", "MONITAO_PD_KEY_PREFIX",
                                "MONITAO_PD_CONFIG"}
        assert ".venv/bin/monitao-pd status" in out
        cli = run_env(**exports)

        def monitao_pd(*args: str) -> str:
            done = subprocess.run([str(COMMAND), *args], cwd=REPO, env=cli, capture_output=True,
                                  text=True, timeout=60)
            assert done.returncode == 0, done.stderr
            return done.stdout

        status = json.loads(monitao_pd("status", "--json", "--timeout", "5"))
        assert len(status["workers"]) == 1 and status["pending_events"] == 0
        _use_the_printed_api(out, exports)
        [faults] = set(re.findall(r"curl -X POST (\S+/_sim/faults) ", out))
        assert httpx.post(faults, json={"force_status": 400}, timeout=5).status_code == 200
        monitao_pd("send", "--action", "trigger", "--monitor-id", "7", "--incident-id", "1",
                   "--summary", "test")
        [letter] = wait_until(lambda: json.loads(monitao_pd("dlq", "list", "--json")),
                              timeout=30, message="the dead letter")
        assert letter["reason"] == "rejected"

        run.send_signal(signal.SIGINT)
        assert run.wait(timeout=60) == 0
        wait_until(lambda: not processes_with(prefix), timeout=30,
                   message="every process of the run to exit")
        out = out_path.read_text()
        assert "stopped; logs kept in " in out
        assert_quiet_terminal(out)
        # the worker and Flower stopped before the embedded Redis they use
        assert_clean_logs(logs_of(out))
    finally:
        kill_everything_with(prefix)
        shut_down_embedded_redis(out_path.read_text())
        remove_logs(out_path.read_text())


def _use_the_printed_api(out: str, exports: dict[str, str]) -> None:
    """The printed token works against the printed URL, with every scope (a destination
    added through it is delivered to, then removed), and is stored only as its hash."""
    url, token = api_of(out)
    assert f"Console: {url}/  (sign in with the token above)" in out
    # the console is at the printed address: its sign-in form asks for the token
    assert "API token" in httpx.get(f"{url}/", timeout=10, follow_redirects=True).text
    assert httpx.get(f"{url}/v1/status?ping=false", timeout=10).status_code == 401
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"},
                      timeout=30) as api:
        assert api.get("/v1/status", params={"ping": "false"}).status_code == 200
        [sim] = re.findall(r"^PagerDuty simulator: (\S+)$", out, flags=re.MULTILINE)
        added = api.post("/v1/destinations", json={
            "name": "from-api", "routing_key": "K" * 32, "events_url": f"{sim}/v2/enqueue"})
        assert added.status_code == 201, added.text
        assert api.post("/v1/events", json={
            "action": "trigger", "monitor_id": "8", "incident_id": "api-1",
            "destination": "from-api", "summary": "through the API"}).status_code == 202

        def delivered() -> bool:
            entries = api.get("/v1/incidents/api-1/timeline").json().get("entries", [])
            return any(entry["stage"] == "delivered" for entry in entries)

        wait_until(delivered, timeout=30, message="the API's event to be delivered")
        assert api.delete("/v1/destinations/from-api").status_code == 200
    client = redis.Redis.from_url(exports["MONITAO_PD_REDIS_URL"])
    try:
        prefix = exports["MONITAO_PD_KEY_PREFIX"]
        stored = [key + (client.dump(key) or b"")
                  for key in client.scan_iter(match=f"{prefix}*")]
        assert stored and not any(token.encode() in text for text in stored)
        assert client.exists(f"{prefix}token:{hashlib.sha256(token.encode()).hexdigest()}")
    finally:
        client.close()


def shut_down_embedded_redis(out: str) -> None:
    """Stop the run's embedded Redis if a failure left it running (redis-server rewrites
    its environment for its process title, so `kill_everything_with` cannot find it)."""
    for url in re.findall(r"started an embedded one at (redis://\S+)", out):
        client = redis.Redis.from_url(url, socket_connect_timeout=0.5)
        with suppress(redis.RedisError):
            client.shutdown(nosave=True)
        client.close()
