"""`monitao-pd run` (what `make run` calls): the whole fleet on one machine, and a demo.

Starts what is missing (an embedded Redis when nothing answers at the default URL, the
PagerDuty simulator, a worker, Flower with generated credentials and, for the demo
destination, the webhook receiver the simulator reports responders' actions to), sends a
sample trigger, has a simulated responder acknowledge it once it is delivered (demo only),
sends its resolve, prints the incident's timeline, and keeps running until Ctrl-C; then it
stops everything it started.
"""

from __future__ import annotations

import os
import secrets
import signal
import string
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import click
import redis

from cli.formatting import timeline_table
from config import defaults
from config.connections import redis_client
from config.embedded_redis import EmbeddedRedis, free_port
from config.errors import MonitaoPDError, RedisUnavailableError
from config.keyspace import Keyspace
from config.settings import Settings, load_settings
from worker import timeline

if TYPE_CHECKING:
    from simulator import Simulator

DELIVERY_TIMEOUT = 90.0
DEMO_DESTINATION = "demo"


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@click.command()
@click.option("--exit-after-demo", is_flag=True, help="stop once the demo timeline is printed")
@click.option("--sample-to", metavar="NAME",
              help="with your own MONITAO_PD_CONFIG: the destination that gets the sample")
@click.option("--concurrency", type=int, default=8, show_default=True)
def run(exit_after_demo: bool, sample_to: str | None, concurrency: int) -> int:
    """Run a local fleet (Redis, simulator, worker, Flower) and deliver a sample incident."""
    signal.signal(signal.SIGTERM, _interrupt)
    settings = load_settings()
    env = dict(os.environ)
    with ExitStack() as stack:
        processes: list[subprocess.Popen[bytes]] = []
        stack.callback(_stop_all, processes)

        redis_url = _ensure_redis(settings, stack)
        env["MONITAO_PD_REDIS_URL"] = redis_url

        from simulator import Faults, Simulator

        sim = stack.enter_context(Simulator(faults=Faults()))
        click.echo(f"PagerDuty simulator: {sim.url}")

        demo = settings.config is None
        if demo:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="monitao-pd-")))
            env["MONITAO_PD_CONFIG"] = str(_write_demo_config(workdir, sim.events_url))
            env["MONITAO_PD_DEMO_ROUTING_KEY"] = _random_routing_key()
            sample_to = DEMO_DESTINATION
            if not env.get("MONITAO_PD_SECRET_KEYS"):
                _demo_key_ring(workdir, env)
        os.environ.update(env)  # the producer below reads the same settings as the children
        settings = load_settings()

        if demo:
            # PagerDuty's webhooks, played by the simulator, signed with a secret of this
            # run (not with your own config: the receiver would join your fleet's)
            from webhooks import WebhookService

            webhook_secret = secrets.token_urlsafe(24)
            receiver = stack.enter_context(
                WebhookService(load_settings(webhook_secrets=webhook_secret)))
            sim.set_webhook(receiver.url, webhook_secret)
            click.echo(f"Webhook receiver: {receiver.url}")

        processes.append(_spawn(["worker", f"--concurrency={concurrency}"], env))
        flower_port = free_port() if _port_busy(5555) else 5555
        user, password = "monitao", secrets.token_urlsafe(18)
        flower_env = dict(env, MONITAO_PD_FLOWER_USER=user, MONITAO_PD_FLOWER_PASSWORD=password)
        processes.append(_spawn(["flower", f"--port={flower_port}"], flower_env))
        flower_url = f"http://127.0.0.1:{flower_port}"

        if sample_to:
            _demo(settings, sample_to, sim if demo else None)
        else:
            click.echo("Your MONITAO_PD_CONFIG is set: no sample sent (use --sample-to NAME).")
        click.echo(f"\nFlower: {flower_url}  user: {user}  password: {password}")
        click.echo("(the password is shown once; it lasts as long as this run)")
        if exit_after_demo:
            return 0
        click.echo("Fleet running. Press Ctrl-C to stop.")
        try:
            while all(p.poll() is None for p in processes):
                time.sleep(0.5)
            click.echo("a fleet process exited; stopping", err=True)
            return 1
        except KeyboardInterrupt:
            click.echo("\nstopping")
            return 0
    return 0


def _ensure_redis(settings: Settings, stack: ExitStack) -> str:
    try:
        redis_client(settings).close()
        click.echo(f"Redis: {settings.redis_url}")
        return settings.redis_url
    except RedisUnavailableError:
        if settings.redis_url != defaults.REDIS_URL:
            raise  # a Redis the user chose is down: never swap in a private one silently
    embedded = stack.enter_context(EmbeddedRedis())
    click.echo(f"Redis: nothing at {defaults.REDIS_URL}; started an embedded one at "
               f"{embedded.url}")
    return embedded.url


def _random_routing_key() -> str:
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(32))


def _demo_key_ring(directory: Path, env: dict[str, str]) -> None:
    """A key ring of this run for `monitao-pd destinations add` (a file, never printed)."""
    from config.secrets import generate_key

    path = directory / "secret-keys"
    path.touch(mode=0o600)
    path.write_text(generate_key(), encoding="utf-8")
    env["MONITAO_PD_SECRET_KEYS"] = path.read_text(encoding="utf-8")
    click.echo(f"Key ring for run-time destinations: generated for this run; to add one: "
               f"export MONITAO_PD_SECRET_KEYS=$(cat {path})")


def _write_demo_config(directory: Path, events_url: str) -> Path:
    path = directory / "destinations.toml"
    path.write_text(
        f"""[destinations.{DEMO_DESTINATION}]
routing_key_env = "MONITAO_PD_DEMO_ROUTING_KEY"
events_url = "{events_url}"
source = "MoniTao"
""",
        encoding="utf-8",
    )
    return path


def _spawn(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "cli.main", *args], env=env,
                            start_new_session=True)


def _port_busy(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _stop_all(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + 20
    for process in processes:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)


def _demo(settings: Settings, destination: str, sim: Simulator | None) -> None:
    """Send a sample incident to `destination`; with the simulator behind it, a simulated
    responder acknowledges it in between, and the webhook's entry joins its timeline."""
    from producer import AlertProducer

    incident = f"demo-{secrets.token_hex(3)}"
    base = {"destination": destination, "monitor_id": "123", "incident_id": incident}
    keys = Keyspace(settings.key_prefix)
    with AlertProducer(settings) as producer:
        trigger = producer.send(dict(
            base, action="trigger", summary="[DOWN] example.com - HTTP 503", level="critical",
            monitor_name="example.com", url="https://example.com", status_code=503,
            response_time_ms=1234, check_location="eu-west",
            incident_url=f"https://monitao.example/incidents/{incident}",
        ))
        click.echo(f"sent trigger {trigger} for incident {incident}; waiting for delivery")
        _wait_final(producer, trigger)
        if sim is not None:
            click.echo("a simulated responder acknowledges it in PagerDuty; waiting for the "
                       "webhook")
            sim.respond(f"monitao-monitor-123-incident-{incident}", "acknowledge",
                        agent="Demo Responder")
            _wait_stage(producer.redis, keys, incident, "pagerduty_acknowledged")
        resolve = producer.send(dict(base, action="resolve"))
        click.echo(f"sent resolve {resolve}; waiting for delivery")
        _wait_final(producer, resolve)
        if sim is not None:
            _wait_stage(producer.redis, keys, incident, "pagerduty_resolved")
        click.echo(f"\nTimeline of incident {incident}:")
        click.echo(timeline_table(timeline.read(producer.redis, keys, incident)))


def _wait_final(producer: object, event_id: str) -> None:
    keys = producer.keys  # type: ignore[attr-defined]
    client = producer.redis  # type: ignore[attr-defined]

    def final() -> str | None:
        state = client.hget(keys.event(event_id), "state")
        return state if state and state != "pending" else None

    _wait_for(final, f"event {event_id} was not delivered")


def _wait_stage(client: redis.Redis, keys: Keyspace, incident: str, stage: str) -> None:
    def reached() -> str | None:
        entries = timeline.read(client, keys, incident)
        return stage if any(e["stage"] == stage for e in entries) else None

    _wait_for(reached, f"no {stage} in incident {incident}'s timeline")


def _wait_for(outcome: Callable[[], str | None], failure: str) -> None:
    """Poll `outcome` until it names one (printed), for at most DELIVERY_TIMEOUT."""
    deadline = time.monotonic() + DELIVERY_TIMEOUT
    while time.monotonic() < deadline:
        reached = outcome()
        if reached:
            click.echo(f"  -> {reached}")
            return
        time.sleep(0.2)
    raise MonitaoPDError(f"{failure} within {DELIVERY_TIMEOUT:.0f} s")
