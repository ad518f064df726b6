"""`monitao-pd send`: enqueue one event from flags, or many from JSON lines."""

from __future__ import annotations

import json
import sys
from typing import IO, Any

import click

from config.errors import InvalidEventError
from producer import AlertProducer
from producer.event import MAX_DETAILS_DEPTH

BATCH = 500


@click.command()
@click.option("--file", "file_", type=click.File("rb"),
              help="JSON lines of events, UTF-8 ('-' = stdin)")
@click.option("--action", type=click.Choice(["trigger", "acknowledge", "resolve"]))
@click.option("--monitor-id")
@click.option("--incident-id")
@click.option("--summary")
@click.option("--level")
@click.option("--destination")
@click.option("--event-id")
@click.option("--monitor-name")
@click.option("--url")
@click.option("--status-code", type=int)
@click.option("--response-time-ms", type=float)
@click.option("--check-location")
@click.option("--incident-url")
@click.option("--occurred-at", help="ISO 8601 time; default now")
@click.option("--details", help="a JSON object of free-form details")
def send(file_: IO[bytes] | None, **flags: Any) -> int:
    """Enqueue alert events; print one event id per line.

    With --file, each invalid line is reported with its line number and the valid ones
    are still sent; the exit status is then 1.
    """
    if file_ is not None:
        if any(v is not None for v in flags.values()):
            raise click.UsageError("give either --file or event flags, not both")
        return _send_file(file_)
    event = {k: v for k, v in flags.items() if v is not None}
    if "details" in event:
        try:
            event["details"] = _parse_json(event["details"])
        except InvalidEventError as exc:
            raise click.UsageError(f"--details: {exc.problems[0].removeprefix('event: ')}"
                                   ) from None
    with AlertProducer() as producer:
        try:
            click.echo(producer.send(event))
        except InvalidEventError as exc:
            for problem in exc.problems:
                click.echo(f"refused: {problem}", err=True)
            return 1
    return 0


def _send_file(stream: IO[bytes]) -> int:
    refused = 0
    with AlertProducer() as producer:
        batch: list[Any] = []
        for number, line in enumerate(stream, start=1):
            if not line.strip():
                continue
            try:
                batch.append(producer.prepare(_decode(line)))
            except InvalidEventError as exc:
                refused += 1
                for problem in exc.problems:
                    click.echo(f"line {number}: {problem}", err=True)
                continue
            if len(batch) >= BATCH:
                _flush(producer, batch)
        _flush(producer, batch)
    if refused:
        click.echo(f"{refused} line(s) refused", err=True)
    return 1 if refused else 0


def _decode(line: bytes) -> Any:
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidEventError([
            f"event: not valid UTF-8 (byte 0x{line[exc.start]:02x} at column {exc.start + 1})"
        ]) from None
    return _parse_json(text)


def _parse_json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise InvalidEventError([f"event: not valid JSON ({exc.args[0]})"]) from None
    except RecursionError:
        raise InvalidEventError([
            f"event: nested too deeply to read (details may nest {MAX_DETAILS_DEPTH} levels)"
        ]) from None


def _flush(producer: AlertProducer, batch: list[Any]) -> None:
    for event_id in producer.send_many(batch):
        click.echo(event_id)
    sys.stdout.flush()
    batch.clear()
