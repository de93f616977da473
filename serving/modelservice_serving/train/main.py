"""``python -m modelservice_serving train``: run the pipeline and report the result."""

from __future__ import annotations

import logging
import os
import traceback
from pathlib import Path
from typing import Any

from .. import logs, report
from ..contract import TrainingFailure
from ..redact import redact_text
from ..settings import TrainSettings
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
        return fail(
            settings.termination_log, TrainingFailure.INTERNAL_ERROR, f"{type(exc).__name__}: {exc}"
        )
    report.succeeded(
        result.metrics,
        version_number=result.version,
        uri=result.uri,
        trained_at=result.trained_at,
        lineage=result.lineage,
        path=settings.termination_log,
    )
    return 0


def fail(
    termination_log: Path, reason: str, message: str, details: dict[str, Any] | None = None
) -> int:
    """One clear line on stderr, the same in the termination message, a non-zero exit."""
    highest = (details or {}).get("highestVersion")
    return report.failed(
        reason,
        # A message may quote the dataset URI: never with its query string or user info.
        redact_text(message),
        path=termination_log,
        highest_version=highest if isinstance(highest, int) else None,
    )


def configure_logging() -> None:
    logs.configure(os.environ.get("MSO_LOG_LEVEL", "info"))
