"""``save_version``: write a Keras model as a version directory the server loads.

The layout is the contract's (``docs/contracts.md``): the SavedModel with a ``serve``
signature, the same signature as LiteRT's ``model.tflite`` when it converts (the server's
light runtime), and ``metadata.json`` with the version, metrics, time and tensors. The directory
is built in a hidden sibling and renamed into place when complete; an existing version is
never overwritten. The built-in trainer calls it, and so can your own training code.

Under MultiWorkerMirroredStrategy saving is collective: every worker must call it; only the
chief's copy is kept.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import report
from .contract import datatype_of
from .runtime_litert import LIGHT_FILE
from .train.output import StagedOutput, version_from_dir

__all__ = [
    "METADATA_FILE",
    "SIGNATURE",
    "save_version",
    "signature_tensors",
    "write_light_artifact",
]

log = logging.getLogger(__name__)

METADATA_FILE = "metadata.json"
SIGNATURE = "serve"


def signature_tensors(saved_model_dir: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Inputs and outputs of the ``serve`` signature, in the V2 metadata format."""
    import tensorflow as tf

    loaded = tf.saved_model.load(str(saved_model_dir))
    signature = loaded.signatures[SIGNATURE]
    _, input_specs = signature.structured_input_signature

    def describe(name: str, spec: Any) -> dict[str, Any]:
        shape = [-1 if dim is None else int(dim) for dim in spec.shape.as_list()]
        return {"name": name, "datatype": datatype_of(spec.dtype.name), "shape": shape}

    return (
        [describe(name, spec) for name, spec in sorted(input_specs.items())],
        [describe(name, spec) for name, spec in sorted(signature.structured_outputs.items())],
    )


def write_light_artifact(saved_model_dir: Path) -> bool:
    """Converts the SavedModel's ``serve`` signature to ``model.tflite`` beside it, the
    artifact the server runs without TensorFlow (:mod:`.runtime_litert`). Best effort: a
    graph with ops LiteRT lacks is logged and served by TensorFlow. True when written."""
    import tensorflow as tf

    try:
        converter = tf.lite.TFLiteConverter.from_saved_model(
            str(saved_model_dir), signature_keys=[SIGNATURE]
        )
        flat = converter.convert()
    except Exception as exc:  # the converter raises many kinds; none may fail training
        log.warning(
            "no LiteRT artifact: the SavedModel is served by TensorFlow",
            extra={"error": f"{type(exc).__name__}: {str(exc)[:500]}"},
        )
        return False
    (saved_model_dir / LIGHT_FILE).write_bytes(flat)
    return True


def save_version(
    model: Any,
    output: Path | str | None = None,
    *,
    metrics: Mapping[str, float],
    version: int | None = None,
    classes: list[str] | None = None,
    metadata: Mapping[str, Any] | None = None,
    chief: bool | None = None,
    trained_at: str | None = None,
) -> Path:
    """Exports ``model`` (a Keras model) as version ``version`` into ``output``.

    ``output`` defaults to ``MSO_OUTPUT`` and ``version`` to ``MSO_VERSION`` (else the
    directory's ``vN`` name); ``metadata`` adds fields to ``metadata.json`` (e.g.
    ``hyperparameters``). Returns the published directory (a discarded scratch copy on a
    worker that is not the chief).
    """
    target = Path(output) if output is not None else report.output_dir()
    is_chief = report.is_chief() if chief is None else chief
    if not is_chief:
        scratch = Path(tempfile.mkdtemp(prefix="mso-worker-export-"))
        try:
            model.export(str(scratch / "model"), verbose=False)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return scratch
    number = version if version is not None else report.version()
    if number is None:
        number = version_from_dir(target)
    staged = StagedOutput(target)
    try:
        model.export(str(staged.staging), verbose=False)
        inputs, outputs = signature_tensors(staged.staging)
        light = write_light_artifact(staged.staging)
        document: dict[str, Any] = {
            "version": number,
            "metrics": {name: round(float(value), 6) for name, value in metrics.items()},
            "trainedAt": trained_at or datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "inputs": inputs,
            "outputs": outputs,
            "signature": SIGNATURE,
            # The artifacts a server may run: the SavedModel always, LiteRT when converted.
            "runtimes": ["tensorflow", *(["litert"] if light else [])],
        }
        if classes is not None:
            document["classes"] = list(classes)
        document.update(metadata or {})
        (staged.staging / METADATA_FILE).write_text(json.dumps(document, indent=2) + "\n")
        staged.publish()
    except BaseException:
        staged.discard()
        raise
    return target
