"""KServe's Python ModelServer serving the SavedModel (a custom ``kserve.Model``).

KServe ships no TensorFlow runtime in Python (TF models go to TF Serving), so this is the
documented custom-model path. Run in its own venv: python kserve_server.py MODEL_DIR PORT
"""

from __future__ import annotations

import os
import sys
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import kserve
import numpy as np
import tensorflow as tf


class SavedModel(kserve.Model):  # type: ignore[misc]
    def __init__(self, name: str, model_dir: str) -> None:
        super().__init__(name)
        self.model_dir = model_dir
        self.load()

    def load(self) -> bool:
        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
        self.signature = tf.saved_model.load(self.model_dir).signatures["serve"]
        self.ready = True
        return True

    def predict(self, payload: dict[str, Any], headers: Any = None, **_: Any) -> dict[str, Any]:
        batch = tf.constant(np.asarray(payload["instances"], dtype=np.float32))
        return {"predictions": self.signature(inputs=batch)["output_0"].numpy().tolist()}


if __name__ == "__main__":
    model_dir, port = sys.argv[1], int(sys.argv[2])
    kserve.ModelServer(http_port=port, grpc_port=port + 1, workers=1, enable_grpc=False).start(
        [SavedModel("digits", model_dir)]
    )
