"""What the deploy-file tests share: paths, the Settings' variable names, CLI parsing."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click

from cli.main import cli
from config import defaults
from config.settings import Settings

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"

# PagerDuty routing keys are 32 letters or digits; nothing shaped like one may sit in deploy/.
ROUTING_KEY_SHAPE = re.compile(r"(?<![A-Za-z0-9])[A-Za-z0-9]{32}(?![A-Za-z0-9])")

# A deliver task's longest run with the shipped defaults: one pass plus one attempt.
LONGEST_TASK_SECONDS = (defaults.PASS_SECONDS + defaults.HTTP_CONNECT_TIMEOUT
                        + defaults.HTTP_READ_TIMEOUT)

# The uid:gid the image runs as (deploy/docker/Dockerfile's USER).
IMAGE_UID = 10001


def settings_variables() -> set[str]:
    """Every MONITAO_PD_* variable the Settings read: a renamed setting breaks a deploy test."""
    return {f"MONITAO_PD_{name.upper()}" for name in Settings.model_fields}


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
