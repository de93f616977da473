"""The ``train`` entrypoint: layout, metadata, progress lines, termination messages, errors."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelservice_serving.__main__ import main
from modelservice_serving.train import distribution, pipeline
from modelservice_serving.train.output import version_from_dir
from modelservice_serving.train.scaling import RANGE_SHARE, fit_scaling

from .conftest import TRAIN_EPOCHS, TrainedModel

pytestmark = pytest.mark.unit


def test_version_directory_holds_saved_model_and_metadata(trained_model: TrainedModel) -> None:
    model_dir = trained_model.model_dir
    assert (model_dir / "saved_model.pb").is_file()
    assert (model_dir / "variables").is_dir()
    metadata = json.loads((model_dir / "metadata.json").read_text())
    assert metadata["version"] == 1
    assert metadata["inputs"] == [{"name": "inputs", "datatype": "FP32", "shape": [-1, 64]}]
    assert metadata["outputs"] == [{"name": "output_0", "datatype": "FP32", "shape": [-1, 10]}]
    assert metadata["metrics"]["accuracy"] > 0.8
    assert metadata["hyperparameters"]["hiddenUnits"] == [64, 64]
    assert metadata["classes"] == [str(digit) for digit in range(10)]
    # No staging directory is left beside the published version.
    assert [path.name for path in model_dir.parent.iterdir() if path.name.startswith(".")] == []


def test_progress_lines_one_per_epoch(trained_model: TrainedModel) -> None:
    events = [
        json.loads(line) for line in trained_model.stdout.splitlines() if line.startswith("{")
    ]
    epochs = [event for event in events if event["event"] == "epoch"]
    assert [event["epoch"] for event in epochs] == list(range(1, TRAIN_EPOCHS + 1))
    assert {"loss", "accuracy", "val_loss", "val_accuracy", "epochs"} <= set(epochs[-1])


def test_termination_message_reports_success(trained_model: TrainedModel) -> None:
    message = trained_model.termination_message
    assert message["status"] == "Succeeded"
    assert message["version"] == 1
    assert message["uri"] == str(trained_model.model_dir)
    assert set(message["metrics"]) == {"accuracy", "loss"}
    assert message["trainedAt"].endswith("Z")
    assert len(json.dumps(message)) < 4096


def _train(tmp_path: Path, *args: str) -> tuple[int, dict[str, Any]]:
    log = tmp_path / "termination-log"
    code = main(["train", "--epochs", "1", "--termination-log", str(log), *args])
    return code, json.loads(log.read_text())


@pytest.mark.parametrize(
    ("args", "reason", "fragment"),
    [
        (["--dataset", "imagenet"], "DatasetNotFound", "unknown dataset 'imagenet'"),
        (["--dataset", "/nowhere/data.csv"], "DatasetNotFound", "does not exist"),
        (["--dataset", "gs://bucket/data.csv"], "UnsupportedDataset", "'gs'"),
        # s3:// is supported with keys (SigV4); without them it says which keys are missing.
        (["--dataset", "s3://bucket/data.csv"], "DatasetDownloadFailed", "AWS_ACCESS_KEY_ID"),
        (["--epochs", "zero"], "InvalidSettings", "--epochs"),
        (["--hidden-units", "128,-1"], "InvalidSettings", "--hidden-units"),
    ],
)
def test_errors_are_one_line_and_non_zero(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    reason: str,
    fragment: str,
) -> None:
    code, message = _train(tmp_path, "--output", str(tmp_path / "v1"), *args)
    assert code != 0
    assert message["status"] == "Failed"
    assert message["reason"] == reason
    assert fragment in message["message"]
    stderr_lines = capsys.readouterr().err.strip().splitlines()
    assert stderr_lines[-1] == f"error: {reason}: {message['message']}"
    assert not (tmp_path / "v1").exists()


def test_missing_label_column(tmp_path: Path) -> None:
    data = tmp_path / "data.csv"
    data.write_text("a,b,target\n1,2,0\n3,4,1\n")
    code, message = _train(tmp_path, "--dataset", str(data), "--output", str(tmp_path / "v1"))
    assert code == 1
    assert message["reason"] == "LabelColumnMissing"
    assert "'label'" in message["message"]
    assert "target" in message["message"]


def test_shape_mismatch_in_npz(tmp_path: Path) -> None:
    data = tmp_path / "data.npz"
    np.savez(data, x=np.zeros((10, 3)), label=np.zeros(7))
    code, message = _train(tmp_path, "--dataset", str(data), "--output", str(tmp_path / "v1"))
    assert code == 1
    assert message["reason"] == "ShapeMismatch"
    assert "10 feature rows but 7 labels" in message["message"]


def test_existing_output_is_never_overwritten(tmp_path: Path) -> None:
    for taken in ("v1", "v3", ".v4.partial-x", "notes"):
        (tmp_path / taken).mkdir()
    code, message = _train(tmp_path, "--output", str(tmp_path / "v1"))
    assert code == 1
    assert message["reason"] == "OutputExists"
    # The operator's next version goes above what the store holds (a partial one is not).
    assert message["highestVersion"] == 3


def test_unwritable_output_under_a_file(tmp_path: Path) -> None:
    (tmp_path / "store").write_text("not a directory")
    code, message = _train(tmp_path, "--output", str(tmp_path / "store" / "v1"))
    assert code == 1
    assert message["reason"] == "OutputNotWritable"


def test_failure_mid_training_leaves_no_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("out of memory (simulated)")

    monkeypatch.setattr(pipeline, "build_model", crash)
    code, message = _train(tmp_path, "--output", str(tmp_path / "store" / "v2"))
    assert code == 1
    assert message["reason"] == "InternalError"
    assert list((tmp_path / "store").iterdir()) == []


def test_csv_with_named_labels_trains(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rows = ["f1,f2,kind"]
    for _ in range(60):
        kind = rng.integers(2)
        f1, f2 = rng.normal(kind * 3, 0.5, size=2)
        rows.append(f"{f1:.3f},{f2:.3f},{'cat' if kind else 'dog'}")
    data = tmp_path / "animals.csv"
    data.write_text("\n".join(rows) + "\n")
    code, message = _train(
        tmp_path,
        "--dataset", f"file://{data}", "--label-column", "kind", "--hidden-units", "8",
        "--seed", "1", "--output", str(tmp_path / "v4"),
    )  # fmt: skip
    assert code == 0, message
    assert message["version"] == 4
    metadata = json.loads((tmp_path / "v4" / "metadata.json").read_text())
    assert metadata["classes"] == ["cat", "dog"]
    assert metadata["inputs"][0]["shape"] == [-1, 2]
    # Lineage, in the version's metadata and in the result the operator records.
    sha256 = hashlib.sha256(data.read_bytes()).hexdigest()
    for lineage in (metadata, message):
        assert lineage["datasetUri"] == f"file://{data}"
        assert lineage["datasetSha256"] == sha256
        assert lineage["hyperparameters"]["hiddenUnits"] == [8]
        assert lineage["hyperparameters"]["seed"] == 1


def test_version_from_directory_name() -> None:
    assert version_from_dir(Path("/models/v12")) == 12
    assert version_from_dir(Path("/models/latest")) is None


@pytest.mark.parametrize(
    ("cluster", "task", "chief"),
    [
        ({}, {}, True),
        ({"worker": ["a:1", "b:1"]}, {"type": "worker", "index": 0}, True),
        ({"worker": ["a:1", "b:1"]}, {"type": "worker", "index": 1}, False),
        ({"chief": ["c:1"], "worker": ["a:1"]}, {"type": "worker", "index": 0}, False),
        ({"chief": ["c:1"], "worker": ["a:1"]}, {"type": "chief", "index": 0}, True),
    ],
)
def test_chief_writes_the_model(cluster: dict[str, Any], task: dict[str, Any], chief: bool) -> None:
    assert distribution.is_chief(cluster, task) is chief


def test_tf_config_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    config = {"cluster": {"worker": ["h0:2222", "h1:2222"]}, "task": {"type": "worker", "index": 1}}
    monkeypatch.setenv("TF_CONFIG", json.dumps(config))
    assert distribution.cluster_from_env() == (config["cluster"], config["task"])


def test_same_seed_same_model(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    kinds = rng.integers(3, size=90)
    rows = [f"{k + rng.normal(0, 0.3):.3f},{rng.normal():.3f},{k}" for k in kinds]
    data = tmp_path / "points.csv"
    data.write_text("a,b,label\n" + "\n".join(rows) + "\n")
    results = []
    for run in ("first", "second"):
        code, message = _train(
            tmp_path,
            "--dataset", str(data), "--hidden-units", "8", "--epochs", "3", "--seed", "11",
            "--output", str(tmp_path / run / "v1"),
        )  # fmt: skip
        assert code == 0, message
        results.append(message["metrics"])
    assert results[0] == results[1]


# ---------------------------------------------------------------- scaling of the features


def test_scaling_floors_constant_and_rare_features() -> None:
    rng = np.random.default_rng(0)
    rows = 1000
    normal = rng.normal(5.0, 2.0, rows)
    rare = np.zeros(rows)
    rare[:3] = 16.0  # set in 0.3% of the rows: its deviation is about 0.9
    features = np.column_stack([normal, np.zeros(rows), np.full(rows, 7.0), rare])
    fitted = fit_scaling(features)
    std = np.sqrt(fitted.variance)
    assert fitted.constant.tolist() == [False, True, True, False]
    assert std[0] == pytest.approx(features[:, 0].std(), rel=1e-5)  # untouched
    # Constant features take the typical range of the others: a value inside the data's
    # overall range moves the scaled input by a few units, not by millions.
    typical = np.median([np.ptp(normal), np.ptp(rare)])
    assert std[1] == pytest.approx(typical)
    assert std[2] == pytest.approx(typical)
    assert std[3] == pytest.approx(RANGE_SHARE * 16.0)
    assert np.all((16.0 - fitted.mean) / std < 20)


def _probabilities(model_dir: Path, rows: np.ndarray) -> np.ndarray:
    import tensorflow as tf

    signature = tf.saved_model.load(str(model_dir)).signatures["serve"]
    return np.asarray(signature(inputs=tf.constant(rows, dtype=tf.float32))["output_0"])


def _last_epoch(stdout: str) -> dict[str, Any]:
    lines = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    return [line for line in lines if line["event"] == "epoch"][-1]


def test_digits_test_loss_matches_validation_loss(trained_model: TrainedModel) -> None:
    """The loss gate means something: test loss within 20% of the validation loss."""
    test_loss = trained_model.termination_message["metrics"]["loss"]
    val_loss = _last_epoch(trained_model.stdout)["val_loss"]
    assert test_loss == pytest.approx(val_loss, rel=0.2)


def test_digits_constant_pixels_do_not_saturate(trained_model: TrainedModel) -> None:
    """A pixel that never varies in training, set to 16 (the data's maximum), moves the
    answer a little, and never to an exact one-hot."""
    from sklearn.datasets import load_digits

    images = load_digits().data.astype(np.float32)
    constant = np.flatnonzero(np.ptp(images, axis=0) == 0)
    assert len(constant) >= 3  # the quirk is there to be handled
    sample = images[::9]
    before = _probabilities(trained_model.model_dir, sample)
    changed = sample.copy()
    changed[:, constant] = 16.0
    after = _probabilities(trained_model.model_dir, changed)
    assert np.all(np.isfinite(after))
    saturated = after.max(axis=1) >= 1.0 - 1e-6
    assert not np.any(saturated & (before.max(axis=1) < 0.999))
    assert np.mean(after.argmax(axis=1) == before.argmax(axis=1)) > 0.8


def test_csv_with_constant_columns_trains_a_sane_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Constant and almost-constant columns: the test loss tracks the validation loss, and
    values of the training range in those columns leave the answer unsaturated."""
    rng = np.random.default_rng(5)
    rows = 600
    kinds = rng.integers(3, size=rows)
    signal = kinds[:, None] * 2.0 + rng.normal(0, 0.8, size=(rows, 2))
    rare = np.where(rng.random(rows) < 0.01, 10.0, 0.0)
    table = np.column_stack([signal, np.zeros(rows), np.full(rows, 3.0), rare, kinds])
    data = tmp_path / "constant.csv"
    lines = [",".join(f"{value:g}" for value in row) for row in table]
    data.write_text("a,b,zero,three,rare,label\n" + "\n".join(lines) + "\n")
    code, message = _train(
        tmp_path,
        "--dataset", str(data), "--hidden-units", "16", "--epochs", "15", "--seed", "2",
        "--output", str(tmp_path / "v1"),
    )  # fmt: skip
    assert code == 0, message
    assert message["metrics"]["accuracy"] > 0.8
    val_loss = _last_epoch(capsys.readouterr().out)["val_loss"]
    assert message["metrics"]["loss"] == pytest.approx(val_loss, rel=0.2)
    probe = table[:50, :5].astype(np.float32)
    before = _probabilities(tmp_path / "v1", probe)
    probe[:, 2:5] = 10.0  # inside the training range of the whole table (0..10)
    after = _probabilities(tmp_path / "v1", probe)
    assert np.all(after.max(axis=1) < 1.0 - 1e-6)
    assert np.abs(after - before).max() < 0.9
