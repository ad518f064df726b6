"""`monitao-pd`: one command for producing, working, inspecting and running the fleet.

`main(args)` returns an exit status: 0 success, 1 some input was refused, 2 a usage or
configuration error, an unreachable Redis, or an unknown id. Expected errors are printed
as one clear message per problem, never a traceback; a value from outside in a message is
shown with its control characters escaped, and so is every log record of the process.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import click

from cli import inspect_commands, run_command, send_command, service_commands
from cli.api_command import api
from cli.destinations_command import destinations
from cli.health_command import health
from cli.maintenance_command import maintenance
from cli.replay_command import replay
from cli.secrets_command import secrets
from cli.status_command import status
from cli.test_destination_command import test_destination
from cli.tokens_command import tokens
from cli.webhooks_command import webhooks
from config.errors import ConfigurationError, InvalidDestinationError, MonitaoPDError
from config.logs import escape_log_records
from config.text import printable


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Deliver MoniTao alerts to PagerDuty through a Celery worker fleet."""


for command in (
    send_command.send,
    service_commands.worker,
    service_commands.simulator,
    service_commands.flower,
    service_commands.config,
    inspect_commands.timeline,
    inspect_commands.dlq,
    run_command.run,
    health,
    maintenance,
    replay,
    status,
    test_destination,
    webhooks,
    tokens,
    api,
    destinations,
    secrets,
):
    cli.add_command(command)


def main(args: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status instead of exiting."""
    escape_log_records()
    try:
        result = cli.main(args=list(args) if args is not None else None, prog_name="monitao-pd",
                          standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except click.ClickException as exc:
        exc.message = printable(exc.message)
        exc.show()
        return 2
    except ConfigurationError as exc:
        click.echo("error: invalid configuration", err=True)
        for problem in exc.problems:
            click.echo(f"  {printable(problem)}", err=True)
        return 2
    except InvalidDestinationError as exc:
        click.echo("error: invalid destination; nothing was stored", err=True)
        for problem in exc.problems:
            click.echo(f"  {printable(problem)}", err=True)
        return 2
    except MonitaoPDError as exc:
        click.echo(f"error: {printable(exc)}", err=True)
        return 2
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
