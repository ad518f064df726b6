"""`load_settings()`: defaults, MONITAO_PD_* variables, overrides and readable errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from config import defaults
from config.errors import ConfigurationError
from config.settings import Settings, load_settings, redact_url


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No MONITAO_PD_* variable of the machine running the tests leaks into them."""
    for name in list(os.environ):
        if name.upper().startswith("MONITAO_PD_"):
            monkeypatch.delenv(name)


def problems_of(excinfo: pytest.ExceptionInfo[ConfigurationError]) -> list[str]:
    return excinfo.value.problems


# --- defaults ------------------------------------------------------------------------------


def test_defaults() -> None:
    settings = load_settings()
    assert isinstance(settings, Settings)
    assert settings.redis_url == "redis://127.0.0.1:6379/0"
    assert settings.key_prefix == "monitao-pd:"
    assert settings.broker_url is None
    assert settings.config is None
    assert settings.retry_base_seconds == defaults.RETRY_BASE_SECONDS
    assert settings.retry_cap_seconds == defaults.RETRY_CAP_SECONDS
    assert settings.lease_seconds == defaults.LEASE_SECONDS
    assert settings.visibility_timeout == defaults.VISIBILITY_TIMEOUT
    assert settings.worker_pool == "threads"


def test_defaults_are_mutually_consistent() -> None:
    """The shipped defaults themselves pass the cross-field checks, with room to spare."""
    longest_attempt = defaults.HTTP_CONNECT_TIMEOUT + defaults.HTTP_READ_TIMEOUT
    assert defaults.RETRY_CAP_SECONDS >= defaults.RETRY_BASE_SECONDS
    assert longest_attempt < defaults.LEASE_SECONDS
    assert defaults.PASS_SECONDS + longest_attempt < defaults.VISIBILITY_TIMEOUT


def test_settings_are_frozen() -> None:
    settings = load_settings()
    with pytest.raises(ValueError):
        settings.redis_url = "redis://elsewhere:6379/0"  # type: ignore[misc]
    assert settings.redis_url == defaults.REDIS_URL


# --- environment and overrides ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "value", "attribute", "expected"),
    [
        ("MONITAO_PD_REDIS_URL", "redis://cache.internal:6380/3", "redis_url",
         "redis://cache.internal:6380/3"),
        ("MONITAO_PD_BROKER_URL", "redis://broker:6379/1", "broker_url", "redis://broker:6379/1"),
        ("MONITAO_PD_KEY_PREFIX", "staging-pd:", "key_prefix", "staging-pd:"),
        ("MONITAO_PD_CONFIG", "/etc/monitao/pd.toml", "config", Path("/etc/monitao/pd.toml")),
        ("MONITAO_PD_RETRY_BASE_SECONDS", "2.5", "retry_base_seconds", 2.5),
        ("MONITAO_PD_RETRY_CAP_SECONDS", "120", "retry_cap_seconds", 120.0),
        ("MONITAO_PD_WORKER_CONCURRENCY", "8", "worker_concurrency", 8),
        ("MONITAO_PD_WORKER_POOL", "solo", "worker_pool", "solo"),
        ("MONITAO_PD_VISIBILITY_TIMEOUT", "600", "visibility_timeout", 600),
        ("MONITAO_PD_FLOWER_USER", "ops", "flower_user", "ops"),
    ],
)
def test_environment_overrides_default(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, attribute: str, expected: object
) -> None:
    assert getattr(load_settings(), attribute) != expected
    monkeypatch.setenv(variable, value)
    assert getattr(load_settings(), attribute) == expected


def test_variable_without_prefix_is_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://wrong:1/0")
    monkeypatch.setenv("KEY_PREFIX", "wrong:")
    settings = load_settings()
    assert settings.redis_url == defaults.REDIS_URL
    assert settings.key_prefix == defaults.KEY_PREFIX


@pytest.mark.parametrize(
    ("variable", "env_value", "keyword", "override"),
    [
        ("MONITAO_PD_REDIS_URL", "redis://from-env:6379/0", "redis_url",
         "redis://from-kwarg:6379/0"),
        ("MONITAO_PD_KEY_PREFIX", "env:", "key_prefix", "kwarg:"),
        ("MONITAO_PD_RETRY_BASE_SECONDS", "7", "retry_base_seconds", 3.0),
        ("MONITAO_PD_WORKER_POOL", "prefork", "worker_pool", "solo"),
    ],
)
def test_keyword_override_wins_over_environment(
    monkeypatch: pytest.MonkeyPatch, variable: str, env_value: str, keyword: str,
    override: object,
) -> None:
    monkeypatch.setenv(variable, env_value)
    assert getattr(load_settings(**{keyword: override}), keyword) == override


def test_keyword_override_does_not_hide_other_environment_values(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MONITAO_PD_KEY_PREFIX", "env:")
    settings = load_settings(redis_url="redis://kw:6379/0")
    assert settings.key_prefix == "env:"
    assert settings.redis_url == "redis://kw:6379/0"


# --- invalid values --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("MONITAO_PD_RETRY_BASE_SECONDS", "abc"),
        ("MONITAO_PD_RETRY_BASE_SECONDS", "-1"),
        ("MONITAO_PD_RETRY_CAP_SECONDS", "0"),
        ("MONITAO_PD_DISPATCH_BATCH", "0"),
        ("MONITAO_PD_WORKER_CONCURRENCY", "many"),
        ("MONITAO_PD_WORKER_POOL", "gevent"),
        ("MONITAO_PD_VISIBILITY_TIMEOUT", "5"),
        ("MONITAO_PD_LEASE_SECONDS", "0.5"),
        ("MONITAO_PD_KEY_PREFIX", "monitao*"),
    ],
)
def test_invalid_environment_value_names_variable_and_value(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigurationError) as excinfo:
        load_settings()
    problems = problems_of(excinfo)
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{variable}: ")
    assert repr(value) in problems[0]
    # The exception text lists the same line, so an operator sees it in the traceback.
    assert problems[0] in str(excinfo.value)


def test_every_invalid_value_gets_its_own_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MONITAO_PD_RETRY_BASE_SECONDS", "abc")
    monkeypatch.setenv("MONITAO_PD_DISPATCH_BATCH", "0")
    monkeypatch.setenv("MONITAO_PD_WORKER_POOL", "gevent")
    with pytest.raises(ConfigurationError) as excinfo:
        load_settings()
    problems = problems_of(excinfo)
    assert len(problems) == 3, problems
    assert {p.split(":", 1)[0] for p in problems} == {
        "MONITAO_PD_RETRY_BASE_SECONDS",
        "MONITAO_PD_DISPATCH_BATCH",
        "MONITAO_PD_WORKER_POOL",
    }
    assert str(excinfo.value).count("\n  - ") == 3


def test_invalid_keyword_override_is_reported_with_its_variable_name() -> None:
    with pytest.raises(ConfigurationError) as excinfo:
        load_settings(retry_base_seconds=-1)
    assert problems_of(excinfo) == [
        "MONITAO_PD_RETRY_BASE_SECONDS: Input should be greater than 0 (got -1)"
    ]


@pytest.mark.parametrize("prefix", ["monitao*", "a?", "pd[1]", "with space", "*"])
def test_key_prefix_with_glob_or_space_refused(prefix: str) -> None:
    with pytest.raises(ConfigurationError) as excinfo:
        load_settings(key_prefix=prefix)
    (problem,) = problems_of(excinfo)
    assert problem.startswith("MONITAO_PD_KEY_PREFIX: ")
    assert "glob" in problem


@pytest.mark.parametrize("prefix", ["", "x" * 65])
def test_key_prefix_length_bounds(prefix: str) -> None:
    with pytest.raises(ConfigurationError) as excinfo:
        load_settings(key_prefix=prefix)
    assert problems_of(excinfo)[0].startswith("MONITAO_PD_KEY_PREFIX: ")


# --- cross-field checks ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "expected_words"),
    [
        (
            {"retry_base_seconds": 10, "retry_cap_seconds": 5},
            ["retry_cap_seconds", "retry_base_seconds"],
        ),
        (
            # equal to connect + read (5 + 10) is not enough: the lease must outlive an attempt
            {"lease_seconds": 15},
            ["lease_seconds (15)", "http_connect_timeout + http_read_timeout (15), by 1 s"],
        ),
        (
            # the reproduction: lease 3 s, connect 1 s, read 1 s and a stalled DNS
            # lookup took the attempt past the lease; 2 s + 1 s of margin fits exactly
            {"lease_seconds": 2.9, "http_connect_timeout": 1, "http_read_timeout": 1},
            ["lease_seconds (2.9)", "(2), by 1 s"],
        ),
        (
            {"lease_seconds": 20, "http_connect_timeout": 10, "http_read_timeout": 20},
            ["lease_seconds (20)", "(30)"],
        ),
        (
            # pass 20 + one attempt 15 = 35
            {"visibility_timeout": 30},
            ["visibility_timeout (30)", "pass_seconds + one attempt (35)"],
        ),
        (
            {"visibility_timeout": 35},
            ["visibility_timeout (35)", "(35)"],
        ),
    ],
)
def test_cross_field_problem_is_one_clear_line(
    overrides: dict[str, object], expected_words: list[str]
) -> None:
    with pytest.raises(ConfigurationError) as excinfo:
        load_settings(**overrides)
    problems = problems_of(excinfo)
    assert len(problems) == 1, problems
    line = problems[0]
    assert "\n" not in line
    for words in expected_words:
        assert words in line


@pytest.mark.parametrize(
    "overrides",
    [
        {"retry_base_seconds": 5, "retry_cap_seconds": 5},
        {"lease_seconds": 16},  # connect 5 + read 10 + the 1 s margin
        {"visibility_timeout": 36},
    ],
)
def test_cross_field_boundaries_accepted(overrides: dict[str, object]) -> None:
    settings = load_settings(**overrides)
    for name, value in overrides.items():
        assert getattr(settings, name) == value


def test_all_cross_field_problems_reported_at_once() -> None:
    with pytest.raises(ConfigurationError) as excinfo:
        load_settings(retry_base_seconds=10, retry_cap_seconds=5, lease_seconds=2)
    text = "\n".join(problems_of(excinfo))
    assert "retry_cap_seconds" in text
    assert "lease_seconds" in text


# --- URLs ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://user:secret@cache:6379/0", "redis://user:***@cache:6379/0"),
        ("redis://:secret@cache:6379/0", "redis://:***@cache:6379/0"),
        ("rediss://user:secret@cache:6380/1?ssl_cert_reqs=none",
         "rediss://user:***@cache:6380/1?ssl_cert_reqs=none"),
        ("http://user:secret@127.0.0.1/v2/enqueue", "http://user:***@127.0.0.1/v2/enqueue"),
    ],
)
def test_redact_url_hides_password(url: str, expected: str) -> None:
    redacted = redact_url(url)
    assert redacted == expected
    assert "secret" not in redacted


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:6379/0",
        "redis://user@cache:6379/0",
        "https://events.pagerduty.com/v2/enqueue",
        "unix:///var/run/redis.sock",
    ],
)
def test_redact_url_leaves_url_without_password_unchanged(url: str) -> None:
    assert redact_url(url) == url


def test_redact_url_keeps_ipv6_brackets() -> None:
    assert redact_url("redis://user:secret@[::1]:6379/0") == "redis://user:***@[::1]:6379/0"


def test_celery_broker_url_falls_back_to_redis_url() -> None:
    settings = load_settings(redis_url="redis://cache:6379/2")
    assert settings.broker_url is None
    assert settings.celery_broker_url == "redis://cache:6379/2"


def test_celery_broker_url_prefers_broker_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MONITAO_PD_BROKER_URL", "redis://broker:6379/5")
    settings = load_settings(redis_url="redis://cache:6379/2")
    assert settings.celery_broker_url == "redis://broker:6379/5"


@pytest.mark.parametrize(("url", "problem"), [
    ("redis://cache:6379/zero", "database 'zero' in 'redis://cache:6379/zero' is not a number"),
    ("redis://:s3cret@cache:6379/x", "database 'x' in 'redis://:***@cache:6379/x' is not a"),
    ("redis://cache:port/0", "not a valid URL (Port could not be cast"),
    ("redis://cache:99999/0", "not a valid URL (Port out of range"),
    ("redis://[::1/0", "not a valid URL (Invalid IPv6 URL)"),
    ("redis:/cache", "'redis:/cache' names no host"),
    ("http://cache:6379/0", "must be redis://host[:port][/db], rediss://..., unix://path or "
                            "sentinel://... (scheme 'http://')"),
    ("cache:6379", "must be redis://host[:port][/db], rediss://"),
    (":s3cret@cache:6379", "must be redis://host[:port][/db], rediss://...,"),
    ("unix://", "'unix://' names no socket path"),
])
@pytest.mark.parametrize("variable", ["REDIS_URL", "BROKER_URL"])
def test_a_malformed_redis_url_is_refused_naming_its_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, url: str, problem: str
) -> None:
    monkeypatch.setenv(f"MONITAO_PD_{variable}", url)
    with pytest.raises(ConfigurationError) as excinfo:
        load_settings()
    [line] = excinfo.value.problems
    assert line.startswith(f"MONITAO_PD_{variable}: {problem}")
    assert "s3cret" not in line


@pytest.mark.parametrize("url", [
    "redis://cache", "redis://cache:6380", "redis://cache:6379/", "redis://u:p@cache:6379/15",
    "rediss://cache:6380/1?ssl_cert_reqs=required", "unix:///var/run/redis.sock",
    "redis://[::1]:6379/0",
])
def test_well_formed_redis_urls_are_accepted(url: str) -> None:
    assert load_settings(redis_url=url).redis_url == url
