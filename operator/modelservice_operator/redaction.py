"""Log redaction: no URL's user info or query string reaches the operator's log or events.

Status and Events are redacted where they are written (:mod:`.kube`); this filter does the
same for log records, including those kopf turns into Events (its ``kopf.objects`` logger).
"""

from __future__ import annotations

import logging

from modelservice_serving.redact import redact_text

__all__ = ["RedactingFilter", "install"]

# kopf posts records of this logger as Kubernetes Events.
KOPF_OBJECTS_LOGGER = "kopf.objects"


class RedactingFilter(logging.Filter):
    """Rewrites a record's message with every URL in it redacted; never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact_text(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


def install() -> None:
    """Add the filter to every handler of the root and kopf's object logger (once)."""
    for logger in (logging.getLogger(), logging.getLogger(KOPF_OBJECTS_LOGGER)):
        for handler in logger.handlers:
            if not any(isinstance(f, RedactingFilter) for f in handler.filters):
                handler.addFilter(RedactingFilter())
