"""Redis for production: `rediss://` (TLS) and Redis Sentinel, for the state and the broker.

Parsing and the options given to redis-py and Celery are unit-tested; then a real Sentinel
and a real TLS Redis (the machine's redis-server, certificates made by openssl) carry a
delivery end to end: producer, broker, worker, state.
"""

from __future__ import annotations

import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import redis
from celery.app.utils import filter_hidden_settings
from celery.contrib.testing.worker import start_worker
from kombu import Connection
from kombu.utils import json as kombu_json
from redis.sentinel import SentinelConnectionPool, SentinelManagedSSLConnection

from cli import health_command
from config import defaults
from config.connections import redacted_broker_info, redis_client, sentinel_broker_url
from config.destinations import Destination
from config.embedded_redis import free_port, redis_server_binary
from config.errors import ConfigurationError, RedisUnavailableError
from config.settings import SentinelURL, Settings, load_settings, parse_sentinel_url
from producer import AlertProducer
from tests.conftest import FAST, wait_until
from worker.app import celery_config, create_app

# --- parsing ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("url", "expected"), [
    ("sentinel://h1:26379;sentinel://h2:26380/0",
     SentinelURL((("h1", 26379), ("h2", 26380)), db=0)),
    ("sentinel://h1;sentinel://h2/3", SentinelURL((("h1", 26379), ("h2", 26379)), db=3)),
    ("sentinel://:s%40cret@h1:1/2;sentinel://h2:2",
     SentinelURL((("h1", 1), ("h2", 2)), db=2, password="s@cret")),
    ("sentinel://app:pw@h1:1/4;sentinel://app:pw@h2:2/4",
     SentinelURL((("h1", 1), ("h2", 2)), db=4, username="app", password="pw")),
    ("sentinel://[::1]:26379", SentinelURL((("::1", 26379),), db=0)),
])
def test_parse_sentinel_url(url: str, expected: SentinelURL) -> None:
    assert parse_sentinel_url(url) == expected


@pytest.mark.parametrize(("url", "reason"), [
    ("sentinel://h1/1;sentinel://h2/2", "different dbs"),
    ("sentinel://:a@h1;sentinel://:b@h2", "different passwords"),
    ("sentinel://h1;redis://h2", r"is not sentinel://host\[:port\]"),
    ("sentinel://h1/zero", "is not a number"),
    ("sentinel://h1:port", "invalid port"),
])
def test_parse_sentinel_url_refuses(url: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_sentinel_url(url)


def test_broker_url_puts_credentials_and_db_where_kombu_reads_them() -> None:
    """kombu takes password and database from the first element only."""
    url = sentinel_broker_url(parse_sentinel_url("sentinel://h1:1;sentinel://:p%3Bw@h2:2/5"))
    assert url == "sentinel://:p%3Bw@h1:1/5;sentinel://h2:2"
    connection = Connection(url)
    assert connection.transport_cls == "sentinel"
    assert connection.virtual_host == "5" and connection.password == "p;w"
    assert connection.alt == ["sentinel://:p%3Bw@h1:1/5", "sentinel://h2:2"]


# --- settings --------------------------------------------------------------------------------


def problems(**overrides: object) -> list[str]:
    with pytest.raises(ConfigurationError) as excinfo:
        load_settings(**overrides)
    return excinfo.value.problems


def test_sentinel_url_needs_the_master_name() -> None:
    [line] = problems(redis_url="sentinel://h1:26379;sentinel://h2:26379/0")
    assert "MONITAO_PD_REDIS_SENTINEL_MASTER is required when MONITAO_PD_REDIS_URL is a " \
           "sentinel:// URL" in line
    [line] = problems(broker_url="sentinel://h1:26379")
    assert "when MONITAO_PD_BROKER_URL is a sentinel:// URL" in line


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    ca = tmp_path / "ca.crt"
    ca.write_text("not read until a connection is made")
    monkeypatch.setenv("MONITAO_PD_REDIS_URL", "sentinel://h1:26379;sentinel://h2:26379/0")
    monkeypatch.setenv("MONITAO_PD_REDIS_SENTINEL_MASTER", "monitao")
    monkeypatch.setenv("MONITAO_PD_REDIS_SENTINEL_PASSWORD", "sentinel-secret")
    monkeypatch.setenv("MONITAO_PD_REDIS_SENTINEL_TLS", "true")
    monkeypatch.setenv("MONITAO_PD_REDIS_TLS_CA_FILE", str(ca))
    settings = load_settings()
    assert settings.redis_sentinel_master == "monitao"
    assert settings.redis_sentinel_tls is True
    assert settings.redis_tls_ca_file == ca
    assert "sentinel-secret" not in repr(settings)


def test_misplaced_redis_settings_are_refused(tmp_path: Path) -> None:
    ca = tmp_path / "ca.crt"
    ca.write_text("x")
    assert any("MONITAO_PD_REDIS_SENTINEL_MASTER is set but neither" in p
               for p in problems(redis_sentinel_master="m"))
    assert any("MONITAO_PD_REDIS_SENTINEL_TLS is set" in p
               for p in problems(redis_sentinel_tls=True))
    assert any("files are set but no Redis URL uses TLS" in p
               for p in problems(redis_tls_ca_file=ca))
    assert any("go together" in p for p in problems(
        redis_url="rediss://h:6380/0", redis_tls_cert_file=ca))
    [line] = problems(redis_url="rediss://h:6380/0", redis_tls_ca_file=tmp_path / "missing.crt")
    assert line.startswith("MONITAO_PD_REDIS_TLS_CA_FILE:")
    assert any("is not a number" in p for p in problems(
        redis_url="sentinel://h1/x", redis_sentinel_master="m"))


# --- what redis-py and Celery are given ------------------------------------------------------


@pytest.fixture
def tls_files(tmp_path: Path) -> dict[str, Path]:
    files = {}
    for name in ("ca", "cert", "key"):
        files[name] = tmp_path / f"{name}.pem"
        files[name].write_text("placeholder")
    return files


def test_rediss_state_client_verifies_with_the_given_files(tls_files: dict[str, Path]) -> None:
    settings = load_settings(redis_url="rediss://:pw@redis.example:6380/2",
                             redis_tls_ca_file=tls_files["ca"],
                             redis_tls_cert_file=tls_files["cert"],
                             redis_tls_key_file=tls_files["key"])
    client = redis_client(settings, check=False)
    pool = client.connection_pool
    assert pool.connection_class is redis.SSLConnection
    kwargs = pool.connection_kwargs
    assert kwargs["ssl_cert_reqs"] == "required"
    assert kwargs["ssl_ca_certs"] == str(tls_files["ca"])
    assert kwargs["ssl_certfile"] == str(tls_files["cert"])
    assert kwargs["ssl_keyfile"] == str(tls_files["key"])
    assert (kwargs["host"], kwargs["port"], kwargs["db"]) == ("redis.example", 6380, 2)


def test_rediss_broker_always_verifies(tls_files: dict[str, Path]) -> None:
    """Without broker_use_ssl, kombu would connect to rediss:// with CERT_NONE."""
    plain = celery_config(load_settings(redis_url="rediss://redis.example:6380/0"))
    assert plain["broker_use_ssl"] == {"ssl_cert_reqs": ssl.CERT_REQUIRED}
    config = celery_config(load_settings(redis_url="rediss://redis.example:6380/0",
                                         redis_tls_ca_file=tls_files["ca"]))
    assert config["broker_url"] == "rediss://redis.example:6380/0"
    assert config["broker_use_ssl"] == {"ssl_cert_reqs": ssl.CERT_REQUIRED,
                                        "ssl_ca_certs": str(tls_files["ca"])}
    assert config["broker_transport_options"]["global_keyprefix"] == "monitao-pd:"
    assert "broker_use_ssl" not in celery_config(load_settings())


def test_sentinel_state_client_asks_the_sentinels_for_the_master(
    tls_files: dict[str, Path],
) -> None:
    settings = load_settings(
        redis_url="sentinel://:master-pw@s1:26379;sentinel://s2:26380/3",
        redis_sentinel_master="monitao", redis_sentinel_password="sentinel-pw",
        redis_sentinel_tls=True, redis_tls_ca_file=tls_files["ca"])
    client = redis_client(settings, check=False)
    pool = client.connection_pool
    assert isinstance(pool, SentinelConnectionPool)
    assert pool.service_name == "monitao"
    assert pool.connection_class is SentinelManagedSSLConnection
    assert pool.connection_kwargs["db"] == 3
    assert pool.connection_kwargs["password"] == "master-pw"
    assert pool.connection_kwargs["ssl_ca_certs"] == str(tls_files["ca"])
    sentinels = pool.sentinel_manager.sentinels
    addresses = [(s.connection_pool.connection_kwargs["host"],
                  s.connection_pool.connection_kwargs["port"]) for s in sentinels]
    assert addresses == [("s1", 26379), ("s2", 26380)]
    sentinel_kwargs = sentinels[0].connection_pool.connection_kwargs
    assert sentinel_kwargs["password"] == "sentinel-pw"
    assert sentinels[0].connection_pool.connection_class is redis.SSLConnection


def test_sentinel_broker_options_and_nothing_secret_shown(tls_files: dict[str, Path]) -> None:
    settings = load_settings(
        redis_url="sentinel://s1:26379;sentinel://:master-pw@s2:26380/3",
        redis_sentinel_master="monitao", redis_sentinel_password="sentinel-pw",
        redis_sentinel_tls=True, redis_tls_ca_file=tls_files["ca"])
    config = celery_config(settings)
    assert config["broker_url"] == "sentinel://:master-pw@s1:26379/3;sentinel://s2:26380"
    options = config["broker_transport_options"]
    assert options["master_name"] == "monitao"
    assert options["global_keyprefix"] == settings.key_prefix
    assert options["visibility_timeout"] == settings.visibility_timeout
    provider = options["sentinel_kwargs"]["credential_provider"]
    assert provider.get_credentials() == ("sentinel-pw",)
    assert "password" not in options["sentinel_kwargs"]
    assert options["sentinel_kwargs"]["ssl"] is True
    assert options["sentinel_kwargs"]["ssl_ca_certs"] == str(tls_files["ca"])
    assert config["broker_use_ssl"]["ssl_cert_reqs"] == ssl.CERT_REQUIRED
    # What Flower's config tab and `celery report` show, and the options as printed or
    # as a worker's JSON reply carries them: neither password.
    for shown in (repr(filter_hidden_settings(config)), repr(config),
                  kombu_json.dumps(options)):
        assert "sentinel-pw" not in shown
    assert "master-pw" not in repr(filter_hidden_settings(config))


def test_redacted_broker_info_hides_every_password_it_carries() -> None:
    info = {
        "hostname": "127.0.0.1", "userid": "app", "password": "master-pw", "port": 26379,
        "transport_options": {"master_name": "m", "global_keyprefix": "p:",
                              "sentinel_kwargs": {"password": "s-pw", "socket_timeout": 1.0,
                                                  "credential_provider": object()},
                              "ssl": {"ssl_keyfile": "/etc/key.pem"}},
        "alternates": ["sentinel://app:master-pw@h1:1/0", "sentinel://h2:2?password=x"],
        "credential_provider": None, "login_method": "",
    }
    shown = redacted_broker_info(info)
    assert "password" not in shown and "master-pw" not in repr(shown)
    assert shown["transport_options"]["sentinel_kwargs"] == {
        "password": "********", "socket_timeout": 1.0, "credential_provider": "********"}
    assert shown["alternates"] == ["sentinel://app:***@h1:1/0", "sentinel://h2:2?password=***"]
    assert shown["transport_options"]["ssl"] == {"ssl_keyfile": "/etc/key.pem"}
    assert (shown["credential_provider"], shown["login_method"]) == (None, "")
    assert shown["transport_options"]["global_keyprefix"] == "p:"


def test_a_sentinel_url_string_without_settings_is_a_clear_error() -> None:
    with pytest.raises(ConfigurationError, match="needs MONITAO_PD_REDIS_SENTINEL_MASTER"):
        redis_client("sentinel://:pw@s1:26379", check=False)


# --- real servers ----------------------------------------------------------------------------

STARTUP = 10.0


class ServerExited(Exception):
    """The server process ended before it was ready; `output` is what it printed."""

    def __init__(self, output: str) -> None:
        super().__init__(output[-500:])
        self.output = output


def _start(args: list[str], ready: Callable[[], bool], what: str, log: Path,
           servers: list[subprocess.Popen[bytes]]) -> None:
    """Start a server, its output to `log`; poll `ready` until it holds (bounded)."""
    with log.open("wb") as out:
        process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
    servers.append(process)
    deadline = time.monotonic() + STARTUP
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServerExited(log.read_text(errors="replace"))
        try:
            if ready():
                return
        except (redis.RedisError, OSError):
            pass
        time.sleep(0.05)
    pytest.fail(f"{what} did not start within {STARTUP:.0f} s: {log.read_text()[-500:]}")


@pytest.fixture
def servers() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        process.terminate()
    for process in started:
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def deliver_through(settings: Settings, destinations: dict[str, Destination]) -> None:
    """One trigger and its resolve, sent, published, consumed and delivered via `settings`."""
    app = create_app(settings, destinations)
    app.conf.worker_hijack_root_logger = False
    state = redis_client(settings)
    producer = AlertProducer(settings, destinations=destinations, redis=state, celery_app=app)
    try:
        with start_worker(app, pool="threads", concurrency=4, perform_ping_check=False,
                          loglevel="WARNING", shutdown_timeout=30):
            ids = producer.send_many([
                {"action": "trigger", "monitor_id": 1, "incident_id": 2, "summary": "down"},
                {"action": "resolve", "monitor_id": 1, "incident_id": 2},
            ])

            def delivered() -> bool:
                return all(state.hget(f"{settings.key_prefix}event:{i}", "state") == "delivered"
                           for i in ids)

            wait_until(delivered, timeout=30, message="both events to be delivered")
            healthy, message = health_command.check(settings, timeout=1.0)
            assert healthy, message
    finally:
        app.fleet.close()
        state.close()


def test_a_delivery_through_redis_sentinel(
    servers: list[subprocess.Popen[bytes]], tmp_path: Path, prefix: str,
    destinations: dict[str, Destination],
) -> None:
    binary = redis_server_binary()
    master_port, sentinel_port = free_port(), free_port()
    _start([binary, "--port", str(master_port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no"],
           lambda: redis.Redis(port=master_port, socket_timeout=1).ping(), "redis master",
           tmp_path / "master.log", servers)
    conf = tmp_path / "sentinel.conf"  # Sentinel rewrites its file: it must be writable
    conf.write_text(f"port {sentinel_port}\nbind 127.0.0.1\ndir {tmp_path}\n"
                    f"sentinel monitor monitao 127.0.0.1 {master_port} 1\n")

    def sentinel_knows_master() -> bool:
        answer = redis.Redis(port=sentinel_port, socket_timeout=1).execute_command(
            "SENTINEL", "get-master-addr-by-name", "monitao")
        return bool(answer) and int(answer[1]) == master_port

    _start([binary, str(conf), "--sentinel"], sentinel_knows_master, "sentinel",
           tmp_path / "sentinel.log", servers)

    # The first element is a Sentinel that is down: the client goes on to the next one.
    url = f"sentinel://127.0.0.1:{free_port()};sentinel://127.0.0.1:{sentinel_port}/0"
    settings = load_settings(redis_url=url, redis_sentinel_master="monitao", key_prefix=prefix,
                             **FAST)
    client = redis_client(settings)
    client.set(f"{prefix}probe", "via sentinel")
    assert redis.Redis(port=master_port, decode_responses=True).get(f"{prefix}probe") == (
        "via sentinel")
    deliver_through(settings, destinations)
    # The broker's queue lives on the master too, under the prefix.
    keys = redis.Redis(port=master_port, decode_responses=True).keys(f"{prefix}*")
    assert f"{prefix}_kombu.binding.deliver" in keys


MASTER_PASSWORD, SENTINEL_PASSWORD = "master-Pw-4417", "sentinel-Pw-9023"
# What Flower asks every worker (flower/inspector.py), and `report`.
INSPECTED = ("stats", "conf", "report", "active_queues", "registered", "scheduled", "active",
             "reserved", "revoked", "ping")


@pytest.fixture
def protected_sentinel(servers: list[subprocess.Popen[bytes]], tmp_path: Path) -> str:
    """A master and a Sentinel, both with a password; the fleet's sentinel:// URL (a
    second element names a Sentinel that is down: Celery lists both as `alternates`)."""
    binary = redis_server_binary()
    master_port, sentinel_port = free_port(), free_port()
    _start([binary, "--port", str(master_port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--requirepass", MASTER_PASSWORD],
           lambda: redis.Redis(port=master_port, password=MASTER_PASSWORD,
                               socket_timeout=1).ping(),
           "redis master", tmp_path / "master.log", servers)
    conf = tmp_path / "sentinel.conf"
    conf.write_text(f"port {sentinel_port}\nbind 127.0.0.1\ndir {tmp_path}\n"
                    f"sentinel monitor monitao 127.0.0.1 {master_port} 1\n"
                    f"sentinel auth-pass monitao {MASTER_PASSWORD}\n"
                    f"requirepass {SENTINEL_PASSWORD}\n")

    def sentinel_knows_master() -> bool:
        answer = redis.Redis(port=sentinel_port, password=SENTINEL_PASSWORD,
                             socket_timeout=1).execute_command(
            "SENTINEL", "get-master-addr-by-name", "monitao")
        return bool(answer) and int(answer[1]) == master_port

    _start([binary, str(conf), "--sentinel"], sentinel_knows_master, "sentinel",
           tmp_path / "sentinel.log", servers)
    return (f"sentinel://:{MASTER_PASSWORD}@127.0.0.1:{sentinel_port}/0;"
            f"sentinel://127.0.0.1:{free_port()}")


@pytest.mark.slow
def test_no_password_in_any_inspect_reply_or_flower_page(
    protected_sentinel: str, prefix: str, destinations: dict[str, Destination],
    tmp_path: Path,
) -> None:
    sentinel = {"redis_url": protected_sentinel, "redis_sentinel_master": "monitao",
                "redis_sentinel_password": SENTINEL_PASSWORD, "key_prefix": prefix}
    settings = load_settings(**sentinel, **FAST)
    app = create_app(settings, destinations)
    app.conf.worker_hijack_root_logger = False
    flower_port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MONITAO_PD_")}
    env.update({f"MONITAO_PD_{k.upper()}": v for k, v in sentinel.items()},
               MONITAO_PD_FLOWER_USER="oncall", MONITAO_PD_FLOWER_PASSWORD="flower-pw-1")
    flower = None
    try:
        with start_worker(app, pool="threads", concurrency=2, perform_ping_check=False,
                          loglevel="WARNING", shutdown_timeout=30) as worker:
            inspect = app.control.inspect(timeout=5, destination=[worker.hostname])
            replies = {name: getattr(inspect, name)() for name in INSPECTED}
            assert all(replies.values()), replies  # every command was answered
            text = kombu_json.dumps(replies)
            assert MASTER_PASSWORD not in text and SENTINEL_PASSWORD not in text
            broker = replies["stats"][worker.hostname]["broker"]
            assert broker["transport_options"]["sentinel_kwargs"]["credential_provider"] == (
                "********")
            assert broker["alternates"][0].startswith("sentinel://:***@127.0.0.1:")

            log = (tmp_path / "flower.log").open("wb")
            flower = subprocess.Popen(
                [sys.executable, "-m", "cli.main", "flower", f"--port={flower_port}"],
                cwd=Path(__file__).resolve().parents[2], env=env, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True)
            log.close()
            base, auth = f"http://127.0.0.1:{flower_port}", ("oncall", "flower-pw-1")

            def workers_page() -> str | None:
                assert flower is not None and flower.poll() is None, (
                    (tmp_path / "flower.log").read_text())
                try:
                    answer = httpx.get(f"{base}/api/workers?refresh=1", auth=auth, timeout=10)
                except httpx.TransportError:
                    return None
                return answer.text if worker.hostname in answer.text else None

            pages = [wait_until(workers_page, 60, 0.2, "Flower to list the worker")]
            for path in (f"/worker/{worker.hostname}", f"/api/workers?workername="
                         f"{worker.hostname}", "/broker", "/workers"):
                answer = httpx.get(f"{base}{path}", auth=auth, timeout=10)
                assert answer.status_code == 200, (path, answer.text[:300])
                pages.append(answer.text)
            assert "transport_options" in pages[1]  # the worker page shows the broker
            # Flower reached the broker through the Sentinel with the hidden password
            assert f'<tr id="{defaults.QUEUE_NAME}">' in pages[3]
            for page in pages:
                assert MASTER_PASSWORD not in page and SENTINEL_PASSWORD not in page
    finally:
        if flower is not None:
            os.killpg(flower.pid, signal.SIGTERM)
            try:
                flower.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(flower.pid, signal.SIGKILL)
                flower.wait(timeout=10)
        app.fleet.close()


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


@pytest.fixture
def certificates(tmp_path: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, made by openssl."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed: cannot make test certificates")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "1",
             "-subj", "/CN=monitao-test-ca", cwd=tmp_path)
    (tmp_path / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name in ("server", "client"):
        _openssl("req", "-new", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr",
                 "-subj", f"/CN={name}", cwd=tmp_path)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                 "-CAcreateserial", "-out", f"{name}.crt", "-days", "1",
                 "-extfile", "san.ext", cwd=tmp_path)
    return {name: tmp_path / name for name in (
        "ca.crt", "server.crt", "server.key", "client.crt", "client.key")}


def test_a_delivery_over_tls_with_a_client_certificate(
    servers: list[subprocess.Popen[bytes]], certificates: dict[str, Path], prefix: str,
    destinations: dict[str, Destination],
) -> None:
    binary = shutil.which("redis-server") or redis_server_binary()
    probe = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10)
    if "v=6" not in probe.stdout and "v=7" not in probe.stdout:
        pytest.skip(f"{binary} is not Redis 6 or 7: {probe.stdout.strip()}")
    port = free_port()
    c = certificates

    def answers() -> bool:
        return bool(redis.Redis(host="127.0.0.1", port=port, ssl=True,
                                ssl_ca_certs=str(c["ca.crt"]), ssl_certfile=str(c["client.crt"]),
                                ssl_keyfile=str(c["client.key"]), socket_timeout=1).ping())

    try:
        _start([binary, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--tls-cert-file", str(c["server.crt"]),
                "--tls-key-file", str(c["server.key"]), "--tls-ca-cert-file", str(c["ca.crt"]),
                "--tls-auth-clients", "yes"],
               answers, "TLS redis-server", c["ca.crt"].with_name("tls.log"), servers)
    except ServerExited as exc:
        if "tls" in exc.output.lower():  # "Bad directive" or "TLS not supported"
            pytest.skip(f"{binary} was built without TLS: {exc.output.strip()[-200:]}")
        raise

    url = f"rediss://127.0.0.1:{port}/0"
    settings = load_settings(redis_url=url, key_prefix=prefix, redis_tls_ca_file=c["ca.crt"],
                             redis_tls_cert_file=c["client.crt"],
                             redis_tls_key_file=c["client.key"], **FAST)
    deliver_through(settings, destinations)

    # The server's certificate is checked: without our CA, the system's CAs refuse it.
    unverified = load_settings(redis_url=url, key_prefix=prefix,
                               redis_tls_cert_file=c["client.crt"],
                               redis_tls_key_file=c["client.key"])
    with pytest.raises(RedisUnavailableError, match="certificate verify failed"):
        redis_client(unverified, timeout=2)
    healthy, message = health_command.check(unverified, timeout=1.0)
    assert not healthy and "certificate verify failed" in message
