"""Worker processes for the benches that need a fleet: started as `monitao-pd worker` with
the environment given, each in its own session, and stopped (SIGTERM, then SIGKILL)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@contextmanager
def worker_processes(env: dict[str, str], workdir: Path, name: str, count: int = 2,
                     concurrency: int = 16) -> Iterator[list[subprocess.Popen[bytes]]]:
    """`count` workers named `{name}{n}@host`, logging to `workdir/w{n}.log`."""
    workers: list[subprocess.Popen[bytes]] = []
    try:
        for n in range(1, count + 1):
            with (workdir / f"w{n}.log").open("wb") as log:
                workers.append(subprocess.Popen(
                    [sys.executable, "-m", "cli.main", "worker", f"--concurrency={concurrency}",
                     f"--name={name}{n}@%h"], cwd=REPO, env=env, stdout=log,
                    stderr=subprocess.STDOUT, start_new_session=True))
        yield workers
    finally:
        for worker in workers:
            if worker.poll() is None:
                os.killpg(worker.pid, signal.SIGTERM)
        for worker in workers:
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
