"""Long-running services and configuration: worker, simulator, flower, config check."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import click

from cli.formatting import table
from config import defaults
from config.connections import refuse_misconfigured_redis
from config.destinations import load_destinations
from config.errors import ConfigurationError
from config.settings import Settings, load_settings
from config.text import printable

# Flower's configuration file, and the variable it reads the basic-auth credentials from.
FLOWER_CONF = Path(__file__).resolve().with_name("flower_conf.py")
FLOWER_CREDENTIALS = "MONITAO_PD_FLOWER_CREDENTIALS"
# Where the project's packages are installed (the repository, for an editable install).
CODE_ROOT = Path(__file__).resolve().parents[1]


@click.command()
@click.option("--concurrency", "-c", type=int, help="deliveries at once (default from settings)")
@click.option("--pool", "-P", type=click.Choice(defaults.WORKER_POOLS), help="Celery pool")
@click.option("--name", "-n", help="node name (default monitao-pd.PID@HOST)")
@click.option("--loglevel", "-l", default=None, help="log level (default from settings)")
def worker(concurrency: int | None, pool: str | None, name: str | None,
           loglevel: str | None) -> int:
    """Run a Celery worker of the fleet (deliveries and a dispatcher)."""
    from worker.app import create_app

    settings = load_settings()
    # fail fast on bad configuration; without a file, only run-time destinations
    destinations = load_destinations(settings.config) if settings.config else {}
    refuse_misconfigured_redis(settings)  # a Redis that is down is waited for, not refused
    app = create_app(settings, destinations)
    argv = [
        "worker",
        f"--pool={pool or settings.worker_pool}",
        f"--concurrency={concurrency or settings.worker_concurrency}",
        f"--loglevel={loglevel or settings.log_level}",
        f"--hostname={name or f'monitao-pd.{os.getpid()}@{socket.gethostname()}'}",
        f"--queues={defaults.QUEUE_NAME}",
        "--task-events",
        "--without-mingle",
        "--without-gossip",
    ]
    app.worker_main(argv=argv)
    return 0


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8181, show_default=True)
@click.option("--latency-ms", type=float, default=0.0, show_default=True)
@click.option("--error-rate", type=click.FloatRange(0, 1), default=0.0, show_default=True)
@click.option("--rate-limit", type=int, default=120, show_default=True,
              help="events per routing key per 60 s (0 = unlimited)")
@click.option("--webhook-url", default=None,
              help="send signed webhooks v3 here when an incident changes state")
@click.option("--webhook-secret-env", default=None, metavar="VAR",
              help="environment variable holding the webhook signing secret")
@click.option("--rest-port", type=int, default=0, show_default=True,
              help="port of the REST API's HTTPS listener (0: a free one)")
@click.option("--rest-token-env", "rest_token_envs", multiple=True, metavar="VAR",
              help="environment variable holding a REST API token to accept (repeatable; "
                   "default: the demo token simulator.DEMO_API_TOKEN)")
def simulator(host: str, port: int, latency_ms: float, error_rate: float, rate_limit: int,
              webhook_url: str | None, webhook_secret_env: str | None, rest_port: int,
              rest_token_envs: tuple[str, ...]) -> int:
    """Serve a local PagerDuty Events API v2 simulator, and its REST API v2 over HTTPS."""
    from simulator import Faults, serve

    secret = os.environ.get(webhook_secret_env) if webhook_secret_env else None
    if webhook_url and not secret:
        raise ConfigurationError([
            "--webhook-url needs --webhook-secret-env naming a set environment variable"])
    # Tokens come from the environment, not argv: any user can read a command line in `ps`.
    missing = [name for name in rest_token_envs if not os.environ.get(name)]
    if missing:
        raise ConfigurationError([f"--rest-token-env {printable(name)} names no set "
                                  "environment variable" for name in missing])
    tokens = [os.environ[name] for name in rest_token_envs] or None
    serve(host, port, Faults(latency_ms=latency_ms, error_rate=error_rate,
                             rate_limit=rate_limit or None),
          webhook_url=webhook_url, webhook_secret=secret, rest_port=rest_port,
          rest_tokens=tokens)
    return 0


@click.command()
@click.option("--address", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=5555, show_default=True)
@click.option("--no-auth-on-localhost", is_flag=True,
              help="allow starting without credentials when bound to 127.0.0.1")
def flower(address: str, port: int, no_auth_on_localhost: bool) -> int:
    """Run Flower for the fleet, with basic auth from MONITAO_PD_FLOWER_USER/_PASSWORD."""
    settings = load_settings()
    env = dict(os.environ)
    if settings.flower_user and settings.flower_password:
        # Through the environment, not argv (visible to every user in `ps`), and read by
        # FLOWER_CONF whole: Flower splits FLOWER_BASIC_AUTH and --basic-auth on commas.
        env[FLOWER_CREDENTIALS] = (
            f"{settings.flower_user}:{settings.flower_password.get_secret_value()}"
        )
    elif not (no_auth_on_localhost and address == "127.0.0.1"):
        raise ConfigurationError([
            "MONITAO_PD_FLOWER_USER and MONITAO_PD_FLOWER_PASSWORD are required "
            "(or bind to 127.0.0.1 with --no-auth-on-localhost)"
        ])
    refuse_misconfigured_redis(settings)
    env.update(_absolute_paths(settings))
    # `python -m` puts the working directory first on sys.path, `celery -A` imports the app
    # with it there too, and Flower reads ./flowerconfig.py: a celery.py or flowerconfig.py
    # wherever this command is run from would run with Flower's credentials. So: -P, our
    # own --conf, and the directory the project's code is installed in.
    command = [sys.executable, "-P", "-m", "celery", "-A", "worker.app", "flower",
               f"--conf={FLOWER_CONF}", f"--address={address}", f"--port={port}"]
    os.chdir(CODE_ROOT)
    os.execve(sys.executable, command, env)  # Flower takes this process (and its signals)


def _absolute_paths(settings: Settings) -> dict[str, str]:
    """The settings that are paths, made absolute for a process in another directory."""
    return {f"MONITAO_PD_{name.upper()}": str(Path(value).resolve())
            for name, value in settings if isinstance(value, Path)}


@click.group()
def config() -> None:
    """Configuration."""


@config.command("check")
def config_check() -> int:
    """Validate settings and destinations (file and registry); print them, keys described."""
    from cli.destinations_command import registry_report

    settings = load_settings()
    destinations = load_destinations(settings.config) if settings.config else {}
    rows = [
        [d.name, d.url, d.describe_routing_key(), str(d.rate_limit_per_minute),
         ", ".join(f"{k}->{v}" for k, v in d.severity_map.items())]
        for d in destinations.values()
    ]
    if rows:
        click.echo(table(rows, ["destination", "events url", "routing key", "per minute",
                            "severity map"]))
    lines, problems = registry_report(settings, destinations)
    click.echo("\n".join(lines))
    if problems:
        raise ConfigurationError(problems)
    click.echo(f"configuration OK: {len(destinations)} destination(s), "
               f"key prefix {settings.key_prefix!r}")
    return 0
