"""The operator commands' tests run against two destinations and a CLI environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli.operate.support import two_destinations, write_cli_env


@pytest.fixture
def destinations(sim, routing_key):
    return two_destinations(sim, routing_key)


@pytest.fixture
def cli_env(monkeypatch, tmp_path, redis_url, prefix, routing_key, sim) -> Path:
    return write_cli_env(monkeypatch, tmp_path, redis_url, prefix, routing_key, sim)
