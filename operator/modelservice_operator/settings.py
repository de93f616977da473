"""Operator configuration, read once from ``MSO_OPERATOR_*`` environment variables."""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["OperatorSettings", "get_settings"]


class OperatorSettings(BaseSettings):
    """What the operator needs to know that is not in a ModelService.

    Every field reads ``MSO_OPERATOR_<FIELD>``; lists are comma separated.
    """

    model_config = SettingsConfigDict(env_prefix="MSO_OPERATOR_", extra="ignore")

    default_image: str = Field(
        "modelservice-serving:latest",
        description="Image for training Jobs and predictors when the spec names none.",
    )
    image_pull_policy: str = Field("IfNotPresent", description="Pull policy of child pods.")
    namespaces: str = Field(
        "", description="Comma-separated namespaces to watch; empty watches all namespaces."
    )
    reconcile_interval_s: float = Field(
        15.0, gt=0, description="Seconds between level-based resyncs of every ModelService."
    )
    gpu_resource: str = Field("nvidia.com/gpu", description="Default extended resource of GPUs.")
    gpu_toleration_key: str = Field(
        "nvidia.com/gpu", description="Taint key tolerated (Exists, NoSchedule) by GPU pods."
    )
    gpu_product_label: str = Field(
        "nvidia.com/gpu.product", description="Node label selecting a GPU product."
    )
    cluster_domain: str = Field("cluster.local", description="DNS suffix of Service URLs.")
    log_tail_lines: int = Field(20, ge=1, description="Training log lines read for progress.")
    history_limit: int = Field(20, ge=1, description="Model versions kept in status.versions.")
    # Off by default: the operator also runs outside a pod (tests, local development, several
    # on one host), where a fixed port would collide; the chart and kustomize turn it on.
    metrics_port: int = Field(
        0, ge=0, le=65535, description="Port of the Prometheus /metrics endpoint; 0 is off."
    )

    max_concurrent_reconciles: int = Field(
        10,
        ge=1,
        description="Reconciles that run at once; more ModelServices wait in the work queue.",
    )
    backoff_base_s: float = Field(
        1.0, gt=0, description="First retry delay of a ModelService whose reconcile failed."
    )
    backoff_max_s: float = Field(
        120.0, gt=0, description="Longest retry delay (doubling from backoff_base_s, jittered)."
    )
    # High availability: replicas compete for a coordination.k8s.io Lease; only the holder
    # runs kopf's watches and reconciles, the others wait (see leader.py).
    leader_election: bool = Field(
        False, description="Hold a Lease before reconciling (run several replicas)."
    )
    leader_election_namespace: str = Field(
        "", description="Namespace of the Lease; empty: the pod's own namespace."
    )
    leader_election_id: str = Field("modelservice-operator", description="Name of the Lease.")
    identity: str = Field(
        "", description="This replica's name in the Lease; empty: hostname and a random suffix."
    )
    lease_duration_s: float = Field(
        8.0, gt=0, description="Seconds a standby waits after the last renewal before taking over."
    )
    lease_renew_deadline_s: float = Field(
        6.0, gt=0, description="The leader stops (exits) when it could not renew for this long."
    )
    lease_retry_period_s: float = Field(
        2.0, gt=0, description="Seconds between renewals, and between a standby's tries."
    )
    liveness: str = Field(
        "",
        description="kopf's liveness endpoint URL; a standby serves the same /healthz itself.",
    )

    @model_validator(mode="after")
    def _check_timing(self) -> OperatorSettings:
        if self.backoff_max_s < self.backoff_base_s:
            raise ValueError("backoff_max_s must not be below backoff_base_s")
        if not self.lease_retry_period_s < self.lease_renew_deadline_s < self.lease_duration_s:
            raise ValueError(
                "need lease_retry_period_s < lease_renew_deadline_s < lease_duration_s"
            )
        return self

    keda: Literal["auto", "off"] = Field(
        "auto",
        description="auto: use KEDA ScaledObjects when scaledobjects.keda.sh is served (needs "
        "their RBAC); off: always the HorizontalPodAutoscaler.",
    )
    keda_namespace: str = Field(
        "keda",
        min_length=1,
        description="Namespace of KEDA's operator, which scrapes the predictors' metrics port; "
        "a predictor scaled by KEDA admits it in its NetworkPolicy.",
    )
    keda_check_interval_s: float = Field(
        30.0, ge=0, description="Seconds a KEDA API discovery result is reused."
    )

    @property
    def namespace_list(self) -> list[str]:
        """The watched namespaces, or an empty list for the whole cluster."""
        return [ns.strip() for ns in self.namespaces.split(",") if ns.strip()]


@lru_cache(maxsize=1)
def get_settings() -> OperatorSettings:
    """Return the process-wide settings (read from the environment once)."""
    return OperatorSettings()
