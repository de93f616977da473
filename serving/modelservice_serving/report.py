"""What training code tells the operator: progress lines and the result message.

The built-in trainer uses these functions, and so can your own training code in an image that
has this package installed (``spec.training.image`` with ``command``)::

    from modelservice_serving import report
    from modelservice_serving.export import save_version

    for epoch in range(1, epochs + 1):
        logs = train_one_epoch()
        report.epoch(epoch, epochs, loss=logs["loss"], accuracy=logs["accuracy"])
    save_version(model, metrics={"accuracy": acc, "loss": loss})
    report.succeeded({"accuracy": acc, "loss": loss})

or ``sys.exit(report.failed("DatasetNotFound", "no file at ..."))``.

Paths and the version default to the environment the operator sets (``MSO_OUTPUT``,
``MSO_VERSION``, ``MSO_TERMINATION_LOG``). Under a multi-worker ``TF_CONFIG`` only the chief
(worker 0 when no chief is named) prints and reports; the other workers' calls do nothing.
Standard library and pydantic only.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import contract
from .contract import EpochEvent, Failed, Succeeded

__all__ = [
    "epoch",
    "failed",
    "is_chief",
    "output_dir",
    "succeeded",
    "termination_log",
    "version",
    "write_result",
]

log = logging.getLogger(__name__)


def is_chief() -> bool:
    """Whether this process writes the version and reports (always, without TF_CONFIG)."""
    raw = os.environ.get("TF_CONFIG", "").strip()
    if not raw:
        return True
    config = json.loads(raw)
    cluster, task = config.get("cluster") or {}, config.get("task") or {}
    if not cluster:
        return True
    if "chief" in cluster:
        return bool(task.get("type") == "chief")
    return task.get("type") == "worker" and int(task.get("index", 0)) == 0


def output_dir() -> Path:
    """The version directory to write (``MSO_OUTPUT``)."""
    value = os.environ.get(contract.ENV_OUTPUT)
    if not value:
        raise RuntimeError(f"{contract.ENV_OUTPUT} is not set: where should the model go?")
    return Path(value)


def version() -> int | None:
    """The version number (``MSO_VERSION``), None when not set."""
    value = os.environ.get(contract.ENV_VERSION, "").strip()
    return int(value) if value else None


def termination_log() -> Path:
    """Where the result goes (``MSO_TERMINATION_LOG``, else ``/dev/termination-log``)."""
    return Path(os.environ.get(contract.ENV_TERMINATION_LOG) or contract.TERMINATION_LOG)


def _print(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def epoch(epoch: int, epochs: int | None = None, **metrics: float | None) -> EpochEvent:
    """Prints one progress line (``loss``, ``accuracy``, ``val_loss``, ``val_accuracy``)."""
    known = {
        key: round(float(value), 6)
        for key, value in metrics.items()
        if key in ("loss", "accuracy", "val_loss", "val_accuracy") and value is not None
    }
    event = EpochEvent(epoch=epoch, epochs=epochs, **known)
    if is_chief():
        _print(event.line())
    return event


def write_result(result: Succeeded | Failed, path: Path | None = None) -> None:
    """Writes the result for the kubelet; outside a pod the file may not exist, which is fine."""
    target = path if path is not None else termination_log()
    try:
        target.write_text(contract.result_json(result))
    except OSError as exc:
        log.warning(
            "termination message not written", extra={"path": str(target), "error": str(exc)}
        )


def succeeded(
    metrics: Mapping[str, float],
    *,
    version_number: int | None = None,
    uri: str | None = None,
    trained_at: str | None = None,
    path: Path | None = None,
    lineage: Mapping[str, Any] | None = None,
) -> Succeeded:
    """Reports success: the last stdout line and the termination message (chief only).

    ``lineage``: ``datasetUri`` (redacted), ``datasetSha256`` and ``hyperparameters``, which
    the operator records for the version in ``status.versions``.
    """
    result = Succeeded.model_validate(
        {
            **(lineage or {}),
            "version": version_number if version_number is not None else version(),
            "uri": uri if uri is not None else os.environ.get(contract.ENV_OUTPUT, ""),
            "metrics": {name: round(float(value), 6) for name, value in metrics.items()},
            "trainedAt": trained_at or datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
    )
    if is_chief():
        _print(contract.completed_line(result))
        write_result(result, path)
    return result


def failed(
    reason: str,
    message: str,
    *,
    path: Path | None = None,
    highest_version: int | None = None,
) -> int:
    """Reports failure on stderr and in the termination message; returns the exit code 1.

    Every worker reports its own failure: the one that failed is the one the operator shows.
    ``highest_version``: with ``OutputExists``, the highest version the store holds.
    """
    one_line = " ".join(message.split())
    sys.stderr.write(f"error: {reason}: {one_line}\n")
    sys.stderr.flush()
    result = Failed(reason=reason, message=one_line, highestVersion=highest_version)
    write_result(result, path)
    return 1
