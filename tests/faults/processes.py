"""Real `monitao-pd worker` processes for fault tests: start, SIGKILL, SIGTERM, clean up."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
READY_TIMEOUT = 30.0


def settings_env(**settings: object) -> dict[str, str]:
    """MONITAO_PD_* variables for the given settings."""
    return {f"MONITAO_PD_{name.upper()}": str(value) for name, value in settings.items()}


class WorkerProcess:
    """One `monitao-pd worker` in its own process group, logging to a file."""

    def __init__(self, env: dict[str, str], log_dir: Path, name: str,
                 concurrency: int = 8) -> None:
        self.env, self.name, self.concurrency = env, name, concurrency
        self.log_path = log_dir / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        """Start the worker and wait until Celery says it is ready."""
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "worker", f"--concurrency={self.concurrency}",
             f"--name={self.name}@%h", "--loglevel=INFO"],
            cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + READY_TIMEOUT
        while " ready." not in self.log():
            if self.process.poll() is not None:
                raise RuntimeError(f"worker {self.name} exited:\n{self.log()[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"worker {self.name} not ready:\n{self.log()[-3000:]}")
            time.sleep(0.05)
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send `sig` to the worker's whole process group."""
        if self.alive:
            assert self.process is not None
            os.killpg(self.process.pid, sig)

    def wait(self, timeout: float) -> int:
        assert self.process is not None
        return self.process.wait(timeout=timeout)

    def stop(self) -> None:
        """Warm shutdown, then SIGKILL if it lingers."""
        if not self.alive:
            return
        assert self.process is not None
        self.kill(signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.kill(signal.SIGKILL)
            self.process.wait(timeout=10)
