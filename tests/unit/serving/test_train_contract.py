"""One contract module: the trainer's real output read by the operator's own parsers.

``modelservice_serving.contract`` owns the messages, reasons and defaults; these tests feed
what the ``train`` entrypoint and the public ``report`` helper really write to the
operator's ``diagnosis`` functions, and check that the contract stays light enough for the
operator's image (no TensorFlow, no NumPy, no server).
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from modelservice_operator import diagnosis
from modelservice_operator.models import BatchingSpec
from modelservice_serving import contract, report
from modelservice_serving.__main__ import main
from modelservice_serving.settings import ServeSettings

from .conftest import TRAIN_EPOCHS, TrainedModel

pytestmark = pytest.mark.unit

PACKAGE = Path(contract.__file__).parent


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            found.add("." * node.level + (node.module or ""))
    return found


def test_contract_imports_only_the_standard_library_and_pydantic() -> None:
    roots = {name.split(".")[0] for name in _imports(PACKAGE / "contract.py")}
    assert roots <= {"__future__", "collections", "json", "enum", "typing", "pydantic"}
    code = (
        "import sys, modelservice_serving.contract; "
        "print(sorted(m for m in ('numpy', 'tensorflow', 'fastapi', 'keras') if m in sys.modules))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert loaded.strip() == "[]"


def test_trainer_does_not_import_the_server() -> None:
    server_modules = {"app", "server", "model", "batching", "protocol_v1", "protocol_v2", "fetch"}
    trainer_files = [
        *(PACKAGE / "train").glob("*.py"),
        PACKAGE / "export.py",
        PACKAGE / "report.py",
    ]
    for path in trainer_files:
        for name in _imports(path):
            last = name.lstrip(".").split(".")[-1]
            assert not (name.startswith(".") and last in server_modules), f"{path.name}: {name}"


def test_shared_defaults_agree() -> None:
    batching = BatchingSpec()
    settings = ServeSettings(model_dir=Path("/models/v1"))
    assert batching.max_batch_size == settings.max_batch_size == contract.DEFAULT_MAX_BATCH_SIZE
    assert batching.max_latency_ms == settings.max_latency_ms == contract.DEFAULT_MAX_LATENCY_MS
    assert settings.port == contract.HTTP_PORT


def _pod(name: str, phase: str, message: str, exit_code: int, index: int = 0) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "creationTimestamp": "2026-12-01T00:00:00Z",
            "labels": {"batch.kubernetes.io/job-completion-index": str(index)},
        },
        "status": {
            "phase": phase,
            "containerStatuses": [
                {
                    "name": "train",
                    "state": {
                        "terminated": {
                            "reason": "Completed" if exit_code == 0 else "Error",
                            "exitCode": exit_code,
                            "message": message,
                        }
                    },
                }
            ],
        },
    }


def _job(condition: str) -> dict[str, Any]:
    return {"status": {"conditions": [{"type": condition, "status": "True"}]}}


def test_trainers_success_reaches_the_operator(trained_model: TrainedModel) -> None:
    raw = (trained_model.model_dir.parent / "termination-log").read_text()
    outcome = diagnosis.diagnose_job(_job("Complete"), [_pod("t-0", "Succeeded", raw, 0)])
    assert outcome.state == "Succeeded"
    assert outcome.result is not None
    assert outcome.result["version"] == 1
    assert outcome.result["metrics"] == trained_model.termination_message["metrics"]
    assert outcome.result["trainedAt"] == trained_model.termination_message["trainedAt"]
    progress = diagnosis.parse_progress(trained_model.stdout)
    assert progress is not None
    assert (progress.epoch, progress.epochs) == (TRAIN_EPOCHS, TRAIN_EPOCHS)
    assert progress.loss is not None
    assert progress.accuracy is not None


def test_trainers_failure_reaches_the_operator(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "termination-log"
    code = main(
        ["train", "--dataset", "imagenet", "--output", str(tmp_path / "v1"),
         "--termination-log", str(log)]
    )  # fmt: skip
    assert code == 1
    outcome = diagnosis.diagnose_job(_job("Failed"), [_pod("t-0", "Failed", log.read_text(), 1)])
    assert outcome.state == "Failed"
    assert "DatasetNotFound: unknown dataset 'imagenet'" in outcome.message
    assert capsys.readouterr().err.strip().endswith(outcome.result["message"])  # type: ignore[index]


def test_report_helper_speaks_the_contract(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """What user training code calls: env defaults, lines and message the operator reads."""
    log = tmp_path / "termination-log"
    monkeypatch.delenv("TF_CONFIG", raising=False)
    monkeypatch.setenv(contract.ENV_OUTPUT, "/models/v7")
    monkeypatch.setenv(contract.ENV_VERSION, "7")
    monkeypatch.setenv(contract.ENV_TERMINATION_LOG, str(log))
    report.epoch(1, 2, loss=0.5, accuracy=0.8, val_loss=0.6)
    report.epoch(2, 2, loss=0.25, accuracy=0.9)
    report.succeeded({"accuracy": 0.9, "loss": 0.3, "f1": 0.88})
    out = capsys.readouterr().out
    progress = diagnosis.parse_progress(out)
    assert progress == diagnosis.Progress(2, 2, 0.25, 0.9)
    assert json.loads(out.splitlines()[-1])["event"] == "completed"
    result = diagnosis.parse_result(log.read_text())
    assert result is not None
    assert result["status"] == "Succeeded"
    assert result["version"] == 7
    assert result["uri"] == "/models/v7"
    assert result["metrics"] == {"accuracy": 0.9, "loss": 0.3, "f1": 0.88}

    assert report.failed("DatasetNotFound", "no file\nat /data/x.csv") == 1
    result = diagnosis.parse_result(log.read_text())
    assert result == {
        "status": "Failed",
        "reason": "DatasetNotFound",
        "message": "no file at /data/x.csv",
    }


def test_only_the_chief_prints_and_reports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "termination-log"
    config = {"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 1}}
    monkeypatch.setenv("TF_CONFIG", json.dumps(config))
    report.epoch(1, 1, loss=0.1)
    report.succeeded({"accuracy": 1.0}, path=log)
    assert capsys.readouterr().out == ""
    assert not log.exists()
    # A failing worker reports all the same: its reason is the version's.
    report.failed("InternalError", "worker 1 lost its GPU", path=log)
    assert json.loads(log.read_text())["reason"] == "InternalError"


def test_long_failure_message_fits_the_termination_message() -> None:
    text = contract.result_json(contract.Failed(reason="InternalError", message="é" * 5000))
    assert len(text.encode()) <= contract.MAX_MESSAGE_BYTES
    parsed = contract.parse_result(text)
    assert isinstance(parsed, contract.Failed)
    assert parsed.message.endswith("...")


def test_server_failure_lines_round_trip() -> None:
    line = contract.server_failure_line(
        contract.ServerFailure.MODEL_DOWNLOAD_FAILED, "HTTP 404\nfrom https://x/m.tgz"
    )
    assert line == "ModelDownloadFailed: HTTP 404 from https://x/m.tgz"
    assert contract.parse_server_failure(line) == (
        "ModelDownloadFailed",
        "HTTP 404 from https://x/m.tgz",
    )
    assert contract.parse_server_failure("Traceback ...") is None
