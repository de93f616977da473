"""Triton Inference Server (through PyTriton) serving the SavedModel with dynamic batching.

PyTriton starts the ``tritonserver`` binary shipped in its wheel and runs the Python
function below as the model (Triton's Python backend path; Triton has no TensorFlow
backend in that wheel). Dynamic batching: up to 32 rows, 5 ms queue delay, as ours.
Run in its own venv, with that venv's libpython first on LD_LIBRARY_PATH:
python triton_server.py MODEL_DIR HTTP_PORT
"""

from __future__ import annotations

import os
import sys
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig

tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)


def main() -> None:
    model_dir, port = sys.argv[1], int(sys.argv[2])
    signature = tf.saved_model.load(model_dir).signatures["serve"]

    @batch  # type: ignore[misc]
    def infer(inputs: np.ndarray[Any, Any]) -> dict[str, np.ndarray[Any, Any]]:
        return {"output_0": signature(inputs=tf.constant(inputs))["output_0"].numpy()}

    config = TritonConfig(
        http_address="127.0.0.1", http_port=port, grpc_address="127.0.0.1",
        grpc_port=port + 1, metrics_port=port + 2, allow_metrics=False, log_verbose=0,
    )  # fmt: skip
    with Triton(config=config) as triton:
        triton.bind(
            model_name="digits",
            infer_func=infer,
            inputs=[Tensor(name="inputs", dtype=np.float32, shape=(64,))],
            outputs=[Tensor(name="output_0", dtype=np.float32, shape=(10,))],
            config=ModelConfig(
                max_batch_size=32, batcher=DynamicBatcher(max_queue_delay_microseconds=5000)
            ),
            strict=False,
        )
        triton.serve()


if __name__ == "__main__":
    main()
