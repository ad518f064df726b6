"""Fixtures: a running webhook receiver (uvicorn in a thread) on the test Redis and prefix."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from config.settings import Settings, load_settings
from tests.conftest import FAST
from webhooks import WebhookService

SECRET_A = "whsec-test-A-6f1c0e9b2d7a"
SECRET_B = "whsec-test-B-93aa51c07e4d"


@pytest.fixture
def webhook_settings(redis_url: str, prefix: str) -> Settings:
    """Settings with two subscription secrets (a rotation in progress)."""
    return load_settings(redis_url=redis_url, key_prefix=prefix,
                         webhook_secrets=f"{SECRET_A},{SECRET_B}", **FAST)


@pytest.fixture
def receiver(webhook_settings: Settings) -> Iterator[WebhookService]:
    """The receiver and its processor, serving on a free port."""
    with WebhookService(webhook_settings, claim_idle_seconds=60, block_seconds=0.2) as service:
        yield service
