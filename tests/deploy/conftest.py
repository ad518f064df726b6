"""Tools the deploy checks borrow from the machine. promtool (Debian's `prometheus` package)
checks deploy/observability/: without it those tests are skipped, with one line at the end
of the run saying how to get it; under `CI=true` they fail instead (.ci/run installs it)."""

from __future__ import annotations

import os
import shutil
from typing import Any

import pytest

HOW_TO_GET_PROMTOOL = ("observability checks (tests/deploy/test_observability.py) skipped: no "
                       "promtool found; `apt-get install -y prometheus` (Debian's package) "
                       "runs them")
_skipped: list[str] = []


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _skipped:
        terminalreporter.write_line(HOW_TO_GET_PROMTOOL)


@pytest.fixture(scope="session")
def promtool() -> str:
    """The path of promtool."""
    found = shutil.which("promtool")
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("no promtool found and CI=true: install Debian's package "
                        "(`apt-get install -y prometheus`; .ci/run does it)")
        _skipped.append("promtool")
        pytest.skip(HOW_TO_GET_PROMTOOL)
    return found
