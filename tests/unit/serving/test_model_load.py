"""Loading a model in a fresh serving process, with either runtime, gives the same predictions.

TensorFlow is imported without Keras; LiteRT (the version's ``model.tflite``) without
TensorFlow at all; a version without the light artifact (trained before it existed) is
served by TensorFlow.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.datasets import load_digits

from modelservice_serving.model import ServedModel
from modelservice_serving.runtime_litert import LIGHT_FILE

from .conftest import TrainedModel, serving_env

pytestmark = pytest.mark.unit

PROBE = """
import json, sys
import numpy as np
from modelservice_serving.model import ServedModel
model = ServedModel.load(__import__("pathlib").Path(sys.argv[1]), "digits", runtime=sys.argv[2])
rows = np.arange(128, dtype=np.float32).reshape(2, 64) % 17
outputs = model.predict({"inputs": rows})["output_0"].tolist()
keras_loaded = "keras.src" in sys.modules
tensorflow_loaded = "tensorflow" in sys.modules
import keras  # importable again afterwards
print(json.dumps({"outputs": outputs, "keras_loaded": keras_loaded, "keras": keras.__name__,
                  "tensorflow_loaded": tensorflow_loaded, "runtime": model.runtime}))
"""
ROWS = np.arange(128, dtype=np.float32).reshape(2, 64) % 17


def _load_in_a_fresh_process(model_dir: Path, runtime: str) -> dict[str, Any]:
    completed = subprocess.run(
        [sys.executable, "-c", PROBE, str(model_dir), runtime],
        capture_output=True, text=True, env=serving_env(), timeout=300, check=False,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    result: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    return result


def test_a_fresh_process_loads_the_saved_model_without_keras(
    trained_model: TrainedModel,
) -> None:
    result = _load_in_a_fresh_process(trained_model.model_dir, "tensorflow")
    assert result["runtime"] == "tensorflow"
    assert result["keras_loaded"] is False
    assert result["keras"] == "keras"
    expected = _saved_model(trained_model.model_dir).predict({"inputs": ROWS})["output_0"]
    np.testing.assert_allclose(result["outputs"], expected, rtol=1e-5)


def test_train_writes_the_light_artifact_and_serving_prefers_it_without_tensorflow(
    trained_model: TrainedModel,
) -> None:
    assert (trained_model.model_dir / LIGHT_FILE).is_file()
    metadata = json.loads((trained_model.model_dir / "metadata.json").read_text())
    assert metadata["runtimes"] == ["tensorflow", "litert"]
    result = _load_in_a_fresh_process(trained_model.model_dir, "auto")
    assert result["runtime"] == "litert"
    assert result["tensorflow_loaded"] is False
    # The same graph and weights: the same predictions as the SavedModel's.
    expected = _saved_model(trained_model.model_dir).predict({"inputs": ROWS})["output_0"]
    np.testing.assert_allclose(result["outputs"], expected, rtol=1e-4, atol=1e-6)


def test_both_runtimes_agree_on_every_batch_size_and_on_views(trained_model: TrainedModel) -> None:
    light = ServedModel.load(trained_model.model_dir, "digits", runtime="litert")
    full = _saved_model(trained_model.model_dir)
    assert light.runtime == "litert"
    assert (light.inputs, light.outputs) == (full.inputs, full.outputs)
    rows = load_digits().data.astype(np.float32)
    for size in (1, 3, 32, 1, 64):  # sizes change between calls: LiteRT resizes its inputs
        batch = {"inputs": rows[:size]}
        np.testing.assert_allclose(
            light.predict(batch)["output_0"], full.predict(batch)["output_0"], rtol=1e-4, atol=1e-6
        )
    strided = {"inputs": rows[: 2 * 5 : 2]}  # not contiguous
    np.testing.assert_allclose(
        light.predict(strided)["output_0"], full.predict(strided)["output_0"], rtol=1e-4, atol=1e-6
    )


def test_a_version_without_the_light_artifact_is_served_by_tensorflow(
    trained_model: TrainedModel, tmp_path: Path
) -> None:
    old = tmp_path / "v1"
    shutil.copytree(trained_model.model_dir, old)
    (old / LIGHT_FILE).unlink()
    model = ServedModel.load(old, "digits")
    assert model.runtime == "tensorflow"
    assert model.predict({"inputs": ROWS})["output_0"].shape == (2, 10)
    with pytest.raises(FileNotFoundError):
        ServedModel.load(old, "digits", runtime="litert")


def _saved_model(model_dir: Path) -> ServedModel:
    return ServedModel.load(model_dir, "digits", runtime="tensorflow")
