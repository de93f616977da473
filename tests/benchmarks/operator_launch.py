"""Run the operator (``kopf run ARGS``) counting every HTTP request it sends to the API.

Both of the operator's clients, kopf's own (watches, annotation patches, events) and the
reconciler's kubernetes_asyncio, send through ``aiohttp.ClientSession._request``; this
wraps it before kopf starts and writes the counts, by method and resource (``watch`` for
watch streams), to the JSON file named by ``MSO_BENCH_COUNTS`` twice a second. The
operator's code is whatever ``modelservice_operator`` is importable (``PYTHONPATH``), so
the same launcher measures main's operator and a branch's.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp

COUNTS: Counter[str] = Counter()
_LOCK = threading.Lock()
_original = aiohttp.ClientSession._request


def resource_of(url: str) -> str:
    """``jobs``, ``modelservices/status``, ``pods/log``... from a request URL."""
    parts = [p for p in urlsplit(url).path.split("/") if p]
    if "namespaces" in parts and len(parts) > parts.index("namespaces") + 2:
        rest = parts[parts.index("namespaces") + 2 :]
    else:
        rest = parts[2:] if parts[:1] == ["api"] else parts[3:]
    if not rest:
        return "/".join(parts[-1:]) or "/"
    return rest[0] + (f"/{rest[2]}" if len(rest) > 2 else "")


async def _counting(
    self: aiohttp.ClientSession, method: str, url: Any, *args: Any, **kwargs: Any
) -> Any:
    text = str(url)
    params = kwargs.get("params")
    watch = "watch=true" in text or (
        isinstance(params, dict) and str(params.get("watch")).lower() == "true"
    )
    key = f"{method.upper()} {resource_of(text)}{' watch' if watch else ''}"
    with _LOCK:
        COUNTS[key] += 1
    return await _original(self, method, url, *args, **kwargs)


def _dump(path: Path) -> None:
    while True:
        with _LOCK:
            snapshot = {"at": time.time(), "counts": dict(COUNTS), "total": sum(COUNTS.values())}
        snapshot["queue"] = _queue_stats()
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(snapshot))
        tmp.replace(path)
        time.sleep(0.5)


def _queue_stats() -> dict[str, float]:
    """The work queue's waits so far (sum and count of seconds a due key waited for a
    worker) and the successful reconciles' wall time, from the operator's own registry;
    empty before the operator imported it."""
    metrics = sys.modules.get("modelservice_operator.metrics")
    # Read from another thread: the module may be importing still.
    registry = getattr(metrics, "REGISTRY", None)
    if registry is None:
        return {}
    name = "modelservice_operator_queue_wait_seconds"
    took = "modelservice_operator_reconcile_duration_seconds"
    success = {"result": "success"}
    try:
        return {
            "wait_sum": registry.get_sample_value(f"{name}_sum") or 0.0,
            "wait_count": registry.get_sample_value(f"{name}_count") or 0.0,
            "reconcile_sum": registry.get_sample_value(f"{took}_sum", success) or 0.0,
            "reconcile_count": registry.get_sample_value(f"{took}_count", success) or 0.0,
        }
    except RuntimeError:  # a collector registered while this thread read them
        return {}


def main() -> None:
    aiohttp.ClientSession._request = _counting  # type: ignore[method-assign]
    target = os.environ.get("MSO_BENCH_COUNTS")
    if target:
        threading.Thread(target=_dump, args=(Path(target),), daemon=True).start()
    from kopf.cli import main as kopf_main

    sys.argv = ["kopf", *sys.argv[1:]]
    kopf_main()


if __name__ == "__main__":
    main()
