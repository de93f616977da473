"""Your own training code: the CNN sample, run as the operator runs it, speaks the contract.

``deploy/samples/digits-cnn/train_cnn.py`` runs in a subprocess with the environment a
training pod gets; the operator's own parsers read what it printed and left, and the
server's loader serves the version it wrote.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from modelservice_operator.diagnosis import parse_progress, parse_result
from modelservice_serving import contract
from modelservice_serving.model import ServedModel

from .conftest import serving_env

pytestmark = pytest.mark.unit

SAMPLE = Path(__file__).resolve().parents[3] / "deploy" / "samples" / "digits-cnn"


def _run(tmp_path: Path, **env: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    log = tmp_path / "termination-log"
    completed = subprocess.run(
        [sys.executable, str(SAMPLE / "train_cnn.py")],
        env={
            **serving_env(),
            contract.ENV_OUTPUT: str(tmp_path / "store" / "v2"),
            contract.ENV_VERSION: "2",
            contract.ENV_TERMINATION_LOG: str(log),
            contract.ENV_DATASET: "digits",
            **env,
        },
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    return completed, log


def test_cnn_sample_trains_reports_and_serves(tmp_path: Path) -> None:
    completed, log = _run(tmp_path, MSO_EPOCHS="4")
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = parse_result(log.read_text())
    assert result is not None
    assert result["status"] == "Succeeded"
    assert result["version"] == 2
    assert result["uri"] == str(tmp_path / "store" / "v2")
    assert result["metrics"]["accuracy"] > 0.85
    progress = parse_progress(completed.stdout)
    assert progress is not None
    assert (progress.epoch, progress.epochs) == (4, 4)

    version_dir = tmp_path / "store" / "v2"
    metadata = json.loads((version_dir / "metadata.json").read_text())
    assert metadata["version"] == 2
    assert metadata["inputs"] == [{"name": "pixels", "datatype": "FP32", "shape": [-1, 64]}]
    assert metadata["metrics"] == result["metrics"]
    assert sorted(path.name for path in (tmp_path / "store").iterdir()) == ["v2"]

    from sklearn.datasets import load_digits

    digits = load_digits()
    model = ServedModel.load(version_dir, "digits-cnn")
    (output,) = model.predict({"pixels": digits.data[:200].astype(np.float32)}).values()
    assert (output.argmax(axis=1) == digits.target[:200]).mean() > 0.85


def test_cnn_sample_failure_is_a_contract_failure(tmp_path: Path) -> None:
    completed, log = _run(tmp_path, MSO_DATASET="imagenet")
    assert completed.returncode == 1
    result = parse_result(log.read_text())
    assert result == {
        "status": "Failed",
        "reason": "DatasetNotFound",
        "message": "this sample trains on 'digits' only, not 'imagenet'",
    }
    assert not (tmp_path / "store" / "v2").exists()
