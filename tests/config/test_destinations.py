"""Destinations: parsing dicts and TOML files, resolving routing keys, never showing them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from config.destinations import (
    DEFAULT_SEVERITY_MAP,
    REGION_EVENTS_URLS,
    Destination,
    load_destinations,
    parse_destinations,
)
from config.errors import ConfigurationError
from config.secrets import fingerprint

# Fake routing keys: right shape (32 letters or digits), obviously not real.
KEY = "R" * 32
OTHER_KEY = "A1" * 16
US_URL = "https://events.pagerduty.com/v2/enqueue"
EU_URL = "https://events.eu.pagerduty.com/v2/enqueue"


def one(name: str = "prod", **fields: Any) -> dict[str, Any]:
    """A document with one destination table."""
    return {"destinations": {name: fields}}


def problems(document: dict[str, Any], environ: dict[str, str] | None = None,
             **kwargs: Any) -> list[str]:
    with pytest.raises(ConfigurationError) as excinfo:
        parse_destinations(document, environ=environ or {}, **kwargs)
    return excinfo.value.problems


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "destinations.toml"
    path.write_text(text, encoding="utf-8")
    return path


# --- routing keys ----------------------------------------------------------------------------


def test_inline_routing_key() -> None:
    destination = parse_destinations(one(routing_key=KEY), environ={})["prod"]
    assert destination.name == "prod"
    assert destination.secret() == KEY
    assert destination.routing_key_env is None


def test_routing_key_env_resolved_from_given_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    # The process environment holds another value: only the mapping given is consulted.
    monkeypatch.setenv("PD_KEY_PROD", OTHER_KEY)
    destination = parse_destinations(
        one(routing_key_env="PD_KEY_PROD"), environ={"PD_KEY_PROD": KEY}
    )["prod"]
    assert destination.secret() == KEY
    assert destination.routing_key_env == "PD_KEY_PROD"


def test_routing_key_env_missing_names_the_variable() -> None:
    (problem,) = problems(one(routing_key_env="PD_KEY_PROD"), environ={"OTHER": KEY})
    assert problem.startswith("destinations.prod")
    assert "$PD_KEY_PROD" in problem
    assert "not set" in problem


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"routing_key": KEY, "routing_key_env": "PD_KEY_PROD"}, "not both"),
        ({}, "routing_key or routing_key_env is required"),
        ({"routing_key_env": ""}, "must name an environment variable"),
    ],
)
def test_routing_key_configuration_problems(fields: dict[str, Any], expected: str) -> None:
    found = problems(one(**fields), environ={"PD_KEY_PROD": KEY})
    assert any(p.startswith("destinations.prod") and expected in p for p in found), found
    assert not any(KEY in p for p in found)


@pytest.mark.parametrize(
    "bad_key",
    [
        "R" * 31,
        "R" * 33,
        "A1" * 20,
        "R" * 16 + "-" * 16,  # right length, not letters or digits
        "",
    ],
)
@pytest.mark.parametrize("where", ["inline", "env"])
def test_malformed_routing_key_refused_without_showing_it(bad_key: str, where: str) -> None:
    if where == "inline":
        document, environ = one(routing_key=bad_key), {}
    else:
        document, environ = one(routing_key_env="PD_KEY_PROD"), {"PD_KEY_PROD": bad_key}
    found = problems(document, environ)
    assert len(found) == 1, found
    assert found[0].startswith("destinations.prod")
    assert "routing_key must be 32 letters or digits" in found[0]
    assert f"got {len(bad_key)} characters" in found[0]
    if bad_key:
        assert bad_key not in found[0]
        assert bad_key[:8] not in found[0]


def test_non_string_routing_key_refused_without_showing_it() -> None:
    found = problems(one(routing_key=12345678901234567890123456789012))
    assert found
    assert all(p.startswith("destinations.prod") for p in found)
    assert not any("1234567890" in p for p in found)


@pytest.mark.parametrize(
    "document",
    [one(routing_key_env=OTHER_KEY), one(integration_key=OTHER_KEY)],
    ids=["key-in-routing_key_env", "key-under-misspelt-field"],
)
def test_misplaced_routing_key_not_echoed(document: dict[str, Any]) -> None:
    found = problems(document)
    assert found
    assert not any(OTHER_KEY in p for p in found), found


def test_resolve_secrets_false_needs_no_routing_key() -> None:
    destinations = parse_destinations(
        {"destinations": {
            "bare": {},
            "by_env": {"routing_key_env": "PD_KEY_NOT_SET"},
            "inline": {"routing_key": KEY},
        }},
        environ={},
        resolve_secrets=False,
    )
    assert set(destinations) == {"bare", "by_env", "inline"}
    for destination in destinations.values():
        assert destination.routing_key is None
        assert destination.describe_routing_key().startswith("not resolved")
        with pytest.raises(ConfigurationError):
            destination.secret()
    assert destinations["by_env"].routing_key_env == "PD_KEY_NOT_SET"


# --- regions and URLs ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "url"),
    [
        ({}, US_URL),
        ({"region": "us"}, US_URL),
        ({"region": "eu"}, EU_URL),
        ({"region": "eu", "events_url": "http://127.0.0.1:8080/v2/enqueue"},
         "http://127.0.0.1:8080/v2/enqueue"),
        ({"events_url": "https://pd-proxy.internal/v2/enqueue"},
         "https://pd-proxy.internal/v2/enqueue"),
    ],
)
def test_destination_url(fields: dict[str, Any], url: str) -> None:
    assert parse_destinations(one(routing_key=KEY, **fields), environ={})["prod"].url == url


def test_region_urls_are_pagerduty_endpoints() -> None:
    assert REGION_EVENTS_URLS == {"us": US_URL, "eu": EU_URL}


@pytest.mark.parametrize("region", ["ap", "EU", ""])
def test_invalid_region_names_field_and_value(region: str) -> None:
    (problem,) = problems(one(routing_key=KEY, region=region))
    assert problem.startswith("destinations.prod.region: ")
    assert repr(region) in problem


@pytest.mark.parametrize("field", ["events_url", "client_url"])
@pytest.mark.parametrize("value", ["ftp://pd.example/v2/enqueue", "events.pagerduty.com"])
def test_non_http_urls_refused(field: str, value: str) -> None:
    (problem,) = problems(one(routing_key=KEY, **{field: value}))
    assert problem.startswith(f"destinations.prod.{field}: ")
    assert repr(value) in problem


# --- other fields ----------------------------------------------------------------------------


def test_unknown_field_named() -> None:
    (problem,) = problems(one(routing_key=KEY, colour="blue"))
    assert problem.startswith("destinations.prod.colour: ")


def test_unknown_top_level_table_named() -> None:
    found = problems({"destinations": {"prod": {"routing_key": KEY}}, "destination": {}})
    assert found == ["destinations: unknown top-level table [destination]"]


@pytest.mark.parametrize(
    ("severity_map", "field"),
    [
        ({"major": "high"}, "severity_map.major"),
        ({"critical": "critical", "minor": "Warning"}, "severity_map.minor"),
        ({}, "severity_map"),
    ],
)
def test_bad_severity_map(severity_map: dict[str, str], field: str) -> None:
    (problem,) = problems(one(routing_key=KEY, severity_map=severity_map))
    assert problem.startswith(f"destinations.prod.{field}: ")


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"rate_limit_per_minute": 0}, "rate_limit_per_minute"),
        ({"rate_limit_per_minute": "fast"}, "rate_limit_per_minute"),
        ({"source": ""}, "source"),
        ({"client": "x" * 256}, "client"),
    ],
)
def test_field_constraints(fields: dict[str, Any], field: str) -> None:
    (problem,) = problems(one(routing_key=KEY, **fields))
    assert problem.startswith(f"destinations.prod.{field}: ")


@pytest.mark.parametrize("name", ["bad name", "x" * 65, "prod.eu"])
def test_invalid_destination_name(name: str) -> None:
    (problem,) = problems(one(name, routing_key=KEY))
    assert problem.startswith(f"destinations.{name}.name: ")


def test_custom_severity_map_replaces_default() -> None:
    destination = parse_destinations(
        one(routing_key=KEY, severity_map={"p1": "critical", "p3": "warning"}), environ={}
    )["prod"]
    assert destination.severity_for("p1") == "critical"
    assert destination.severity_for("p3") == "warning"
    with pytest.raises(KeyError):
        destination.severity_for("major")


@pytest.mark.parametrize(
    ("level", "severity"),
    [("critical", "critical"), ("major", "error"), ("minor", "warning"), ("info", "info")],
)
def test_default_severity_map(level: str, severity: str) -> None:
    destination = parse_destinations(one(routing_key=KEY), environ={})["prod"]
    assert destination.severity_for(level) == severity
    assert DEFAULT_SEVERITY_MAP[level] == severity


def test_default_severity_map_not_shared_between_destinations() -> None:
    destinations = parse_destinations(
        {"destinations": {"a": {"routing_key": KEY}, "b": {"routing_key": OTHER_KEY}}},
        environ={},
    )
    assert destinations["a"].severity_map is not destinations["b"].severity_map
    assert destinations["a"].severity_map is not DEFAULT_SEVERITY_MAP


def test_not_a_table() -> None:
    assert problems({"destinations": {"prod": "R" * 32}}) == ["destinations.prod: must be a table"]


# --- all problems at once --------------------------------------------------------------------


def test_several_problems_reported_at_once() -> None:
    document = {
        "destinations": {
            "prod": {"routing_key": KEY, "region": "ap", "colour": "blue"},
            "staging": {"routing_key_env": "PD_KEY_STAGING"},
            "eu": {"routing_key": "short", "severity_map": {"major": "high"}},
        }
    }
    with pytest.raises(ConfigurationError) as excinfo:
        parse_destinations(document, environ={})
    found = excinfo.value.problems
    assert len(found) == 5, found
    assert sum(p.startswith("destinations.prod.") for p in found) == 2
    assert sum(p.startswith("destinations.staging") for p in found) == 1
    assert sum(p.startswith("destinations.eu") for p in found) == 2
    # one "  - " line per problem in the message
    assert str(excinfo.value).count("\n  - ") == 5


# --- files -----------------------------------------------------------------------------------


def test_load_file(tmp_path: Path) -> None:
    path = write(tmp_path, f"""
[destinations.prod]
routing_key_env = "PD_KEY_PROD"
region = "eu"
source = "monitao-prod"
rate_limit_per_minute = 60

[destinations.prod.severity_map]
critical = "critical"
p1 = "error"

[destinations.staging]
routing_key = "{OTHER_KEY}"
""")
    destinations = load_destinations(path, environ={"PD_KEY_PROD": KEY})
    assert set(destinations) == {"prod", "staging"}
    prod = destinations["prod"]
    assert prod.secret() == KEY
    assert prod.url == EU_URL
    assert prod.source == "monitao-prod"
    assert prod.rate_limit_per_minute == 60
    assert prod.severity_map == {"critical": "critical", "p1": "error"}
    assert destinations["staging"].secret() == OTHER_KEY
    assert destinations["staging"].url == US_URL


def test_load_file_accepts_str_path(tmp_path: Path) -> None:
    path = write(tmp_path, f'[destinations.prod]\nrouting_key = "{KEY}"\n')
    assert load_destinations(str(path), environ={})["prod"].secret() == KEY


def test_load_file_uses_process_environment_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MONITAO_TEST_PD_KEY", KEY)
    path = write(tmp_path, '[destinations.prod]\nrouting_key_env = "MONITAO_TEST_PD_KEY"\n')
    assert load_destinations(path)["prod"].secret() == KEY


def test_file_problems_all_reported(tmp_path: Path) -> None:
    path = write(tmp_path, """
[destinations.prod]
routing_key_env = "PD_KEY_PROD"
region = "mars"

[destinations.backup]
routing_key = "tooshort"
colour = "red"
""")
    with pytest.raises(ConfigurationError) as excinfo:
        load_destinations(path, environ={})
    found = excinfo.value.problems
    assert len(found) == 4, found
    assert any("destinations.prod.region" in p and "'mars'" in p for p in found)
    assert any("$PD_KEY_PROD" in p for p in found)
    assert any("destinations.backup.colour" in p for p in found)
    assert not any("tooshort" in p for p in found)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    with pytest.raises(ConfigurationError) as excinfo:
        load_destinations(path, environ={})
    assert excinfo.value.problems == [f"{path}: file not found"]


def test_no_file_configured() -> None:
    with pytest.raises(ConfigurationError) as excinfo:
        load_destinations(None, environ={})
    (problem,) = excinfo.value.problems
    assert problem.startswith("MONITAO_PD_CONFIG: ")


def test_invalid_toml(tmp_path: Path) -> None:
    path = write(tmp_path, f'[destinations.prod\nrouting_key = "{KEY}"\n')
    with pytest.raises(ConfigurationError) as excinfo:
        load_destinations(path, environ={})
    (problem,) = excinfo.value.problems
    assert problem.startswith(f"{path}: not valid TOML")
    assert KEY not in problem


@pytest.mark.parametrize(
    "text",
    [
        "",
        "[destinations]\n",
        "[other]\nx = 1\n",
        'destinations = "prod"\n',
    ],
    ids=["empty", "empty-table", "other-table", "not-a-table"],
)
def test_no_destinations_table(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigurationError) as excinfo:
        load_destinations(path, environ={})
    assert f"{path}: no [destinations.NAME] table" in excinfo.value.problems


def test_load_file_without_secrets(tmp_path: Path) -> None:
    path = write(tmp_path, '[destinations.prod]\nrouting_key_env = "PD_KEY_PROD"\n')
    destination = load_destinations(path, environ={}, resolve_secrets=False)["prod"]
    assert destination.routing_key is None
    assert destination.severity_for("major") == "error"


# --- the key is never shown ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "environ", "description"),
    [
        ({"routing_key": KEY}, {}, "set, 32 characters, inline, sha256 " + fingerprint(KEY)),
        ({"routing_key_env": "PD_KEY_PROD"}, {"PD_KEY_PROD": KEY},
         "set, 32 characters, from $PD_KEY_PROD, sha256 " + fingerprint(KEY)),
    ],
)
def test_key_never_shown(fields: dict[str, Any], environ: dict[str, str],
                         description: str) -> None:
    destination = parse_destinations(one(**fields), environ=environ)["prod"]
    assert destination.describe_routing_key() == description
    for text in (
        destination.describe_routing_key(),
        repr(destination),
        str(destination),
        f"{destination}",
        destination.model_dump_json(),
        repr(destination.model_dump()),
    ):
        assert KEY not in text
        assert KEY[:8] not in text
    assert destination.secret() == KEY


def test_destination_is_frozen() -> None:
    destination = parse_destinations(one(routing_key=KEY), environ={})["prod"]
    assert isinstance(destination, Destination)
    with pytest.raises(ValueError):
        destination.region = "eu"  # type: ignore[misc]
    assert destination.url == US_URL
