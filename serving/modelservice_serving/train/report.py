"""What the operator reads from a training pod: epoch lines on stdout, a termination message."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# Kubernetes keeps at most 4096 bytes of a termination message; stay well inside.
MAX_MESSAGE_BYTES = 4000


def epoch_line(epoch: int, epochs: int, logs: dict[str, Any]) -> str:
    """The progress line the operator tails from the pod log for ``status.training``."""
    line: dict[str, Any] = {"event": "epoch", "epoch": epoch, "epochs": epochs}
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        if key in logs:
            line[key] = round(float(logs[key]), 6)
    return json.dumps(line)


def print_line(line: str) -> None:
    """Writes one line to stdout and flushes, so the line reaches the log at once."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def succeeded(
    version: int | None,
    uri: str,
    metrics: dict[str, float],
    trained_at: str,
    lineage: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The success message; ``lineage`` (dataset URI redacted, its SHA-256, hyperparameters)
    lets the operator record where a version came from in ``status.versions``."""
    return {
        "status": "Succeeded",
        "version": version,
        "uri": uri,
        "metrics": metrics,
        "trainedAt": trained_at,
        **(lineage or {}),
    }


def failed(reason: str, message: str) -> dict[str, Any]:
    return {"status": "Failed", "reason": reason, "message": message}


def write_termination_message(path: Path, result: dict[str, Any]) -> None:
    """Writes the result for the kubelet; outside a pod the file may not exist, which is fine."""
    text = json.dumps(result, separators=(",", ":"))
    if len(text.encode()) > MAX_MESSAGE_BYTES and "message" in result:
        overflow = len(text.encode()) - MAX_MESSAGE_BYTES + 3
        result = {**result, "message": result["message"][: -overflow or None] + "..."}
        text = json.dumps(result, separators=(",", ":"))
    try:
        path.write_text(text)
    except OSError as exc:
        log.warning("termination message not written", extra={"path": str(path), "error": str(exc)})


def json_line(event: dict[str, Any]) -> str:
    return json.dumps(event)
