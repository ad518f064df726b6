"""The HTTP API over real HTTP: `ApiService` (uvicorn in a thread) on the test Redis and
prefix, tokens made through `config/tokens.py`, and the simulator-backed destinations."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

import httpx
import pytest
import redis
from pydantic import SecretStr

from api.server import ApiService
from config import tokens
from config.destinations import Destination
from config.keyspace import Keyspace
from config.secrets import generate_key
from config.settings import Settings
from simulator import Simulator
from tests.cli.operate.support import two_destinations
from tests.conftest import Fleet

ALL_SCOPES = tuple(tokens.SCOPES)


@pytest.fixture
def destinations(sim: Simulator, routing_key: str) -> dict[str, Destination]:
    """`prod` and `staging` on the simulator (the API's and the fleet's view)."""
    return two_destinations(sim, routing_key)


@pytest.fixture
def key_ring() -> str:
    """`MONITAO_PD_SECRET_KEYS` of the API and the fleet: one new key."""
    return generate_key()


@pytest.fixture
def api_settings(settings: Settings, key_ring: str) -> Settings:
    """The test settings with the key ring (the API seals the routing keys it is given)."""
    return settings.model_copy(update={"secret_keys": SecretStr(key_ring)})


@pytest.fixture
def api(api_settings: Settings, destinations: dict[str, Destination]) -> Iterator[ApiService]:
    """The API served over HTTP on a free port."""
    with ApiService(api_settings, destinations) as service:
        yield service


@pytest.fixture
def fleet(make_fleet: Callable[..., AbstractContextManager[Fleet]],
          key_ring: str) -> Iterator[Fleet]:
    """The test fleet, able to open the routing keys the API seals."""
    with make_fleet(secret_keys=key_ring) as running:
        yield running


@pytest.fixture
def make_token(redis_conn: redis.Redis, prefix: str) -> Callable[..., str]:
    """`make_token(*scopes, name=...)`: a new token with those scopes."""
    made = iter(range(10_000))

    def make(*scopes: str, name: str | None = None) -> str:
        token, _ = tokens.create(redis_conn, Keyspace(prefix), name or f"t{next(made)}",
                                 scopes)
        return token

    return make


@pytest.fixture
def token(make_token: Callable[..., str]) -> str:
    """A token with every scope."""
    return make_token(*ALL_SCOPES, name="everything")


@pytest.fixture
def client(api: ApiService, token: str) -> Iterator[httpx.Client]:
    """An HTTP client of the API authenticated with every scope."""
    with httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {token}"},
                      timeout=60) as http:
        yield http


def problems(response: httpx.Response) -> list[str]:
    """The `problems` of a problem+json answer (and check that it is one)."""
    assert response.headers["content-type"] == "application/problem+json", response.text
    body = response.json()
    assert body["status"] == response.status_code
    return list(body["problems"])



@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path, redis_url: str, prefix: str,
            routing_key: str, sim: Simulator):
    """`monitao-pd` pointed at the test Redis and prefix, both destinations configured."""
    from tests.cli.operate.support import write_cli_env

    return write_cli_env(monkeypatch, tmp_path, redis_url, prefix, routing_key, sim)
