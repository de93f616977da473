"""LiteRT (TensorFlow Lite) for a version's light artifact, ``model.tflite``.

``train`` converts the SavedModel's serving signature to ``model.tflite`` beside it
(:func:`.export.write_light_artifact`). The server runs it with ``ai-edge-litert``: the
same graph and weights, with no ``import tensorflow`` (seconds of CPU) and a cheaper call
per batch. Versions without the file, or a server without the package, use TensorFlow.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np

from .contract import datatype_of
from .model import SIGNATURE_KEYS, Runner, Tensors, TensorSpec

LIGHT_FILE = "model.tflite"


def usable(model_dir: Path) -> bool:
    """The version has the light artifact and the runtime is installed."""
    return (model_dir / LIGHT_FILE).is_file() and (
        importlib.util.find_spec("ai_edge_litert") is not None
    )


def load(model_dir: Path, threads: int) -> tuple[list[TensorSpec], list[TensorSpec], Runner]:
    """The artifact's serving signature: its inputs, outputs and a runner."""
    from ai_edge_litert.interpreter import Interpreter

    path = model_dir / LIGHT_FILE
    if not path.is_file():  # LiteRT's own error says only "allocation is null"
        raise FileNotFoundError(
            f"{path} does not exist: this version has no light artifact (trained before it "
            "existed, or not convertible); serve it with --model-runtime auto or tensorflow"
        )
    interpreter = Interpreter(model_path=str(path), num_threads=threads)
    signatures = interpreter.get_signature_list()
    key = next((key for key in SIGNATURE_KEYS if key in signatures), None)
    if key is None:
        raise ValueError(f"{path} has no serving signature ({', '.join(SIGNATURE_KEYS)})")
    runner = interpreter.get_signature_runner(key)
    inputs = _specs(runner.get_input_details())
    outputs = _specs(runner.get_output_details())
    return inputs, outputs, _SignatureRunner(runner)


def _specs(details: dict[str, dict[str, Any]]) -> list[TensorSpec]:
    return [
        TensorSpec(
            name,
            datatype_of(np.dtype(detail["dtype"]).name),
            tuple(int(dim) for dim in detail["shape_signature"]),
        )
        for name, detail in sorted(details.items())
    ]


class _SignatureRunner:
    """Calls the signature on NumPy arrays (one thread at a time: the model thread)."""

    def __init__(self, runner: Any) -> None:
        self._runner = runner

    def __call__(self, batch: Tensors) -> Tensors:
        # LiteRT copies the inputs in and the outputs out; it needs C-contiguous arrays
        # (a V2 reshape or a batch slice may be a view).
        arrays = {name: np.ascontiguousarray(value) for name, value in batch.items()}
        results: Tensors = self._runner(**arrays)
        return results
