"""`monitao-pd health`: exit 0 only when Redis answers and a worker replies to a Celery ping.

Real Redis, real Celery worker threads (the `fleet` fixture), and the installed entry point
as the image, compose, Kubernetes and systemd run it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cli import health_command
from cli.main import main
from config.embedded_redis import free_port
from config.settings import load_settings
from tests.conftest import Fleet, wait_until

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def health_env(monkeypatch: pytest.MonkeyPatch, redis_url: str, prefix: str) -> None:
    """The CLI's settings point at the test Redis and the test's prefix (the fleet's)."""
    monkeypatch.setenv("MONITAO_PD_REDIS_URL", redis_url)
    monkeypatch.setenv("MONITAO_PD_KEY_PREFIX", prefix)


def run_health(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["health", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_healthy_fleet_exits_0_with_one_line(
    health_env: None, fleet: Fleet, capsys: pytest.CaptureFixture[str]
) -> None:
    def healthy() -> tuple[int, str, str] | None:
        result = run_health(capsys, "--timeout", "1")
        return result if result[0] == 0 else None

    _, out, err = wait_until(healthy, timeout=20, message="the worker to answer a ping")
    assert out == "ok: Redis answers, 1 worker replies\n"
    assert err == ""


def test_local_counts_only_workers_on_this_host(
    health_env: None, fleet: Fleet, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = load_settings()
    # The test worker's node name ends with @HOSTNAME, like `monitao-pd worker`'s.
    names = wait_until(lambda: health_command.ping_workers(settings, timeout=1.0),
                       timeout=20, message="the worker to answer a ping")
    hostname = socket.gethostname()
    assert len(names) == 1 and names[0].endswith(f"@{hostname}")
    # a worker thread starved of CPU may take over a second to answer: 3 s to be sure
    assert health_command.ping_workers(settings, timeout=3.0, hostname=hostname) == names
    assert health_command.ping_workers(settings, timeout=1.0, hostname="elsewhere") == []

    code, out, _ = run_health(capsys, "--local", "--timeout", "3")
    assert code == 0
    assert out == f"ok: Redis answers, 1 worker on this host ({hostname}) replies\n"

    healthy, message = health_command.check(settings, local=True, timeout=1.0,
                                            hostname="elsewhere")
    assert not healthy
    assert message == "Redis answers, but no worker on this host (elsewhere) replied within 1 s"


def test_no_worker_exits_1_within_the_timeout(
    health_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    started = time.monotonic()
    code, out, err = run_health(capsys, "--timeout", "1")
    assert time.monotonic() - started < 5
    assert code == 1
    assert out == ""
    assert err == "unhealthy: Redis answers, but no worker replied within 1 s\n"


def test_a_worker_under_another_prefix_does_not_count(
    health_env: None, fleet: Fleet, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The broker's keys (control messages included) are under the prefix: fleets sharing one
    Redis do not answer for each other."""
    wait_until(lambda: run_health(capsys, "--timeout", "1")[0] == 0, timeout=20,
               message="the worker to answer a ping")
    monkeypatch.setenv("MONITAO_PD_KEY_PREFIX", fleet.settings.key_prefix + "other:")
    code, _, err = run_health(capsys, "--timeout", "1")
    assert code == 1 and "no worker replied" in err


def test_unreachable_redis_exits_1_naming_it_without_password_or_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()
    monkeypatch.setenv("MONITAO_PD_REDIS_URL", f"redis://:hunter2@127.0.0.1:{port}/0")
    started = time.monotonic()
    code, out, err = run_health(capsys, "--timeout", "1")
    assert time.monotonic() - started < 5
    assert code == 1 and out == ""
    assert err.startswith(f"unhealthy: cannot reach Redis at redis://:***@127.0.0.1:{port}/0 (")
    assert err.count("\n") == 1
    assert "hunter2" not in err and "Traceback" not in err


def test_unreachable_broker_exits_1_naming_it(
    health_env: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()
    monkeypatch.setenv("MONITAO_PD_BROKER_URL", f"redis://:hunter2@127.0.0.1:{port}/0")
    code, _, err = run_health(capsys, "--timeout", "1")
    assert code == 1
    assert err.startswith(f"unhealthy: cannot reach the broker at redis://:***@127.0.0.1:{port}/0")
    assert "hunter2" not in err and "Traceback" not in err


def test_invalid_configuration_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MONITAO_PD_REDIS_URL", "sentinel://127.0.0.1:26379")
    code, _, err = run_health(capsys)
    assert code == 2
    assert "MONITAO_PD_REDIS_SENTINEL_MASTER is required" in err
    assert "Traceback" not in err


def test_the_installed_command_as_probes_run_it(fleet: Fleet, redis_url: str,
                                                prefix: str) -> None:
    """`monitao-pd health --local` in a process of its own, as the image's HEALTHCHECK runs it."""
    command = Path(sys.executable).with_name("monitao-pd")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MONITAO_PD_")}
    env.update(MONITAO_PD_REDIS_URL=redis_url, MONITAO_PD_KEY_PREFIX=prefix)

    def probe() -> subprocess.CompletedProcess[str] | None:
        done = subprocess.run([str(command), "health", "--local", "--timeout", "1"], env=env,
                              capture_output=True, text=True, timeout=30, cwd=REPO)
        return done if done.returncode == 0 else None

    done = wait_until(probe, timeout=30, message="the probe to pass")
    assert done.stdout.startswith("ok: Redis answers, 1 worker on this host")

    env["MONITAO_PD_KEY_PREFIX"] = prefix + "nobody:"
    done = subprocess.run([str(command), "health", "--timeout", "1"], env=env,
                          capture_output=True, text=True, timeout=30, cwd=REPO)
    assert done.returncode == 1
    assert done.stderr.strip() == "unhealthy: Redis answers, but no worker replied within 1 s"


def test_wait_keeps_checking_until_a_worker_starts(
    make_fleet, redis_url: str, prefix: str
) -> None:
    """`--wait` (systemd's ExecStartPost) passes once a worker comes up, not before."""
    command = Path(sys.executable).with_name("monitao-pd")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MONITAO_PD_")}
    env.update(MONITAO_PD_REDIS_URL=redis_url, MONITAO_PD_KEY_PREFIX=prefix)
    waiting = subprocess.Popen([str(command), "health", "--local", "--timeout", "1",
                                "--wait", "60"], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        # with no worker yet it keeps checking instead of answering
        with pytest.raises(subprocess.TimeoutExpired):
            waiting.wait(timeout=3)
        with make_fleet():
            out, err = waiting.communicate(timeout=60)
    finally:
        if waiting.poll() is None:
            waiting.kill()
            waiting.communicate(timeout=10)
    assert waiting.returncode == 0, err
    assert out.startswith("ok: Redis answers, 1 worker on this host")


def test_wait_gives_up_at_its_deadline(
    health_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    started = time.monotonic()
    code, _, err = run_health(capsys, "--timeout", "0.5", "--wait", "1.5")
    elapsed = time.monotonic() - started
    assert code == 1 and "no worker replied within 0.5 s" in err
    assert 1.5 <= elapsed < 6
