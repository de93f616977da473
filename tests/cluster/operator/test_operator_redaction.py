"""No credential in a URL reaches status or Events, through the real API server."""

from __future__ import annotations

import json
from typing import Any

from opharness import OperatorProcess, apply, sample_manifest, sim_failure, wait_until

SECRET_URL = "https://user:pa55word@data.example/d.csv?X-Amz-Signature=s1gnature"


def test_failure_message_with_a_presigned_url_is_redacted(
    operator: OperatorProcess, namespace: str
) -> None:
    manifest = sample_manifest(accuracy=None)
    manifest["spec"]["training"]["backoffLimit"] = 0
    manifest["spec"]["training"]["podAnnotations"] = sim_failure(
        "DatasetDownloadFailed", f"could not download: GET {SECRET_URL}: HTTP 403 Forbidden"
    )
    ms = apply(operator.cluster, manifest, namespace)
    ms.wait_phase("Failed")
    ready = ms.condition("Ready")
    assert "GET https://REDACTED@data.example/d.csv?REDACTED: HTTP 403" in ready["message"]

    def events() -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = operator.cluster.get(
            "events", "-n", namespace, "--field-selector", "involvedObject.kind=ModelService"
        )["items"]
        return items

    # Events are posted in the background, after the status that they follow.
    wait_until(
        "the BackoffLimitExceeded event",
        lambda: [e for e in events() if e["reason"] == "BackoffLimitExceeded"],
        10,
    )
    written = json.dumps(ms.status()) + json.dumps(events()) + operator.logs()
    for secret in ("pa55word", "s1gnature"):
        assert secret not in written
