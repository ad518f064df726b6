"""`monitao-pd health`: is the fleet (or this host's worker) alive? For probes and people.

Exit 0 only when Redis answers (the state Redis and the broker) and at least one worker
replies to a Celery ping within `--timeout`; with `--local`, a worker on this host
(node name `...@HOSTNAME`). It prints one line, `ok: ...` or `unhealthy: ...`, and exits 1
when unhealthy (2 for a configuration error, as every command). `--wait N` keeps checking
for up to N seconds, for start-up ordering (systemd's ExecStartPost, deploy scripts).
The image's HEALTHCHECK, the compose file, Kubernetes' probes and systemd use it.
"""

from __future__ import annotations

import socket
import time

import click
import redis
from kombu.exceptions import OperationalError

from config.connections import redact_urls, redis_client, refused_configuration
from config.errors import RedisUnavailableError
from config.settings import Settings, load_settings
from config.text import printable
from worker.fleet_state import ping_workers

DEFAULT_TIMEOUT = 3.0
# With --wait, how long to pause between two checks.
WAIT_INTERVAL = 1.0


@click.command()
@click.option("--local", is_flag=True,
              help="only a worker on this host counts (node name ending in @HOSTNAME)")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=DEFAULT_TIMEOUT,
              show_default=True, help="seconds to wait for Redis and for worker replies")
@click.option("--wait", type=click.FloatRange(min=0), default=0, show_default=True,
              help="keep checking for up to this many seconds until healthy (start-up)")
def health(local: bool, timeout: float, wait: float) -> int:
    """Exit 0 when Redis answers and a worker replies (--local: a worker on this host)."""
    settings = load_settings()
    deadline = time.monotonic() + wait
    healthy, message = check(settings, local=local, timeout=timeout)
    while not healthy and time.monotonic() < deadline:
        time.sleep(min(WAIT_INTERVAL, max(0.0, deadline - time.monotonic())))
        healthy, message = check(settings, local=local, timeout=timeout)
    click.echo(f"{'ok' if healthy else 'unhealthy'}: {printable(message)}", err=not healthy)
    return 0 if healthy else 1


def check(settings: Settings, *, local: bool = False, timeout: float = DEFAULT_TIMEOUT,
          hostname: str | None = None) -> tuple[bool, str]:
    """(healthy, one-line reason) for the fleet described by `settings`."""
    try:
        redis_client(settings, timeout=timeout).close()
    except RedisUnavailableError as exc:
        return False, str(exc)
    try:
        replies = ping_workers(settings, timeout=timeout,
                               hostname=(hostname or socket.gethostname()) if local else None)
    except (OperationalError, OSError) as exc:
        # a database the broker does not have, or no Redis at all there: not "unhealthy"
        if isinstance(exc.__cause__, redis.ResponseError | redis.exceptions.InvalidResponse):
            raise refused_configuration("MONITAO_PD_BROKER_URL", settings.celery_broker_url,
                                        exc.__cause__) from None
        return False, (f"cannot reach the broker at {redact_urls(settings.celery_broker_url)} "
                       f"({exc.__class__.__name__}: {exc})")
    if local:
        host = hostname or socket.gethostname()
        if not replies:
            return False, (f"Redis answers, but no worker on this host ({host}) replied "
                           f"within {timeout:g} s")
        return True, f"Redis answers, {_workers(len(replies))} on this host ({host}) " + (
            "replies" if len(replies) == 1 else "reply")
    if not replies:
        return False, f"Redis answers, but no worker replied within {timeout:g} s"
    return True, f"Redis answers, {_workers(len(replies))} " + (
        "replies" if len(replies) == 1 else "reply")


def _workers(count: int) -> str:
    return f"{count} worker" + ("" if count == 1 else "s")
