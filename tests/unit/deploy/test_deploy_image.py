"""operator/Dockerfile: what it installs, who it runs as, and the flags its entrypoint builds."""

from __future__ import annotations

import os
import re
import subprocess
import tomllib
from pathlib import Path

from .conftest import REPO

DOCKERFILE = REPO / "operator" / "Dockerfile"
# Import name of each third-party module the operator imports -> its distribution.
DISTRIBUTION_OF = {
    "kopf": "kopf",
    "kubernetes_asyncio": "kubernetes-asyncio",
    "yaml": "pyyaml",
    "pydantic": "pydantic",
    "pydantic_settings": "pydantic-settings",
}


def entrypoint_script() -> str:
    """The shell script the Dockerfile installs as the image's entrypoint."""
    text = DOCKERFILE.read_text()
    assert "COPY operator/entrypoint.sh /usr/local/bin/modelservice-operator" in text
    return (DOCKERFILE.parent / "entrypoint.sh").read_text()


def test_dockerfile_shape() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r"^ARG BASE_IMAGE=python:3\.11-slim", text, re.M)
    assert "FROM ${BASE_IMAGE}" in text
    assert "'.[operator]'" in text
    assert "serving/" not in re.findall(r"^COPY .*", text, re.M)[0]
    # Of the serving code only the contract and the URL redaction (stdlib + pydantic).
    (serving_copy,) = re.findall(r"^COPY serving.*", text, re.M)
    assert serving_copy.split()[1:-1] == [
        "serving/modelservice_serving/__init__.py",
        "serving/modelservice_serving/contract.py",
        "serving/modelservice_serving/redact.py",
        "serving/modelservice_serving/py.typed",
    ]
    assert re.search(r"^USER 1000:1000$", text, re.M)
    # kopf needs a user name; UID 1000 has no passwd entry in the image.
    assert re.search(r"^ENV USER=\S+", text, re.M)
    # Legacy builder (Debian's docker.io) compatible: no heredocs, no BuildKit-only flags.
    instructions = [line for line in text.splitlines() if not line.startswith("#")]
    assert not [line for line in instructions if "<<" in line or "--chmod" in line]
    assert 'ENTRYPOINT ["/usr/local/bin/modelservice-operator"]' in text


def test_build_context_is_only_the_operator() -> None:
    """BuildKit's per-Dockerfile ignore file keeps .venv, .cluster and serving/ out."""
    ignore = (REPO / "operator" / "Dockerfile.dockerignore").read_text().splitlines()
    assert ignore[ignore.index("*") + 1 :][:3] == [
        "!pyproject.toml",
        "!README.md",
        "!operator/modelservice_operator/",
    ]
    assert "!operator/entrypoint.sh" in ignore
    assert [line for line in ignore if line.startswith("!serving/")] == [
        "!serving/modelservice_serving/__init__.py",
        "!serving/modelservice_serving/contract.py",
        "!serving/modelservice_serving/redact.py",
        "!serving/modelservice_serving/py.typed",
    ]


def run_entrypoint(tmp_path: Path, namespaces: str | None, *args: str) -> list[str]:
    """Run the entrypoint with a stub ``kopf`` that prints its arguments, one per line."""
    script = tmp_path / "entrypoint"
    script.write_text(entrypoint_script() + "\n")
    stub = tmp_path / "kopf"
    stub.write_text('#!/bin/sh\nfor a in "$@"; do echo "$a"; done\n')
    stub.chmod(0o755)
    env = {"PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}"}
    if namespaces is not None:
        env["MSO_OPERATOR_NAMESPACES"] = namespaces
    result = subprocess.run(
        ["sh", str(script), *args], env=env, capture_output=True, text=True, check=True
    )
    return result.stdout.splitlines()


def test_entrypoint_all_namespaces(tmp_path: Path) -> None:
    argv = run_entrypoint(tmp_path, None)
    assert argv[:3] == ["run", "-m", "modelservice_operator"]
    assert "--all-namespaces" in argv
    assert "--standalone" in argv
    assert "--liveness=http://0.0.0.0:8080/healthz" in argv
    assert "--namespace" not in argv
    assert run_entrypoint(tmp_path, "") == argv


def test_entrypoint_listed_namespaces(tmp_path: Path) -> None:
    argv = run_entrypoint(tmp_path, "team-a, team-b,", "--verbose")
    assert "--all-namespaces" not in argv
    assert argv.count("--namespace") == 2
    assert argv[argv.index("--namespace") + 1] == "team-a"
    assert argv[-1] == "team-b"
    assert "--verbose" in argv


def operator_imports() -> set[str]:
    found: set[str] = set()
    for path in (REPO / "operator" / "modelservice_operator").rglob("*.py"):
        for match in re.finditer(r"^\s*(?:from|import) ([a-zA-Z_]\w*)", path.read_text(), re.M):
            found.add(match.group(1))
    return found


def test_operator_extra_provides_every_import() -> None:
    """The image installs `.[operator]` only: that must be enough to import the operator."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    requirements = project["dependencies"] + project["optional-dependencies"]["operator"]
    provided = {re.split(r"[<>=!~;\[ ]", r, maxsplit=1)[0].lower() for r in requirements}
    needed = {DISTRIBUTION_OF[m] for m in operator_imports() if m in DISTRIBUTION_OF}
    assert needed <= provided, needed - provided
