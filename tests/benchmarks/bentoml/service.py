"""BentoML 1.4 serving the SavedModel: one worker, adaptive batching (up to 32 rows).

The API takes ``{"instances": [[...64 numbers]]}``, the benchmark's V1 body, at
``POST /predict``. Run in its own venv, from this directory:
bentoml serve service:Digits --host 127.0.0.1 --port PORT   (MSO_BENCH_MODEL_DIR=...)
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import bentoml
import numpy as np


@bentoml.service(workers=1, traffic={"timeout": 30}, logging={"access": {"enabled": False}})
class Digits:
    def __init__(self) -> None:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
        self.tf = tf
        model_dir = os.environ["MSO_BENCH_MODEL_DIR"]
        self.signature = tf.saved_model.load(model_dir).signatures["serve"]

    # max_latency_ms is BentoML's latency budget (requests beyond it get 503), not the batch
    # window: its dispatcher picks the wait itself. 10 s: shed nothing, as the others.
    @bentoml.api(batchable=True, max_batch_size=32, max_latency_ms=10_000)  # type: ignore[misc]
    def predict(self, instances: np.ndarray) -> np.ndarray:  # bentoml reads this annotation
        batch = self.tf.constant(instances.astype(np.float32))
        return self.signature(inputs=batch)["output_0"].numpy()  # type: ignore[no-any-return]
