"""The headless Service of a multi-worker training Job: stable DNS names for its workers.

An Indexed Job's pod ``i`` is named ``<job>-<i>`` and, with ``subdomain: <service>``, is
reachable as ``<job>-<i>.<service>``; the workers' ``TF_CONFIG`` lists those names.
"""

from __future__ import annotations

from typing import Any

from modelservice_serving.contract import WORKER_PORT

from .common import Owner, child_metadata

__all__ = ["JOB_NAME_LABEL", "build_workers_service", "worker_hosts", "workers_service_name"]

# The label the Job controller puts on every pod of a Job.
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"


def workers_service_name(job: str) -> str:
    """The headless Service of ``job`` has the Job's name."""
    return job


def worker_hosts(job: str, workers: int) -> list[str]:
    """``host:port`` of each worker, in index order."""
    service = workers_service_name(job)
    return [f"{job}-{index}.{service}:{WORKER_PORT}" for index in range(workers)]


def build_workers_service(owner: Owner, job: str) -> dict[str, Any]:
    """Return the headless Service that names the pods of the training Job ``job``."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": child_metadata(owner, workers_service_name(job), "training-workers"),
        "spec": {
            "clusterIP": "None",
            "selector": {JOB_NAME_LABEL: job},
            # Workers look each other up while starting, before anyone is ready.
            "publishNotReadyAddresses": True,
            "ports": [{"name": "tf-worker", "port": WORKER_PORT, "protocol": "TCP"}],
        },
    }
