"""The one URL redaction: no user info, query string or fragment survives."""

from __future__ import annotations

import pytest

from modelservice_serving.redact import redact_json, redact_text, redact_url

pytestmark = pytest.mark.unit

PRESIGNED = (
    "https://bucket.s3.amazonaws.com/m.tgz?X-Amz-Algorithm=AWS4-HMAC-SHA256"
    "&X-Amz-Credential=AKIAFAKE%2F20261201&X-Amz-Signature=deadbeef"
)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (PRESIGNED, "https://bucket.s3.amazonaws.com/m.tgz?REDACTED"),
        ("https://user:hunter2@host:8443/a/b.zip", "https://REDACTED@host:8443/a/b.zip"),
        ("http://token@host/m.tgz?sig=1#frag", "http://REDACTED@host/m.tgz?REDACTED"),
        ("https://host/m.tgz#access_token=x", "https://host/m.tgz"),
        ("https://host/plain.tar.gz", "https://host/plain.tar.gz"),
        ("pvc://claim/v3", "pvc://claim/v3"),
        ("digits", "digits"),
        ("/data/train.csv", "/data/train.csv"),
        ("http://[::1/m?x=1", "http://REDACTED"),  # unparseable: nothing of it kept
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


def test_redact_text_finds_every_url_in_a_message() -> None:
    message = (
        f"GET {PRESIGNED}: HTTP 403 Forbidden; redirected from "
        "'http://u:p@mirror.example/x.csv?token=t0k3n'"
    )
    redacted = redact_text(message)
    for secret in ("deadbeef", "AKIAFAKE", "t0k3n", "u:p@"):
        assert secret not in redacted
    assert redacted == (
        "GET https://bucket.s3.amazonaws.com/m.tgz?REDACTED: HTTP 403 Forbidden; redirected "
        "from 'http://REDACTED@mirror.example/x.csv?REDACTED'"
    )


def test_redact_json_reaches_every_string() -> None:
    status = {
        "model": {"uri": "https://h/m.tgz?sig=1", "version": 3},
        "conditions": [{"message": "GET http://a:b@h/x: HTTP 404 Not Found", "status": "False"}],
    }
    assert redact_json(status) == {
        "model": {"uri": "https://h/m.tgz?REDACTED", "version": 3},
        "conditions": [
            {"message": "GET http://REDACTED@h/x: HTTP 404 Not Found", "status": "False"}
        ],
    }
