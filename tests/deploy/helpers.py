"""What the deploy-file tests share: paths, the Settings' variable names, CLI parsing."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import click
import httpx
import pytest
import redis
from pydantic import SecretStr

from cli.main import cli
from config import defaults
from config.embedded_redis import free_port, redis_server_binary
from config.settings import Settings
from tests.conftest import wait_until

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"

# PagerDuty routing keys are 32 letters or digits; nothing shaped like one may sit in deploy/.
ROUTING_KEY_SHAPE = re.compile(r"(?<![A-Za-z0-9])[A-Za-z0-9]{32}(?![A-Za-z0-9])")

# A deliver task's longest run with the shipped defaults: one pass plus one attempt.
LONGEST_TASK_SECONDS = (defaults.PASS_SECONDS + defaults.HTTP_CONNECT_TIMEOUT
                        + defaults.HTTP_READ_TIMEOUT)

# The uid:gid the image runs as (deploy/docker/Dockerfile's USER).
IMAGE_UID = 10001


# Settings the deploy files pass ahead of their code: MONITAO_PD_SECRET_KEYS, the key ring of
# the destination registry (issue 11), is being added to config/settings.py on another
# branch. Once it is there this set changes nothing.
SETTINGS_IN_PROGRESS = {"MONITAO_PD_SECRET_KEYS"}

# Settings whose value may carry a password although their type is no SecretStr.
URLS_WITH_PASSWORDS = {"MONITAO_PD_REDIS_URL", "MONITAO_PD_BROKER_URL"}


def settings_variables() -> set[str]:
    """Every MONITAO_PD_* variable the Settings read: a renamed setting breaks a deploy test."""
    return {f"MONITAO_PD_{name.upper()}" for name in Settings.model_fields} | SETTINGS_IN_PROGRESS


def secret_settings() -> set[str]:
    """The MONITAO_PD_* variables whose value is a secret: every SecretStr setting (a new one
    joins by its type), the Redis URLs, and the key ring."""
    secret = {f"MONITAO_PD_{name.upper()}" for name, field in Settings.model_fields.items()
              if "SecretStr" in str(field.annotation) or field.annotation is SecretStr}
    return secret | URLS_WITH_PASSWORDS | SETTINGS_IN_PROGRESS


def parse_cli(args: list[str]) -> click.Context:
    """Parse a `monitao-pd ...` command line as the CLI would, without running it.

    Fails on an unknown command or option, so a probe or unit calling a flag that does not
    exist (or no longer exists) fails the test.
    """
    if args and Path(args[0]).name == "monitao-pd":
        args = args[1:]
    assert args, "no subcommand"
    context = cli.make_context("monitao-pd", list(args), resilient_parsing=False)
    command: click.Command = cli
    name, *rest = args
    while isinstance(command, click.Group):
        sub = command.get_command(context, name)
        assert sub is not None, f"monitao-pd has no command {name!r}"
        command = sub
        if isinstance(command, click.Group):
            if command.invoke_without_command and (not rest or rest[0].startswith("-")):
                break  # a group that runs itself (`webhooks --port 8282`) with its options
            name, *rest = rest
    return command.make_context(name, list(rest), parent=context)


def split_command(line: str) -> list[str]:
    return shlex.split(line)


def read_env_file(path: Path) -> dict[str, str]:
    """NAME=VALUE lines (comments and blanks skipped), as systemd, kustomize and sh read them."""
    values = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        assert sep, f"{path.name}: not NAME=VALUE: {raw!r}"
        values[name.strip()] = value.strip()
    return values


def script_environment() -> dict[str, str]:
    """This process's environment without the fleet's variables, this venv first on PATH: what
    a deploy file's script is run with here."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("MONITAO_PD_") and not k.startswith("PD_KEY")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


@dataclass(frozen=True)
class StartedRedis:
    """A Redis that a deploy file's script started: its process id and port."""

    pid: int
    port: int


@contextmanager
def redis_started_by(argv: list[str], workdir: Path) -> Iterator[StartedRedis]:
    """Run a deploy file's Redis start-up script (argv: the shell, `-c`, the script, $0 and its
    arguments) with this machine's redis-server, on a free port of 127.0.0.1 with its data in
    `workdir`; yield its pid and port once Redis answers (a NOAUTH answer counts), stop it after.

    The official image's `docker-entrypoint.sh` (which drops root and runs its arguments) is
    stood in for by a script that runs its arguments.
    """
    bin_dir = workdir / "bin"
    data = workdir / "data"
    bin_dir.mkdir(exist_ok=True)
    data.mkdir(exist_ok=True)
    server = bin_dir / "redis-server"
    if not server.exists():
        server.symlink_to(redis_server_binary())
    shim = bin_dir / "docker-entrypoint.sh"
    shim.write_text('#!/bin/sh\nexec "$@"\n')
    shim.chmod(0o755)
    port = free_port()
    env = script_environment()
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    log = workdir / "redis.log"
    with log.open("w") as output:
        process = subprocess.Popen(
            [*argv, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data),
             "--save", ""],
            env=env, cwd=workdir, stdout=output, stderr=subprocess.STDOUT)
    try:
        _wait_for_redis(process, port, log)
        yield StartedRedis(process.pid, port)
    finally:
        stop(process, 10)


def stop(process: subprocess.Popen[bytes], timeout: float = 15) -> None:
    """SIGTERM, then SIGKILL if the process lingers past `timeout` seconds."""
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


def serve_and_probe(args: list[str], environment: dict[str, str], port: int,
                    paths: set[str], what: str) -> None:
    """Run `monitao-pd ARGS` with `environment` until each of `paths` on `port` answers
    200 (30 s at most each), then check another path answers 404; stop it."""
    process = subprocess.Popen(["monitao-pd", *args], env=environment,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def answer(path: str) -> int | None:
            assert process.poll() is None, f"{what} exited with {process.returncode}"
            try:
                return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=2).status_code
            except httpx.TransportError:
                return None

        for path in paths:
            assert wait_until(lambda path=path: answer(path), timeout=30,
                              message=f"{what} to answer its probe") == 200
        assert answer("/health") == 404
    finally:
        stop(process)


def _wait_for_redis(process: subprocess.Popen[bytes], port: int, log: Path,
                    timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"Redis exited with {process.returncode}: {log.read_text()}")
        client = redis.Redis(port=port, socket_connect_timeout=0.5)
        try:
            client.ping()
            return
        except redis.AuthenticationError:
            return
        except redis.ConnectionError:
            time.sleep(0.05)
        finally:
            client.close()
    pytest.fail(f"Redis did not answer on port {port} within {timeout:.0f} s")


def cmdline(pid: int) -> str:
    """A process's command line as `ps` shows it to every user of the host."""
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
