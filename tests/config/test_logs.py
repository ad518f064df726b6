"""Log records escaped at creation: no value in a message, its arguments or an exception's
text can start a log line of its own or reach a terminal raw."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from config.errors import ConfigurationError
from config.logs import LOG_FORMAT, configure_logging, escape_log_records, escape_record

FORGED = "[2030-01-01 00:00:00,000: ERROR/MainProcess] forged line"
CELERY_FORMAT = "[%(asctime)s: %(levelname)s/%(processName)s] %(message)s"


@pytest.fixture
def fresh_factory() -> Iterator[None]:
    """The process's record factory as Python ships it, restored afterwards."""
    previous = logging.getLogRecordFactory()
    logging.setLogRecordFactory(logging.LogRecord)
    yield
    logging.setLogRecordFactory(previous)


@pytest.fixture
def written(fresh_factory: None) -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger writing Celery's line format to a buffer, with escaping installed."""
    escape_log_records()
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(logging.Formatter(CELERY_FORMAT))
    logger = logging.getLogger("tests.config.test_logs")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    yield logger, buffer
    logger.removeHandler(handler)
    logger.propagate = True


def record(msg: object, *args: object) -> logging.LogRecord:
    return logging.LogRecord("x", logging.INFO, __file__, 1, msg, args or None, None)


class Hostile:
    def __str__(self) -> str:
        return "str\nforged"

    def __repr__(self) -> str:
        return "repr\x1b[2J"


@pytest.mark.parametrize(
    ("msg", "args", "message"),
    [
        ("ended %s: %s", ("id1", f"HTTP 400: bad\n{FORGED}"),
         f"ended id1: HTTP 400: bad\\n{FORGED}"),
        ("attempt %d in %.1f ms: %s", (3, 2.25, "x\ry"), "attempt 3 in 2.2 ms: x\\ry"),
        ("%(agent)s acknowledged %(n)d", ({"agent": "J\x1b[2J", "n": 1},),
         "J\\x1b[2J acknowledged 1"),
        ("objects %s %r %s", (Hostile(), Hostile(), b"\n"),
         "objects str\\nforged repr\\x1b[2J b'\\n'"),
        ("error %s", (ValueError("line1\nline2"),), "error line1\\nline2"),
        (ValueError("a message\u2028that is an exception"), (),
         "a message\\u2028that is an exception"),
        ("nothing to escape %s", ("plain",), "nothing to escape plain"),
    ],
)
def test_escape_record_escapes_the_message_and_its_arguments(
    msg: object, args: tuple[object, ...], message: str
) -> None:
    escaped = escape_record(record(msg, *args))
    assert escaped.getMessage() == message


def test_arguments_keep_their_shape_for_formatters_that_read_them() -> None:
    """uvicorn's access formatter unpacks `record.args`; a tuple must stay a tuple."""
    escaped = escape_record(record('%s - "%s" %d', "127.0.0.1:5", "GET /\x1b[2J", 200))
    assert isinstance(escaped.args, tuple) and escaped.args[2] == 200
    assert escaped.getMessage() == '127.0.0.1:5 - "GET /\\x1b[2J" 200'


def test_a_bad_format_string_is_left_for_the_handler_to_report() -> None:
    broken = record("%d apples", "not a number\n")
    assert escape_record(broken) is broken and broken.args == ("not a number\n",)


def test_every_record_is_one_line_and_a_traceback_keeps_its_own_lines(
    written: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, buffer = written
    logger.warning("event %s ended dead_lettered: %s", "e1", f"HTTP 400: x\n{FORGED}\x1b[2J")
    try:
        try:
            raise KeyError(f"inner\n{FORGED}")
        except KeyError as exc:
            raise RuntimeError(f"outer\r\n{FORGED}") from exc
    except RuntimeError:
        logger.exception("delivery of %s failed", "slot\nforged")
    lines = buffer.getvalue().splitlines()
    assert not any(line.startswith(FORGED) for line in lines), lines
    assert "\x1b" not in buffer.getvalue()
    assert lines[0].endswith(f"HTTP 400: x\\n{FORGED}\\x1b[2J")
    assert lines[1].endswith("delivery of slot\\nforged failed")
    assert lines[2] == "Traceback (most recent call last):"
    assert f"KeyError: 'inner\\n{FORGED}'" in lines
    assert "The above exception was the direct cause of the following exception:" in lines
    assert lines[-1] == f"RuntimeError: outer\\r\\n{FORGED}"
    assert sum(line.startswith("  File ") for line in lines) == 2


def test_installing_twice_escapes_once(fresh_factory: None) -> None:
    escape_log_records()
    installed = logging.getLogRecordFactory()
    escape_log_records()
    assert logging.getLogRecordFactory() is installed
    made = installed("x", logging.INFO, __file__, 1, "%s", ("a\nb",), None)
    assert made.getMessage() == "a\\nb"


def test_a_worker_installs_it_as_it_starts(fresh_factory: None) -> None:
    """`celery -A worker.app worker` does not go through the CLI's `main`."""
    from celery import signals

    import worker.app  # noqa: F401 - connects the signal

    assert logging.getLogRecordFactory() is logging.LogRecord
    signals.worker_init.send(sender=None)
    made = logging.getLogRecordFactory()("x", logging.INFO, __file__, 1, "%s", ("a\nb",), None)
    assert made.getMessage() == "a\\nb"


def test_configure_logging_writes_escaped_lines_with_time_and_level(
    fresh_factory: None, capsys: pytest.CaptureFixture[str],
) -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    root.handlers = []
    try:
        configure_logging("info")
        logging.getLogger("webhooks.processor").info("by %s", f"Jane\n{FORGED}")
        logging.getLogger("webhooks.processor").debug("not shown")
    finally:
        root.handlers, level = saved
        root.setLevel(level)
    err = capsys.readouterr().err
    [line] = err.splitlines()
    assert line.endswith(f"INFO/webhooks.processor] by Jane\\n{FORGED}")
    assert LOG_FORMAT.startswith("[%(asctime)s: %(levelname)s/")


def test_configure_logging_refuses_an_unknown_level(fresh_factory: None) -> None:
    with pytest.raises(ConfigurationError, match="MONITAO_PD_LOG_LEVEL: unknown level 'LOUD"):
        configure_logging("LOUD\n")
