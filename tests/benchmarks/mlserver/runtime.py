"""MLServer custom runtime serving the SavedModel (MLServer has no TensorFlow runtime).

Used by serving_bench.py: copied with generated settings into a temporary model repository.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse


class SavedModelRuntime(MLModel):  # type: ignore[misc]
    async def load(self) -> bool:
        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
        uri = self.settings.parameters.uri
        self.signature = tf.saved_model.load(uri).signatures["serve"]
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        batch = NumpyCodec.decode_input(payload.inputs[0]).astype(np.float32)
        batch = batch.reshape(-1, 64)
        probabilities = self.signature(inputs=tf.constant(batch))["output_0"].numpy()
        return InferenceResponse(
            model_name=self.name,
            outputs=[NumpyCodec.encode_output("output_0", probabilities)],
        )
