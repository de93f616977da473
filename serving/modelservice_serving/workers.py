"""Where the other workers of a multi-worker training Job are: ``TF_CONFIG``, made reachable.

The operator gives every worker a ``TF_CONFIG`` that names its peers by DNS
(``<job>-<i>.<service>:2222``, the Indexed Job's pods behind a headless Service). A cluster
without DNS for pods (a bare test cluster) cannot resolve those names; there the workers meet
through the model store they all mount instead: each writes its pod IP under
``MSO_WORKER_RENDEZVOUS`` and waits for the others', and ``TF_CONFIG`` is rewritten with the
addresses. Call :func:`reachable_tf_config` before creating MultiWorkerMirroredStrategy (the
built-in trainer does; so can your own code), and :func:`clear_rendezvous` once the model
is saved, so that the store keeps no directory per trained version. Standard library only.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import socket
import time
from pathlib import Path
from typing import Any

from . import contract

__all__ = ["clear_rendezvous", "reachable_tf_config"]

log = logging.getLogger(__name__)

RESOLVE_WAIT_S = 20.0  # DNS records of new pods take a moment to appear


def _resolves(host: str) -> bool:
    try:
        socket.getaddrinfo(host, None)
    except OSError:
        return False
    return True


def _all_resolve(hosts: list[str], wait_s: float) -> bool:
    deadline = time.monotonic() + wait_s
    while True:
        if all(_resolves(host.rpartition(":")[0]) for host in hosts):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(1.0)


def _rendezvous(
    directory: Path, index: int, address: str, workers: int, wait_s: float
) -> list[str]:
    """Publish ``address`` as worker ``index``; return every worker's address in order."""
    directory.mkdir(parents=True, exist_ok=True)
    mine = directory / str(index)
    partial = directory / f".{index}.{os.getpid()}"
    partial.write_text(address)
    partial.rename(mine)  # readers see a whole address or none
    deadline = time.monotonic() + wait_s
    while True:
        found = {path.name: path.read_text().strip() for path in directory.iterdir()}
        addresses = [found.get(str(i), "") for i in range(workers)]
        if all(addresses):
            return addresses
        if time.monotonic() >= deadline:
            missing = [str(i) for i, value in enumerate(addresses) if not value]
            raise TimeoutError(f"workers {', '.join(missing)} did not report their address")
        time.sleep(1.0)


def reachable_tf_config(
    resolve_wait_s: float = RESOLVE_WAIT_S, rendezvous_wait_s: float = 600.0
) -> dict[str, Any] | None:
    """``TF_CONFIG`` with peers this pod can reach (also written back to the environment).

    None without a multi-worker ``TF_CONFIG``. Names that resolve are kept; otherwise, with
    ``MSO_WORKER_RENDEZVOUS`` and ``MSO_POD_IP`` set, the workers' IPs replace them.
    """
    raw = os.environ.get("TF_CONFIG", "").strip()
    if not raw:
        return None
    config: dict[str, Any] = json.loads(raw)
    hosts = list((config.get("cluster") or {}).get("worker") or [])
    if len(hosts) < 2 or "chief" in (config.get("cluster") or {}):
        return config
    directory = os.environ.get(contract.ENV_WORKER_RENDEZVOUS)
    pod_ip = os.environ.get(contract.ENV_POD_IP)
    if not directory or not pod_ip or _all_resolve(hosts, resolve_wait_s):
        return config
    index = int((config.get("task") or {}).get("index", 0))
    port = hosts[index].rpartition(":")[2] or str(contract.WORKER_PORT)
    log.info("worker names do not resolve: meeting through %s", directory)
    addresses = _rendezvous(
        Path(directory), index, f"{pod_ip}:{port}", len(hosts), rendezvous_wait_s
    )
    log.info("workers met through %s: %s", directory, ",".join(addresses))
    config["cluster"]["worker"] = addresses
    os.environ["TF_CONFIG"] = json.dumps(config)
    return config


def clear_rendezvous() -> None:
    """Remove this Job's rendezvous directory (``MSO_WORKER_RENDEZVOUS``), if it has one.

    For the chief, after the model is saved: every worker met its peers before the first
    collective, so nobody reads it again; without this each multi-worker version left one
    behind in the model store.
    """
    directory = os.environ.get(contract.ENV_WORKER_RENDEZVOUS)
    if directory:
        shutil.rmtree(directory, ignore_errors=True)
        with contextlib.suppress(OSError):  # ``.workers`` itself, once the last one is gone
            Path(directory).parent.rmdir()
