"""`monitao-pd run` (what `make run` calls): the whole fleet on one machine, and a demo.

Starts what is missing (an embedded Redis when nothing answers at the default URL, the
PagerDuty simulator, a worker, Flower with generated credentials, the HTTP API with a token
of this run's (every scope) and, for the demo destination, the webhook receiver the
simulator reports responders' actions to), sends a
sample trigger, has a simulated responder acknowledge it once it is delivered (demo only),
sends its resolve, prints the incident's timeline and how to use the CLI against this
fleet, and keeps running until Ctrl-C; then it stops everything it started, in the reverse
order (the embedded Redis last).

The terminal is kept for the demo and for errors: the processes' output goes to log files
in the run's directory (printed, and kept after the run). The demo runs under a key prefix
of its own, so two runs on one Redis never take each other's work, and deletes its keys on
exit (the broker's included).
"""

from __future__ import annotations

import fcntl
import logging
import os
import secrets
import shlex
import signal
import string
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import click
import redis

from cli.formatting import timeline_table
from config import defaults
from config.connections import redis_client
from config.destinations import load_destinations
from config.embedded_redis import EmbeddedRedis, free_port
from config.errors import MonitaoPDError, RedisUnavailableError
from config.keyspace import Keyspace
from config.settings import Settings, load_settings, redact_url
from worker import timeline

if TYPE_CHECKING:
    from simulator import Simulator

DELIVERY_TIMEOUT = 90.0
DEMO_DESTINATION = "demo"
DEMO_SERVICE = "PSIMSVC"
DEMO_WINDOW = "demo-deploy"
WINDOW_SYNC_WAIT_SECONDS = 15.0
# How long the processes get to stop after SIGTERM before they are killed.
STOP_TIMEOUT = 20.0
# Flower's own default port, and the API's: the run takes each when it is free.
FLOWER_PORT = 5555
API_PORT = defaults.API_PORT
# How long the API gets to answer before its address is printed anyway.
API_START_TIMEOUT = 30.0
# Lines of a process's log shown when it exits on its own.
LOG_TAIL_LINES = 20


@dataclass
class FleetProcess:
    """A process this run started, and the log file its output goes to."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path


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
    running = False
    workdir: Path | None = None
    try:
        with ExitStack() as stack:
            # Callbacks run in reverse: the processes stop first, the embedded Redis last.
            stack.callback(signal.signal, signal.SIGINT, signal.getsignal(signal.SIGINT))
            redis_url = _ensure_redis(settings, stack)
            env["MONITAO_PD_REDIS_URL"] = redis_url
            workdir = Path(tempfile.mkdtemp(prefix="monitao-pd-run-"))
            stack.enter_context(_logging_to(workdir / "services.log"))

            demo = settings.config is None
            if demo:
                prefix = f"{settings.key_prefix}run-{secrets.token_hex(4)}:"
                env["MONITAO_PD_KEY_PREFIX"] = prefix
                stack.callback(_delete_keys, settings, redis_url, prefix)
                click.echo(f"Key prefix: {prefix} (this run's own; its keys are deleted when "
                           "it ends)")

            from simulator import DEMO_API_TOKEN, Faults, Simulator

            sim = stack.enter_context(Simulator(faults=Faults()))
            click.echo(f"PagerDuty simulator: {sim.url}")
            if demo:
                env["MONITAO_PD_CONFIG"] = str(_write_demo_config(workdir, sim))
                env["MONITAO_PD_DEMO_ROUTING_KEY"] = _random_routing_key()
                # the demo destination's REST credentials: the simulator's token and CA
                env["MONITAO_PD_DEMO_API_TOKEN"] = DEMO_API_TOKEN
                env["MONITAO_PD_REST_CA_FILE"] = sim.ca_file
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

            processes: list[FleetProcess] = []
            stack.callback(_stop_all, processes)
            processes.append(_spawn("worker", [f"--concurrency={concurrency}"], env, workdir))
            flower_port = _port(stack, FLOWER_PORT)
            user, password = "monitao", secrets.token_urlsafe(18)
            flower_env = dict(env, MONITAO_PD_FLOWER_USER=user,
                              MONITAO_PD_FLOWER_PASSWORD=password)
            processes.append(_spawn("flower", [f"--port={flower_port}"], flower_env, workdir))
            # The API gets the fleet's environment (the key ring, to seal routing keys it is
            # given), never Flower's password.
            api_port = _port(stack, API_PORT)
            api = _spawn("api", ["--host", "127.0.0.1", f"--port={api_port}"], env, workdir)
            processes.append(api)
            api_token = _run_token(settings, stack)
            stack.callback(click.echo, "stopping the fleet")
            click.echo(f"Logs: {workdir}/ (worker.log, flower.log, api.log, services.log: the "
                       "simulator and the webhook receiver)")

            if sample_to:
                _demo(settings, sample_to, sim if demo else None)
            if demo:
                _wait_for_window_sync(settings, sim)
            else:
                click.echo("Your MONITAO_PD_CONFIG is set: no sample sent "
                           "(use --sample-to NAME).")
            click.echo(f"\nFlower: http://127.0.0.1:{flower_port}  user: {user}  "
                       f"password: {password}")
            click.echo("(the password is shown once; it lasts as long as this run)")
            api_url = f"http://127.0.0.1:{api_port}"
            answering = _wait_for_health(api, api_url)
            click.echo(f"API: {api_url}  docs: {api_url}/docs  token: {api_token}")
            click.echo(f"Console: {api_url}/  (sign in with the token above)")
            click.echo("(the token is shown once; it has every scope and lasts as long as this "
                       "run" + (")" if answering else "; the API is not answering yet: "
                                "see api.log)"))
            if exit_after_demo:
                return 0
            click.echo(_how_to_use(settings, sim, api_url))
            click.echo("Fleet running. Press Ctrl-C to stop.")
            running = True
            exited = _wait_for_an_exit(processes)
            _report_exit(exited)
            return 1
    except KeyboardInterrupt:
        # The ExitStack stopped everything (its first callback ignores further Ctrl-Cs).
        click.echo(f"stopped; logs kept in {workdir}" if workdir else "stopped")
        return 0 if running else 130


def _ensure_redis(settings: Settings, stack: ExitStack) -> str:
    try:
        redis_client(settings).close()
        click.echo(f"Redis: {redact_url(settings.redis_url)}")
        return settings.redis_url
    except RedisUnavailableError:
        if settings.redis_url != defaults.REDIS_URL:
            raise  # a Redis the user chose is down: never swap in a private one silently
    embedded = stack.enter_context(EmbeddedRedis())
    click.echo(f"Redis: nothing at {defaults.REDIS_URL}; started an embedded one at "
               f"{embedded.url}")
    return embedded.url


@contextmanager
def _logging_to(path: Path) -> Iterator[None]:
    """This process's log records (the simulator's, the webhook receiver's) and warnings
    go to `path` instead of the terminal, for the duration."""
    root = logging.getLogger()
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    logging.captureWarnings(True)
    try:
        yield
    finally:
        logging.captureWarnings(False)
        root.setLevel(level)
        root.removeHandler(handler)
        handler.close()


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


def _write_demo_config(directory: Path, sim: Simulator) -> Path:
    """The demo's destinations file: one destination on the simulator, with REST
    credentials and a maintenance window tomorrow, which the workers synchronise to the
    simulated PagerDuty service."""
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).replace(hour=2, minute=0, second=0,
                                                                microsecond=0)
    path = directory / "destinations.toml"
    path.write_text(
        f"""[destinations.{DEMO_DESTINATION}]
routing_key_env = "MONITAO_PD_DEMO_ROUTING_KEY"
events_url = "{sim.events_url}"
source = "MoniTao"
pagerduty_service_id = "{DEMO_SERVICE}"
pagerduty_api_token_env = "MONITAO_PD_DEMO_API_TOKEN"
pagerduty_api_url = "{sim.rest_url}"

[[destinations.{DEMO_DESTINATION}.maintenance]]
id = "{DEMO_WINDOW}"
start = "{tomorrow.isoformat()}"
end = "{(tomorrow + timedelta(hours=1)).isoformat()}"
mode = "hold"
reason = "demo: tomorrow's deploy"
""",
        encoding="utf-8",
    )
    return path


def _wait_for_window_sync(settings: Settings, sim: Simulator) -> None:
    """Say how the demo's maintenance window stands at the simulated PagerDuty, once the
    workers synchronised it (or after a few seconds, as it stands)."""
    from config.lookup import DestinationLookup
    from worker.maintenance_windows import listing

    client, keys = redis_client(settings), Keyspace(settings.key_prefix)
    destinations = DestinationLookup(client, keys, file_destinations=load_destinations(
        settings.config, resolve_secrets=False))

    def demo_row() -> dict[str, Any]:
        return next(r for r in listing(client, keys, destinations) if r["id"] == DEMO_WINDOW)

    deadline = time.monotonic() + WINDOW_SYNC_WAIT_SECONDS
    row = demo_row()
    while row["sync"] != "synced" and time.monotonic() < deadline:
        time.sleep(0.2)
        row = demo_row()
    if row["sync"] == "synced":
        on_sim = [w for w in sim.maintenance_windows() if w["id"] == row["pagerduty_window_id"]]
        click.echo(f"\nMaintenance window {DEMO_WINDOW} ({row['when']}): synchronised to the "
                   f"simulated PagerDuty as window {row['pagerduty_window_id']} on service "
                   f"{DEMO_SERVICE}" + ("" if on_sim else " (not found there!)"))
    else:
        click.echo(f"\nMaintenance window {DEMO_WINDOW}: {row['sync']} (see worker.log)")


def _spawn(name: str, args: list[str], env: dict[str, str], workdir: Path) -> FleetProcess:
    # -P: nothing is imported from the directory `make run` was started in.
    log = workdir / f"{name}.log"
    with log.open("ab") as sink:
        process = subprocess.Popen([sys.executable, "-P", "-m", "cli.main", name, *args],
                                   env=env, stdin=subprocess.DEVNULL, stdout=sink,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    return FleetProcess(name, process, log)


def _port(stack: ExitStack, usual: int) -> int:
    """A service's usual port when this run can have it, else a free one. A lock held for
    the run's lifetime settles which of two runs started together gets it (both would see
    it free, and the second service would die on it)."""
    lock = (Path(tempfile.gettempdir()) / f"monitao-pd-run-port-{usual}.lock").open("a")
    stack.callback(lock.close)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return free_port()
    return free_port() if _port_busy(usual) else usual


def _run_token(settings: Settings, stack: ExitStack) -> str:
    """An API token of this run with every scope, stored only hashed under the run's
    prefix, and revoked when the run ends (the demo's keys all go then anyway)."""
    from config import tokens

    client = redis_client(settings, check=False)
    stack.callback(client.close)
    keys = Keyspace(settings.key_prefix)
    name = f"make-run-{secrets.token_hex(4)}"
    token, _ = tokens.create(client, keys, name, tokens.SCOPES)
    stack.callback(_revoke_quietly, client, keys, name)
    return token


def _revoke_quietly(client: redis.Redis, keys: Keyspace, name: str) -> None:
    from config import tokens

    try:
        tokens.revoke(client, keys, name)
    except (MonitaoPDError, redis.RedisError) as exc:
        click.echo(f"could not revoke this run's API token {name!r} "
                   f"({exc.__class__.__name__}): monitao-pd tokens revoke {name}", err=True)


def _wait_for_health(service: FleetProcess, url: str) -> bool:
    """Whether the service answers `GET /healthz` within API_START_TIMEOUT (False at once
    when it exited)."""
    import httpx

    deadline = time.monotonic() + API_START_TIMEOUT
    while time.monotonic() < deadline and service.process.poll() is None:
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return True
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    return False


def _port_busy(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _stop_all(processes: list[FleetProcess]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut this short
    for fleet_process in processes:
        if fleet_process.process.poll() is None:
            os.killpg(fleet_process.process.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    for fleet_process in processes:
        process = fleet_process.process
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)


def _delete_keys(settings: Settings, redis_url: str, prefix: str) -> None:
    """Delete every key under the demo's prefix at `redis_url`: its state and the broker's."""
    client = redis_client(settings, url=redis_url, check=False)
    try:
        keys = list(client.scan_iter(match=Keyspace(prefix).pattern, count=1000))
        for start in range(0, len(keys), 500):
            client.unlink(*keys[start:start + 500])
    except redis.RedisError as exc:
        click.echo(f"could not delete the demo's keys under {prefix!r} "
                   f"({exc.__class__.__name__})", err=True)
    finally:
        client.close()


def _wait_for_an_exit(processes: list[FleetProcess]) -> FleetProcess:
    while True:
        for fleet_process in processes:
            if fleet_process.process.poll() is not None:
                return fleet_process
        time.sleep(0.5)


def _report_exit(exited: FleetProcess) -> None:
    click.echo(f"{exited.name} exited (status {exited.process.returncode}); stopping the "
               f"fleet. The end of {exited.log}:", err=True)
    lines = exited.log.read_text(encoding="utf-8", errors="replace").splitlines()
    for line in lines[-LOG_TAIL_LINES:]:
        click.echo(f"  {line}", err=True)


def _how_to_use(settings: Settings, sim: Simulator, api_url: str) -> str:
    """The `export` lines that point the CLI at this fleet, the API with its token, and how
    to make it fail."""
    command = Path(sys.executable).with_name("monitao-pd")
    shown = os.path.relpath(command) if command.is_relative_to(Path.cwd()) else str(command)
    url = settings.redis_url
    exports = [
        f"  export MONITAO_PD_REDIS_URL={shlex.quote(url)}" if redact_url(url) == url else
        f"  export MONITAO_PD_REDIS_URL=...   # yours, {redact_url(url)}",
        f"  export MONITAO_PD_KEY_PREFIX={shlex.quote(settings.key_prefix)}",
    ]
    if settings.config is not None:
        exports.append(f"  export MONITAO_PD_CONFIG={shlex.quote(str(settings.config))}")
    faults = f"{sim.url}/_sim/faults"
    return "\n".join([
        "",
        "To use the CLI against this fleet, in another terminal:",
        *exports,
        f"  {shown} status            # or first: source .venv/bin/activate",
        f"  {shown} send --action trigger --monitor-id 7 --incident-id 1 --summary test",
        f"  {shown} timeline 1",
        f"  {shown} maintenance list   # the demo's window, synchronised to the simulator",
        "The HTTP API, with the token above (OpenAPI at /docs):",
        f"  curl -sS {api_url}/v1/destinations -H 'Authorization: Bearer TOKEN'",
        "To see retries and dead letters, make the simulated PagerDuty fail, then send:",
        f"  curl -X POST {faults} -d '{{\"force_status\": 500}}'   # retried, backing off",
        f"  curl -X POST {faults} -d '{{\"force_status\": 400}}'   # dead-lettered",
        f"  curl -X POST {faults} -d '{{\"force_status\": null}}'  # accepted again",
        f"  {shown} dlq list",
        "",
    ])


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
