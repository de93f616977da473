"""Scale-out: TF_CONFIG (set by the operator on each worker pod) picks the strategy."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

from ..workers import reachable_tf_config


@dataclass(frozen=True)
class Placement:
    """Which strategy to train under, and whether this process writes the model."""

    strategy: Any
    is_chief: bool
    workers: int


def cluster_from_env() -> tuple[dict[str, Any], dict[str, Any]]:
    """The ``cluster`` and ``task`` of TF_CONFIG, both empty without it."""
    raw = os.environ.get("TF_CONFIG", "").strip()
    if not raw:
        return {}, {}
    config = json.loads(raw)
    return dict(config.get("cluster") or {}), dict(config.get("task") or {})


def is_chief(cluster: dict[str, Any], task: dict[str, Any]) -> bool:
    """The chief task, or worker 0 when the cluster names no chief, writes the model."""
    if not cluster:
        return True
    task_type, index = task.get("type"), int(task.get("index", 0))
    if "chief" in cluster:
        return bool(task_type == "chief")
    return task_type == "worker" and index == 0


def placement() -> Placement:
    """MultiWorkerMirroredStrategy when TF_CONFIG names a cluster, else the default strategy.

    Must run before any other TensorFlow op: the collective runtime is set up once.
    """
    import tensorflow as tf

    reachable_tf_config()  # peers by DNS name, or by IP through the store where DNS is missing
    cluster, task = cluster_from_env()
    if not cluster:
        return Placement(tf.distribute.get_strategy(), True, 1)
    workers = sum(len(cluster.get(kind, [])) for kind in ("chief", "worker"))
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    return Placement(strategy, is_chief(cluster, task), workers)
