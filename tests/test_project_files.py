"""The files a newcomer reads first say true things: the README's `make run` sample is what
`make run` prints, the bench duration is the same everywhere, and pyproject.toml points at
nothing outside the repository."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")


def make_run_sample() -> str:
    start = README.index("A whole run, on a machine without Redis:")
    block = README[start:].split("```", 2)[1]
    return block


def test_the_readme_shows_what_make_run_prints() -> None:
    sample = make_run_sample()
    for line_start in ("Redis: nothing at redis://127.0.0.1:6379/0; started an embedded one",
                       "Key prefix: monitao-pd:run-", "PagerDuty simulator: http://127.0.0.1:",
                       "Webhook receiver: http://127.0.0.1:", "Logs: /tmp/monitao-pd-run-",
                       "sent trigger ", "Timeline of incident demo-", "Flower: http://",
                       "  export MONITAO_PD_REDIS_URL=", "  export MONITAO_PD_KEY_PREFIX=",
                       "  export MONITAO_PD_CONFIG=", "  .venv/bin/monitao-pd status",
                       "  curl -X POST http://127.0.0.1:", "Fleet running. Press Ctrl-C to stop.",
                       "stopped; logs kept in "):
        assert re.search(rf"^{re.escape(line_start)}", sample, flags=re.MULTILINE), line_start
    attempts = [line for line in sample.splitlines() if "  attempt  " in line]
    assert len(attempts) == 2
    for line in attempts:  # the table prints whole task ids (the sample showed "6eac71a7-…")
        assert re.search(r"try 1: HTTP 202 in [\d.]+ ms \[\S+ task [0-9a-f-]{36}\]$", line), line
    assert "…" not in sample


def test_the_bench_duration_is_the_same_everywhere() -> None:
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    bench = (REPO / "bench" / "run.py").read_text(encoding="utf-8")
    stated = {
        "Makefile": re.findall(r"about (\d+) minutes", makefile.split("\nbench:")[0]),
        "README": re.findall(r"`make bench` \(about (\d+) minutes", README),
        "bench/run.py": re.findall(r"`make bench`\), about (\d+) minutes", bench),
    }
    assert all(len(found) == 1 for found in stated.values()), stated
    assert len({found[0] for found in stated.values()}) == 1, stated


def test_pyproject_points_at_nothing_outside_the_repository() -> None:
    text = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    assert "../" not in text
    for path in re.findall(r"\b((?:tests|bench|deploy)/[\w/.-]+\.\w+)", text):
        assert (REPO / path).exists(), path
