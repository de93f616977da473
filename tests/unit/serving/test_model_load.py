"""Loading a model in a fresh serving process: TensorFlow without Keras, same predictions."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from modelservice_serving.model import ServedModel

from .conftest import TrainedModel, serving_env

pytestmark = pytest.mark.unit

PROBE = """
import json, sys
import numpy as np
from modelservice_serving.model import ServedModel
model = ServedModel.load(__import__("pathlib").Path(sys.argv[1]), "digits")
rows = np.arange(128, dtype=np.float32).reshape(2, 64) % 17
outputs = model.predict({"inputs": rows})["output_0"].tolist()
keras_loaded = "keras.src" in sys.modules
import keras  # importable again afterwards
print(json.dumps({"outputs": outputs, "keras_loaded": keras_loaded, "keras": keras.__name__}))
"""


def test_a_fresh_process_loads_the_model_without_keras(
    trained_model: TrainedModel, served_model: ServedModel
) -> None:
    completed = subprocess.run(
        [sys.executable, "-c", PROBE, str(trained_model.model_dir)],
        capture_output=True, text=True, env=serving_env(), timeout=300, check=False,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    assert result["keras_loaded"] is False
    assert result["keras"] == "keras"
    rows = np.arange(128, dtype=np.float32).reshape(2, 64) % 17
    expected = served_model.predict({"inputs": rows})["output_0"]
    np.testing.assert_allclose(result["outputs"], expected, rtol=1e-5)
