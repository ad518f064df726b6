"""`monitao-pd secrets generate-key`: a key for `MONITAO_PD_SECRET_KEYS`."""

from __future__ import annotations

import click

from config.secrets import generate_key


@click.group()
def secrets() -> None:
    """The key ring that encrypts the routing keys of run-time destinations."""


@secrets.command("generate-key")
def generate() -> int:
    """Print a new random key (base64, 32 bytes).

    Put it first in MONITAO_PD_SECRET_KEYS (comma-separated; the first encrypts, every key
    decrypts) on the workers and the hosts that run `destinations` commands, keep the old
    key after it until `monitao-pd destinations reencrypt` has run, then drop the old one.
    """
    click.echo(generate_key())
    return 0
