"""``python -m modelservice_serving train``: run the pipeline and report the result."""

from __future__ import annotations

import logging
import os
import sys
import traceback
from pathlib import Path
from typing import Any

from .. import logs
from ..redact import redact_text
from ..settings import TrainSettings
from . import report
from .errors import TrainingError

log = logging.getLogger(__name__)


def run(settings: TrainSettings) -> int:
    """Trains; the exit code and termination message say how it went."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from . import distribution, pipeline

    try:
        pipeline.configure_threads()
        place = distribution.placement()
        result = pipeline.train(settings, place)
    except TrainingError as exc:
        return fail(settings.termination_log, exc.reason, exc.message, exc.details)
    except Exception as exc:  # a bug or an environment fault: keep the trace in the log
        traceback.print_exc()
        return fail(settings.termination_log, "InternalError", f"{type(exc).__name__}: {exc}")
    message = report.succeeded(
        result.version, result.uri, result.metrics, result.trained_at, result.lineage
    )
    report.print_line(report.json_line({"event": "completed", **message}))
    if place.is_chief:
        report.write_termination_message(settings.termination_log, message)
    return 0


def fail(
    termination_log: Path, reason: str, message: str, details: dict[str, Any] | None = None
) -> int:
    """One clear line on stderr, the same in the termination message, a non-zero exit."""
    # A message may quote the dataset URI: never with its query string or user info.
    one_line = " ".join(redact_text(message).split())
    sys.stderr.write(f"error: {reason}: {one_line}\n")
    sys.stderr.flush()
    result = {**report.failed(reason, one_line), **(details or {})}
    report.write_termination_message(termination_log, result)
    return 1


def configure_logging() -> None:
    logs.configure(os.environ.get("MSO_LOG_LEVEL", "info"))
