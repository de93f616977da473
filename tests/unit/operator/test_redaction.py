"""The operator's log filter: a URL's credentials never reach a log line or kopf's Events."""

from __future__ import annotations

import logging

import pytest

from modelservice_operator import redaction

pytestmark = pytest.mark.unit


def test_log_records_are_redacted(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("modelservice_operator.test")
    caplog.handler.addFilter(redaction.RedactingFilter())
    with caplog.at_level(logging.INFO):
        logger.info("serving %s", "https://u:pw@h/m.tgz?X-Amz-Signature=abc")
        logger.info("no url here: %d", 3)
    assert caplog.messages == ["serving https://REDACTED@h/m.tgz?REDACTED", "no url here: 3"]


def test_install_adds_the_filter_once() -> None:
    handler = logging.NullHandler()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        redaction.install()
        redaction.install()
        assert sum(isinstance(f, redaction.RedactingFilter) for f in handler.filters) == 1
    finally:
        root.removeHandler(handler)
