"""deploy/observability/: the Prometheus alerting rules pass `promtool check rules` and their
unit tests (`promtool test rules`, at least one firing case per alert), and every PromQL
expression of the Grafana dashboard parses (promtool) and names only metrics the fleet
exports, read from the code's prometheus_client definitions.

promtool comes from Debian's `prometheus` package. Without it these tests are skipped with
one line saying how to get it; under `CI=true` they fail instead (.ci/run installs it).
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from api.metrics import ApiMetrics
from config.destinations import parse_destinations
from config.keyspace import Keyspace
from tests.deploy.helpers import DEPLOY
from worker.metrics import REGISTRY, RedisStateCollector

OBSERVABILITY = DEPLOY / "observability"
DASHBOARD = OBSERVABILITY / "grafana-dashboard.json"
RULES = OBSERVABILITY / "alerts.yaml"
RULE_TESTS = OBSERVABILITY / "alerts.test.yaml"
# PromQL words that are not metric names (operators, modifiers).
KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left",
            "group_right", "bool", "offset", "inf", "nan", "atan2", "le"}
# What the dashboard must show (the list), as the metric families it reads.
REQUIRED = {
    "delivery rate by outcome": "monitao_pd_attempts_total",
    "events by final state": "monitao_pd_events_finished_total",
    "latency percentiles": "monitao_pd_enqueue_to_delivered_seconds_bucket",
    "pending": "monitao_pd_pending_events",
    "oldest age": "monitao_pd_oldest_pending_age_seconds",
    "queue length": "monitao_pd_queue_length",
    "dead letters": "monitao_pd_dead_letters",
    "429s": "monitao_pd_throttled_attempts_total",
    "cooldowns": "monitao_pd_destination_cooldown_remaining_seconds",
    "circuits": "monitao_pd_circuit_state",
    "webhook results": "monitao_pd_webhooks_total",
}


def run(*args: str, cwd: Path = OBSERVABILITY) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=60,
                          check=False)


@pytest.fixture
def exported(redis_conn: redis.Redis, prefix: str) -> set[str]:
    """Every sample name the fleet can serve: the workers' counters and histograms, the
    fleet-wide gauges a worker reads from Redis at scrape time (all of them, the queue
    length's too), the webhook receiver's and the HTTP API's."""
    destinations = parse_destinations({"destinations": {"prod": {"routing_key": "k" * 32}}},
                                      environ={})
    state = RedisStateCollector(redis_conn, Keyspace(prefix), destinations, broker=redis_conn,
                                min_interval=0)
    names: set[str] = set()
    for source in (REGISTRY, ApiMetrics().registry):
        names |= sample_names(source.collect())
    names |= sample_names(state.collect())
    return names


def sample_names(families: Any) -> set[str]:
    """The sample names of metric families, as Prometheus stores them."""
    suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count",
                                                                   "_created"),
                "gauge": ("",), "summary": ("", "_sum", "_count", "_created")}
    return {family.name + suffix for family in families
            for suffix in suffixes.get(family.type, ("",))}


def dashboard_expressions(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, PromQL) of every query of the dashboard: its panels' targets (rows' too)
    and its template variables."""
    def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for item in items:
            yield item
            yield from panels(item.get("panels", []))

    for panel in panels(dashboard["panels"]):
        for target in panel.get("targets", []):
            yield f"panel {panel['title']!r} {target['refId']}", target["expr"]
    for variable in dashboard["templating"]["list"]:
        query = variable["query"]["query"] if isinstance(variable["query"], dict) else (
            variable["query"])
        match = re.fullmatch(r"label_values\((?P<metric>[^,]+),\s*\w+\)", query)
        assert match, f"variable {variable['name']}: not label_values(metric, label)"
        yield f"variable {variable['name']}", match["metric"]


def as_prometheus_sees_it(expression: str) -> str:
    """Grafana's variables replaced as Grafana does before sending the query."""
    return (expression.replace("$__rate_interval", "5m").replace("$__interval", "1m")
            .replace("$destination", ".*"))


def metric_names(expression: str) -> set[str]:
    """The metric names a PromQL expression selects (not functions, labels or keywords)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expression)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"(?<![A-Za-z0-9_:.])[A-Za-z_:][A-Za-z0-9_:]*", text):
        if text[match.end():].lstrip().startswith("(") or match.group() in KEYWORDS:
            continue
        names.add(match.group())
    return names


def test_the_metric_name_reader_reads_promql() -> None:
    assert metric_names('histogram_quantile(0.95, sum by (le, destination) (rate('
                        'monitao_pd_attempt_duration_seconds_bucket{destination=~"a|b"}[5m])))'
                        ) == {"monitao_pd_attempt_duration_seconds_bucket"}
    assert metric_names("max by (d) (a_x) / on (d) group_left max(b_y offset 1h) > bool 2e3"
                        ) == {"a_x", "b_y"}
    assert metric_names('absent(up{job="x"} == 1) or count(c) unless d') == {"up", "c", "d"}


def test_the_alert_rules_pass_promtool(promtool: str) -> None:
    checked = run(promtool, "check", "rules", RULES.name)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 6 rules found" in checked.stdout


def test_each_alert_has_unit_tests_that_fire_it_and_they_pass(promtool: str) -> None:
    rules = yaml.safe_load(RULES.read_text())
    alerts = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    assert alerts == {
        "MonitaoPDOldestPendingEventTooOld", "MonitaoPDDeadLettersGrowing",
        "MonitaoPDCircuitOpenTooLong", "MonitaoPDNoWorkerUp", "MonitaoPDSustained429s",
        "MonitaoPDWebhookSignatureFailures"}
    cases = [case for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]
             for case in test["alert_rule_test"]]
    fired = {case["alertname"] for case in cases if case["exp_alerts"]}
    quiet = {case["alertname"] for case in cases if not case["exp_alerts"]}
    assert fired == alerts and quiet == alerts  # each fires once, and each stays quiet once
    tested = run(promtool, "test", "rules", RULE_TESTS.name)
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_the_alerts_name_only_metrics_the_fleet_exports(exported: set[str]) -> None:
    rules = yaml.safe_load(RULES.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            unknown = metric_names(rule["expr"]) - exported
            assert not unknown, f"{rule['alert']}: {sorted(unknown)} not exported"


def test_every_dashboard_expression_parses_and_names_exported_metrics(
        promtool: str, exported: set[str], tmp_path: Path) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["__inputs"][0]["pluginId"] == "prometheus"  # asked for on import
    found = list(dashboard_expressions(dashboard))
    assert len(found) >= 20
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:expression_{index}", "expr": as_prometheus_sees_it(expr)}
        for index, (_, expr) in enumerate(found)]}]}
    (tmp_path / "dashboard.rules.yaml").write_text(yaml.safe_dump(rules))
    parsed = run(promtool, "check", "rules", "dashboard.rules.yaml", cwd=tmp_path)
    assert parsed.returncode == 0, parsed.stdout + parsed.stderr  # each names the expression
    used: set[str] = set()
    for where, expr in found:
        names = metric_names(as_prometheus_sees_it(expr))
        assert names, f"{where}: reads no metric"
        unknown = names - exported
        assert not unknown, f"{where}: {sorted(unknown)} is not a metric the fleet exports"
        used |= names
    missing = {what: name for what, name in REQUIRED.items() if name not in used}
    assert not missing, f"the dashboard lacks {missing}"


def test_a_metric_the_fleet_does_not_export_is_caught(exported: set[str]) -> None:
    # the check above would catch a renamed metric: what it compares against is real
    assert "monitao_pd_attempts_total" in exported
    assert "monitao_pd_queue_length" in exported and "monitao_pd_redis_up" in exported
    assert "monitao_pd_enqueue_to_delivered_seconds_bucket" in exported
    assert metric_names("rate(monitao_pd_deliveries_total[5m])") - exported == {
        "monitao_pd_deliveries_total"}
