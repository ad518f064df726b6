"""Redis URLs in every form: each password hidden in every message, and `?password=` (which
redis-py reads but made Celery fail with "multiple values for 'password'") working for the
state Redis and the broker alike."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from cli.main import main
from config.connections import celery_broker_options, redis_client
from config.destinations import Destination
from config.embedded_redis import free_port, redis_server_binary
from config.errors import ConfigurationError, RedisUnavailableError
from config.settings import credentials_in_user_part, load_settings, redact_url
from tests.conftest import FAST, wait_until
from tests.deploy.test_redis_ha import deliver_through

PASSWORD = "hunter2:with/odd@chars"
QUOTED = "hunter2%3Awith%2Fodd%40chars"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (f"redis://127.0.0.1:6379/0?password={QUOTED}", "redis://127.0.0.1:6379/0?password=***"),
        ("redis://h/0?socket_timeout=3&password=pw&db=1",
         "redis://h/0?socket_timeout=3&password=***&db=1"),
        ("redis://h/0?PassWord=pw", "redis://h/0?PassWord=***"),
        ("rediss://u:pw@h:6380/0?ssl_cert_reqs=required&password=pw2",
         "rediss://u:***@h:6380/0?ssl_cert_reqs=required&password=***"),
        ("sentinel://:pw@h1:26379/0;sentinel://h2:26379?password=pw2",
         "sentinel://:***@h1:26379/0;sentinel://h2:26379?password=***"),
        ("redis://:pa;ss@h:6379/0", "redis://:***@h:6379/0"),
        ("unix:///run/redis.sock?password=pw", "unix:///run/redis.sock?password=***"),
        ("redis://u:pw@[::1", "redis://u:***@[::1"),
        ("redis://[::1/0?password=pw", "redis://[::1/0?password=***"),
        ("https://h/v2/enqueue?token=tok", "https://h/v2/enqueue?token=***"),
    ],
)
def test_redact_url_hides_every_form_of_password(url: str, shown: str) -> None:
    assert redact_url(url) == shown


@pytest.mark.parametrize(
    ("url", "normalised"),
    [
        (f"redis://127.0.0.1:6379/0?password={QUOTED}",
         f"redis://:{QUOTED}@127.0.0.1:6379/0"),
        ("redis://h/0?username=app&password=pw&socket_timeout=3",
         "redis://app:pw@h/0?socket_timeout=3"),
        ("redis://app@h/0?password=pw", "redis://app:pw@h/0"),
        ("redis://:pw@h/0?password=pw", "redis://:pw@h/0"),
        ("sentinel://h1:1?password=pw;sentinel://h2:2", "sentinel://:pw@h1:1;sentinel://h2:2"),
        ("unix:///run/redis.sock?password=pw&db=2", "unix://:pw@/run/redis.sock?db=2"),
        ("redis://:pw@h/0?db=2", "redis://:pw@h/0?db=2"),
        ("redis://:pw@h/0?username=app", "redis://app:pw@h/0"),
    ],
)
def test_query_credentials_move_to_the_user_part(url: str, normalised: str) -> None:
    assert credentials_in_user_part(url) == normalised
    master = {"redis_sentinel_master": "m"} if url.startswith("sentinel") else {}
    assert load_settings(redis_url=url, **master).redis_url == normalised
    assert load_settings(broker_url=url, **master).broker_url == normalised


@pytest.mark.parametrize("url", ["redis://:first-pw@h/0?password=second-pw",
                                 "redis://h/0?password=first-pw&password=second-pw"])
def test_two_different_passwords_are_refused_without_showing_either(url: str) -> None:
    with pytest.raises(ConfigurationError) as excinfo:
        load_settings(redis_url=url)
    [problem] = excinfo.value.problems
    assert problem.startswith("MONITAO_PD_REDIS_URL: 'redis://")
    assert "gives the password twice, with different values: give it once" in problem
    assert "first-pw" not in problem and "second-pw" not in problem


def test_a_bad_url_setting_is_echoed_redacted() -> None:
    with pytest.raises(ConfigurationError) as excinfo:
        load_settings(callback_url="ftp://user:cb-secret@monitao.example/hook?token=t0k",
                      callback_secret="x")
    [problem] = excinfo.value.problems
    assert "cb-secret" not in problem and "t0k" not in problem
    assert "ftp://user:***@monitao.example/hook?token=***" in problem


def test_the_broker_options_celery_gets_parse() -> None:
    """kombu refused `?password=` ("multiple values for keyword argument 'password'")."""
    from kombu import Connection

    settings = load_settings(redis_url=f"redis://127.0.0.1:6379/0?password={QUOTED}")
    connection = Connection(celery_broker_options(settings)["broker_url"])
    assert connection.password == PASSWORD and connection.hostname == "127.0.0.1"


@pytest.mark.parametrize("command", [["health"], ["timeline", "x"], ["status"]], ids=" ".join)
def test_unreachable_redis_message_hides_a_query_password(
    command: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("MONITAO_PD_REDIS_URL", f"redis://127.0.0.1:{free_port()}/0?password="
                                               f"{QUOTED}")
    assert main(command) != 0
    captured = capsys.readouterr()
    text = captured.out + captured.err
    assert "127.0.0.1" in text and "Traceback" not in text
    for form in (PASSWORD, QUOTED, "hunter2"):
        assert form not in text


def test_a_client_error_names_the_url_without_its_query_password() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0?password={QUOTED}"
    with pytest.raises(RedisUnavailableError) as excinfo:
        redis_client(url, timeout=0.5)
    assert "hunter2" not in str(excinfo.value) and "password=***" in str(excinfo.value)


@pytest.fixture
def protected_redis(tmp_path: Path) -> Iterator[int]:
    """A redis-server of this test's own that requires PASSWORD; its port."""
    port = free_port()
    log = (tmp_path / "redis.log").open("wb")
    process = subprocess.Popen(
        [redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--requirepass", PASSWORD], stdout=log, stderr=subprocess.STDOUT)
    try:
        def answers() -> bool:
            try:
                return bool(redis.Redis(port=port, password=PASSWORD, socket_timeout=1).ping())
            except redis.RedisError:
                return False

        wait_until(answers, 10, message="the password-protected redis-server")
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()


def test_a_delivery_with_the_password_as_a_query_parameter(
    protected_redis: int, prefix: str, destinations: dict[str, Destination],
) -> None:
    url = f"redis://127.0.0.1:{protected_redis}/0?password={QUOTED}"
    settings = load_settings(redis_url=url, key_prefix=prefix, **FAST)
    deliver_through(settings, destinations)  # producer, broker, worker and state, all of them
