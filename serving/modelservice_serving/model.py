"""A model version directory, loaded for serving: its signature and a predict call.

Two runtimes read a version directory. TensorFlow runs the SavedModel (every version has
one). LiteRT (:mod:`.runtime_litert`) runs ``model.tflite``, the light artifact ``train``
writes beside it: it imports in a fraction of TensorFlow's time, so a server that uses it
starts in about a second. ``auto`` takes LiteRT when the version has the artifact and the
runtime is installed, else TensorFlow (versions trained before the artifact existed).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from .contract import datatype_of

log = logging.getLogger(__name__)

Tensors = dict[str, npt.NDArray[Any]]
Runner = Callable[[Tensors], Tensors]
Runtime = Literal["auto", "tensorflow", "litert"]

METADATA_FILE = "metadata.json"
SIGNATURE_KEYS = ("serve", "serving_default")

# Open Inference Protocol datatypes and their NumPy dtypes.
DATATYPES: dict[str, type[np.generic]] = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
}


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of the signature; ``-1`` in ``shape`` is any size."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    def as_metadata(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


class ServedModel:
    """The loaded signature; :meth:`predict` is synchronous and runs off the event loop."""

    def __init__(
        self,
        name: str,
        version: str,
        inputs: list[TensorSpec],
        outputs: list[TensorSpec],
        runner: Runner | None,
        metadata: dict[str, Any],
        runtime: str = "tensorflow",
    ) -> None:
        self.name = name
        self.version = version
        self.inputs = inputs
        self.outputs = outputs
        # By name, for the request paths (built once, not per request).
        self.input_specs = {spec.name: spec for spec in inputs}
        self.output_datatypes = {spec.name: spec.datatype for spec in outputs}
        self.metadata = metadata
        self.runtime = runtime
        self._runner = runner

    @classmethod
    def load(
        cls, model_dir: Path, name: str, threads: int = 1, runtime: Runtime = "auto"
    ) -> ServedModel:
        """Loads the version with ``runtime`` (see the module) and reads ``metadata.json``."""
        from . import runtime_litert

        if runtime == "auto":
            runtime = "litert" if runtime_litert.usable(model_dir) else "tensorflow"
        if runtime == "litert":
            inputs, outputs, runner = runtime_litert.load(model_dir, threads)
        else:
            inputs, outputs, runner = _load_saved_model(model_dir, threads)
        metadata_path = model_dir / METADATA_FILE
        metadata: dict[str, Any] = (
            json.loads(metadata_path.read_text()) if metadata_path.is_file() else {}
        )
        version = str(metadata.get("version") or model_dir.name.lstrip("v") or "1")
        return cls(name, version, inputs, outputs, runner, metadata, runtime)

    def predict(self, inputs: Tensors) -> Tensors:
        """Runs the signature on a batch; arrays in, arrays out."""
        assert self._runner is not None, "a model built without a runner overrides predict"
        return self._runner(inputs)

    def example_batch(self, rows: int) -> Tensors:
        """Zeros shaped like the inputs, for warm-up."""
        return {
            spec.name: np.zeros(
                (rows, *(max(dim, 1) for dim in spec.shape[1:])), dtype=DATATYPES[spec.datatype]
            )
            for spec in self.inputs
        }

    def warm_up(self, batch_sizes: tuple[int, ...]) -> float:
        """Calls the model once per batch size so first requests pay no tracing cost."""
        started = time.perf_counter()
        for rows in batch_sizes:
            self.predict(self.example_batch(rows))
        return time.perf_counter() - started


def _load_saved_model(
    model_dir: Path, threads: int
) -> tuple[list[TensorSpec], list[TensorSpec], Runner]:
    """The SavedModel's serving signature with TensorFlow (imported here, without Keras)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with _without_keras():
        import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:  # already initialised in this process (tests load twice)
        pass
    loaded = tf.saved_model.load(str(model_dir))
    key = next((key for key in SIGNATURE_KEYS if key in loaded.signatures), None)
    if key is None:
        raise ValueError(f"{model_dir} has no serving signature ({', '.join(SIGNATURE_KEYS)})")
    signature = loaded.signatures[key]
    _, input_specs = signature.structured_input_signature
    inputs = [_spec(name, spec) for name, spec in sorted(input_specs.items())]
    outputs = [_spec(name, spec) for name, spec in sorted(signature.structured_outputs.items())]

    return inputs, outputs, _SignatureRunner(loaded, signature)


class _SignatureRunner:
    """Calls a SavedModel signature on NumPy arrays; holds the restored object (and so its
    variables) for as long as the signature is used."""

    def __init__(self, loaded: Any, signature: Any) -> None:
        self._loaded = loaded
        self._signature = signature

    def __call__(self, batch: Tensors) -> Tensors:
        import tensorflow as tf

        results = self._signature(**{name: tf.constant(value) for name, value in batch.items()})
        return {name: tensor.numpy() for name, tensor in results.items()}


@contextlib.contextmanager
def _without_keras() -> Iterator[None]:
    """A first ``import tensorflow`` that skips Keras, for the serving process.

    TensorFlow imports ``keras.src.optimizers`` eagerly (and ignores an ImportError there):
    in a fresh process that is most of Keras and SciPy, about 40% of the import's CPU time
    and so of the server's cold start. Running an exported signature needs no Keras. When
    TensorFlow or Keras is already imported (tests, training) nothing changes; afterwards
    ``keras`` imports normally again.
    """
    if "tensorflow" in sys.modules or "keras" in sys.modules:
        yield
        return
    sys.modules["keras"] = None  # type: ignore[assignment]  # makes `import keras` fail
    try:
        yield
    finally:
        if sys.modules.get("keras", ...) is None:
            del sys.modules["keras"]


def _spec(name: str, spec: Any) -> TensorSpec:
    shape = tuple(-1 if dim is None else int(dim) for dim in spec.shape.as_list())
    return TensorSpec(name, datatype_of(spec.dtype.name), shape)
