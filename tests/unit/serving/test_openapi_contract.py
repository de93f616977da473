"""The OpenAPI document tells the truth: schemathesis against a live server on loopback.

Schemathesis (pinned in the dev extra) reads ``/openapi.json`` from the running server (the
digits model) and sends, per operation, requests valid by the document and requests that
break it. Every built-in check runs: no 5xx, every status code, content type, header and
body as documented, and invalid requests refused with a 4xx. A request valid by the
document may still be refused as the document says: 422 (tensors that do not fit the
signature, which JSON Schema cannot express: e.g. a shape's product against the data's
length) or 404 (a version that does not exist); those are allowed for it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from .conftest import MODEL_NAME, RunningServer, running_server

pytestmark = pytest.mark.unit

# schemathesis.toml: which answers a request valid by the document may get (see above).
CONFIG = """
[checks.positive_data_acceptance]
expected-statuses = ["2xx", "404", "422"]
"""


@pytest.fixture(scope="module")
def live_server(served_model: Any, trained_model: Any) -> Iterator[RunningServer]:
    with running_server(served_model, trained_model.model_dir, docs=True) as server:
        yield server


def test_the_server_keeps_its_openapi_document(live_server: RunningServer, tmp_path: Path) -> None:
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    st = Path(sys.executable).with_name("st")
    completed = subprocess.run(
        [
            str(st), "--config-file", str(config), "run", live_server.url + "/openapi.json",
            "--checks", "all", "--phases", "examples,coverage,fuzzing", "--max-examples", "30",
            "--seed", os.environ.get("MSO_SCHEMATHESIS_SEED", "11"),
            "--workers", "1", "--request-timeout", "30",
            "--report", "junit", "--report-dir", str(tmp_path / "report"),
        ],
        capture_output=True, text=True, timeout=600, check=False, cwd=tmp_path,
    )  # fmt: skip
    output = completed.stdout + completed.stderr
    print(output[-4000:])
    assert completed.returncode == 0, output[-8000:]
    assert "No issues found" in output or "passed" in output.lower()


def test_the_document_says_what_the_server_does(live_server: RunningServer) -> None:
    document = httpx.get(live_server.url + "/openapi.json").json()
    paths = document["paths"]
    infer = paths["/v2/models/{name}/infer"]["post"]
    assert set(infer["responses"]) == {"200", "400", "404", "408", "413", "422", "431", "503"}
    assert "Retry-After" in infer["responses"]["503"]["headers"]
    (name,) = [p for p in infer["parameters"] if p["name"] == "name"]
    assert name["schema"]["enum"] == [MODEL_NAME]
    assert "version" not in str(infer["parameters"])  # no stray query parameter
    body = infer["requestBody"]["content"]["application/json"]["schema"]
    assert body["properties"]["parameters"] == {"type": "object"}
    assert body["properties"]["outputs"]["minItems"] == 1
    metrics = paths["/metrics"]["get"]["responses"]["200"]["content"]
    assert list(metrics) == ["text/plain"]
    assert "HTTPValidationError" not in str(document)
