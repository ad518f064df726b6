"""`monitao-pd flower`: basic auth from settings, refusal without it, and a real Flower
reading the fleet's tasks over its API with no routing key or payload in sight."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import httpx
import pytest

from cli.main import main
from config.embedded_redis import free_port
from tests.conftest import Fleet, wait_until
from worker import timeline

REPO = Path(__file__).resolve().parents[2]
USER, PASSWORD = "oncall", "correct-horse-battery-staple"


@contextmanager
def running_flower(redis_url: str, prefix: str, logs: Path, *, password: str = PASSWORD,
                   cwd: Path = REPO) -> Iterator[str]:
    """`monitao-pd flower` on a free port for the test's fleet, run from `cwd`; its URL."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MONITAO_PD_")}
    env.update(MONITAO_PD_REDIS_URL=redis_url, MONITAO_PD_KEY_PREFIX=prefix,
               MONITAO_PD_FLOWER_USER=USER, MONITAO_PD_FLOWER_PASSWORD=password)
    log_path = logs / "flower.log"
    log = log_path.open("wb")
    # the installed command, as a user runs it (`python -m` would import from `cwd` itself)
    command = Path(sys.executable).with_name("monitao-pd")
    process = subprocess.Popen(
        [str(command), "flower", f"--port={port}"], cwd=cwd, env=env,
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"

    def answering() -> bool:
        assert process.poll() is None, log_path.read_text()
        try:
            return httpx.get(f"{url}/healthcheck", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_until(answering, timeout=30, message="Flower to answer")
        yield url
    finally:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        log.close()


@pytest.fixture
def flower(redis_url: str, prefix: str, tmp_path: Path) -> Iterator[str]:
    """`monitao-pd flower` on a free port for the test's fleet; its base URL."""
    with running_flower(redis_url, prefix, tmp_path) as url:
        yield url


@pytest.mark.slow
def test_flower_shows_the_fleets_tasks_to_its_users_only_and_no_secret(
    flower: str, fleet: Fleet, routing_key: str
) -> None:
    ids = fleet.producer.send_many([
        {"action": "trigger", "monitor_id": "9", "incident_id": "fl", "summary": "[DOWN] f",
         "details": {"canary": "payload-canary-7731"}},
        {"action": "resolve", "monitor_id": "9", "incident_id": "fl"},
    ])
    fleet.wait_final(ids)
    task_ids = {e["task_id"] for e in timeline.read(fleet.redis, fleet.keys, "fl")
                if e["stage"] == "attempt"}

    def tasks() -> dict | None:
        response = httpx.get(f"{flower}/api/tasks", auth=(USER, PASSWORD), timeout=5)
        assert response.status_code == 200
        found = response.json()
        return found if task_ids <= set(found) and all(
            found[t].get("state") == "SUCCESS" for t in task_ids) else None

    found = wait_until(tasks, timeout=30, message="Flower to list the deliver tasks")
    for task_id in task_ids:  # the timeline's task id is Flower's task id
        task = found[task_id]
        assert task["name"] == "monitao.deliver"
        assert task["args"] == "('prod', 'monitao-monitor-9-incident-fl')"
    body = httpx.get(f"{flower}/api/tasks", auth=(USER, PASSWORD), timeout=5).text
    task_page = httpx.get(f"{flower}/task/{next(iter(task_ids))}", auth=(USER, PASSWORD),
                          timeout=5).text
    workers = httpx.get(f"{flower}/api/workers", auth=(USER, PASSWORD), timeout=5).text
    for text in (body, task_page, workers):
        assert routing_key not in text
        assert "payload-canary-7731" not in text and "[DOWN] f" not in text

    assert httpx.get(f"{flower}/api/tasks", timeout=5).status_code == 401
    assert httpx.get(f"{flower}/api/tasks", auth=(USER, "wrong"), timeout=5).status_code == 401
    assert httpx.get(f"{flower}/", timeout=5).status_code == 401
    # documented: these two answer without auth (put them behind a proxy, see the README)
    assert httpx.get(f"{flower}/healthcheck", timeout=5).text == "OK"
    metrics = httpx.get(f"{flower}/metrics", timeout=5)
    assert metrics.status_code == 200 and routing_key not in metrics.text


def test_flower_refuses_to_start_without_credentials(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for args in (["flower"], ["flower", "--no-auth-on-localhost", "--address", "0.0.0.0"]):
        assert main(args) == 2
        err = capsys.readouterr().err
        assert "MONITAO_PD_FLOWER_USER and MONITAO_PD_FLOWER_PASSWORD are required" in err
        assert "Traceback" not in err
    monkeypatch.setenv("MONITAO_PD_FLOWER_USER", "only-a-user")
    assert main(["flower", "--address", "0.0.0.0"]) == 2


def test_a_password_with_commas_is_the_whole_password_and_nothing_runs_from_the_cwd(
    redis_url: str, prefix: str, tmp_path: Path
) -> None:
    # Flower splits FLOWER_BASIC_AUTH on ',': "S3cret,Tail" was refused and both halves let
    # in. And `python -m celery` (and `celery -A`, and Flower's ./flowerconfig.py) ran code
    # from the directory the command was started in, with the credentials in its environment.
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    ran = tmp_path / "ran"
    for name in ("celery", "flowerconfig", "worker"):
        (cwd / f"{name}.py").write_text(
            f"open({str(ran)!r}, 'a').write('{name} ')\n", encoding="utf-8")
    password = "S3cret,Tail,with,commas"
    with running_flower(redis_url, prefix, tmp_path, password=password, cwd=cwd) as url:
        def status(secret: str) -> int:
            return httpx.get(f"{url}/api/workers", auth=(USER, secret), timeout=5).status_code

        assert status(password) == 200
        for part in ("S3cret", "Tail", "with", "commas", "S3cret,Tail"):
            assert status(part) == 401, part
    assert not ran.exists(), f"ran from the working directory: {ran.read_text()}"
