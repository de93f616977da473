"""Pydantic models of the ModelService spec and status (camelCase on the wire).

These models and the CRD's OpenAPI schema describe the same object; a unit test keeps them in
agreement. Validation that users need at apply time lives in the CRD (schema and CEL); the
models repeat the bounds so that the operator never acts on an object the API would refuse.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from modelservice_serving.contract import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_MAX_BATCH_SIZE,
    DEFAULT_MAX_LATENCY_MS,
)

__all__ = [
    "AccessSpec",
    "AuthSpec",
    "AutoscalerStatus",
    "AutoscalingMetric",
    "AutoscalingSpec",
    "BatchingSpec",
    "Condition",
    "EnvVar",
    "GPUSpec",
    "ModelRef",
    "ModelService",
    "ModelServiceSpec",
    "ModelServiceStatus",
    "ModelStatus",
    "ModelVersionRecord",
    "Phase",
    "PodPeer",
    "PodSpecFields",
    "QualityGateSpec",
    "ResourceRequirements",
    "SecretKeyRef",
    "SecretReference",
    "ServingSpec",
    "ServingStatus",
    "StorageSpec",
    "Toleration",
    "TrainingSpec",
    "TrainingStatus",
    "VersionMetrics",
]

Quantity = int | str
AccessMode = Literal["ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany", "ReadWriteOncePod"]
Phase = Literal["Pending", "Training", "Deploying", "Ready", "Degraded", "Failed"]


class _Wire(BaseModel):
    """Base of every model: camelCase aliases, unknown fields refused."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=False
    )

    def wire(self) -> dict[str, Any]:
        """Return the camelCase JSON form without unset optional fields."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class ResourceRequirements(_Wire):
    """Kubernetes container resources (requests and limits by resource name)."""

    requests: dict[str, Quantity] | None = None
    limits: dict[str, Quantity] | None = None


class Toleration(_Wire):
    """A Kubernetes pod toleration."""

    key: str | None = None
    operator: Literal["Exists", "Equal"] | None = None
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = None


class EnvVar(_Wire):
    """A container environment variable (``valueFrom`` as in Kubernetes)."""

    name: str
    value: str | None = None
    value_from: dict[str, Any] | None = None


class GPUSpec(_Wire):
    """GPUs per pod: an extended resource count and an optional product."""

    count: int = Field(1, ge=0, le=64)
    product: str | None = Field(None, max_length=128)
    resource: str | None = Field(None, max_length=253)


class SecretReference(_Wire):
    """A Secret in the ModelService's namespace, mounted into a pod as files."""

    secret_name: str = Field(min_length=1, max_length=253)


class PodSpecFields(_Wire):
    """Pod-level settings shared by training and serving."""

    image: str | None = Field(None, max_length=512)
    resources: ResourceRequirements | None = None
    gpu: GPUSpec | None = None
    node_selector: dict[str, str] | None = None
    tolerations: list[Toleration] | None = Field(None, max_length=32)
    affinity: dict[str, Any] | None = None
    priority_class_name: str | None = Field(None, max_length=253)
    service_account_name: str | None = Field(None, max_length=253)
    env: list[EnvVar] | None = Field(None, max_length=128)
    pod_annotations: dict[str, str] | None = None


class TrainingSpec(PodSpecFields):
    """How to train a model version: data, hyperparameters, and the Job's pod."""

    dataset: str = Field(max_length=2048)
    dataset_credentials: SecretReference | None = None
    label_column: str | None = Field(None, max_length=253)
    epochs: int = Field(10, ge=1, le=10000)
    batch_size: int = Field(DEFAULT_BATCH_SIZE, ge=1, le=65536)
    learning_rate: float = Field(0.001, gt=0, le=10)
    hidden_units: list[int] = Field(default_factory=lambda: [128], min_length=1, max_length=16)
    validation_split: float | None = Field(None, ge=0, lt=1)
    test_split: float | None = Field(None, gt=0, lt=1)
    seed: int | None = Field(None, ge=0)
    backoff_limit: int = Field(2, ge=0, le=100)
    active_deadline_seconds: int | None = Field(None, ge=1)
    history_limit: int = Field(3, ge=1, le=100)
    command: list[str] | None = Field(None, min_length=1, max_length=64)
    args: list[str] | None = Field(None, max_length=256)
    # None (not 1) by default: an unset field keeps the training hash of older specs.
    workers: int | None = Field(None, ge=1, le=64)

    def identity(self) -> dict[str, Any]:
        """What makes a model version: the wire form less bookkeeping (``historyLimit``).

        Its hash names the training Job, so a field added here would retrain every
        ModelService on an operator upgrade; bookkeeping fields stay out of it.
        """
        wire = self.wire()
        wire.pop("historyLimit", None)
        return wire

    @model_validator(mode="after")
    def _own_code_needs_an_image(self) -> TrainingSpec:
        if self.command is not None and self.image is None:
            raise ValueError("spec.training.command needs spec.training.image")
        if self.args is not None and self.command is None:
            raise ValueError("spec.training.args needs spec.training.command")
        return self

    @property
    def worker_count(self) -> int:
        """Training processes: ``workers``, 1 when unset."""
        return self.workers or 1


class ModelRef(_Wire):
    """An existing model to serve (``uri``) and/or a version pin."""

    uri: str | None = Field(None, max_length=2048)
    credentials: SecretReference | None = None
    version: int | None = Field(None, ge=1)


class QualityGateSpec(_Wire):
    """The bar a trained version must meet to be promoted.

    ``accuracy`` is higher-is-better and takes ``minimum``; ``loss`` is lower-is-better and
    takes ``maximum``. The CRD's CEL rules refuse the other combinations at apply time.
    """

    metric: Literal["accuracy", "loss"] = "accuracy"
    minimum: float | None = Field(None, ge=0, le=1)
    maximum: float | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _bound_fits_metric(self) -> QualityGateSpec:
        if self.metric == "accuracy" and (self.minimum is None or self.maximum is not None):
            raise ValueError("metric accuracy (higher is better) takes minimum, not maximum")
        if self.metric == "loss" and (self.maximum is None or self.minimum is not None):
            raise ValueError("metric loss (lower is better) takes maximum, not minimum")
        return self

    @property
    def higher_is_better(self) -> bool:
        """Whether a larger value of the metric is the better model."""
        return self.metric == "accuracy"

    @property
    def bound(self) -> float:
        """The minimum (accuracy) or maximum (loss) a version must clear."""
        bound = self.minimum if self.higher_is_better else self.maximum
        assert bound is not None  # guaranteed by the validator
        return bound

    def passes(self, value: float | None) -> bool:
        """Whether ``value`` of the metric clears the bar (a missing value never does)."""
        if value is None:
            return False
        return value >= self.bound if self.higher_is_better else value <= self.bound


class BatchingSpec(_Wire):
    """Server-side dynamic batching."""

    max_batch_size: int = Field(DEFAULT_MAX_BATCH_SIZE, ge=1, le=4096)
    max_latency_ms: int = Field(DEFAULT_MAX_LATENCY_MS, ge=0, le=10000)
    max_queue: int | None = Field(None, ge=1, le=1000000)


AutoscalingMetric = Literal["concurrency", "queueDepth", "cpu"]


class AutoscalingSpec(_Wire):
    """What the predictor scales on: in-flight requests, queued rows or CPU.

    ``metric`` defaults by hardware (see :meth:`ServingSpec.autoscaling_metric`) and ``target``
    by batch size (see :meth:`ServingSpec.autoscaling_target`): both need the whole serving spec.
    """

    metric: AutoscalingMetric | None = None
    target: float | None = Field(None, gt=0, le=100000)
    target_cpu_utilization_percentage: int = Field(
        80, ge=1, le=1000, alias="targetCPUUtilizationPercentage"
    )
    scale_down_stabilization_seconds: int | None = Field(None, ge=0, le=3600)

    @model_validator(mode="after")
    def _target_fits_metric(self) -> AutoscalingSpec:
        if self.target is not None and self.metric == "cpu":
            raise ValueError(
                "spec.serving.autoscaling.target is for metric concurrency or queueDepth; "
                "metric cpu takes targetCPUUtilizationPercentage"
            )
        return self


class PodPeer(_Wire):
    """Pods, by labels, in a namespace (default: the ModelService's)."""

    namespace: str | None = Field(None, min_length=1, max_length=63)
    match_labels: dict[str, str]


class AccessSpec(_Wire):
    """Who may reach the predictor (a NetworkPolicy)."""

    same_namespace: bool = True
    namespaces: list[str] = Field(default_factory=list, max_length=32)
    pods: list[PodPeer] = Field(default_factory=list, max_length=32)
    metrics_namespaces: list[str] = Field(default_factory=list, max_length=16)


class SecretKeyRef(_Wire):
    """A key of a Secret in the ModelService's namespace."""

    name: str = Field(min_length=1, max_length=253)
    key: str = Field("token", min_length=1, max_length=253)


class AuthSpec(_Wire):
    """Bearer-token authentication of the predictor."""

    secret_ref: SecretKeyRef


class ServingSpec(PodSpecFields):
    """The predictor: replicas bounds, batching, autoscaling and the pods."""

    min_replicas: int = Field(1, ge=1, le=1000)
    max_replicas: int | None = Field(None, ge=1, le=1000)
    batching: BatchingSpec | None = None
    autoscaling: AutoscalingSpec | None = None
    termination_grace_period_seconds: int | None = Field(None, ge=1, le=3600)
    access: AccessSpec | None = None
    auth: AuthSpec | None = None
    docs: bool | None = None

    @property
    def effective_max_replicas(self) -> int:
        """``maxReplicas``, defaulting to ``minReplicas``."""
        return self.max_replicas if self.max_replicas is not None else self.min_replicas

    @property
    def uses_gpu(self) -> bool:
        """Whether each predictor pod asks for at least one GPU."""
        return self.gpu is not None and self.gpu.count > 0

    @property
    def autoscaling_metric(self) -> AutoscalingMetric:
        """The metric asked for, else concurrency on GPUs (a batching server's CPU does not
        follow its load there) and cpu without them."""
        if self.autoscaling is not None and self.autoscaling.metric is not None:
            return self.autoscaling.metric
        return "concurrency" if self.uses_gpu else "cpu"

    @property
    def autoscaling_target(self) -> float:
        """Per-pod target of concurrency or queueDepth: the one given, else ``maxBatchSize``
        (one full batch in flight, or waiting, per pod before another pod is worth adding)."""
        if self.autoscaling is not None and self.autoscaling.target is not None:
            return self.autoscaling.target
        return float((self.batching or BatchingSpec()).max_batch_size)

    @property
    def cpu_target_percent(self) -> int:
        """Average CPU utilisation target of the HPA, percent of requests."""
        return (self.autoscaling or AutoscalingSpec()).target_cpu_utilization_percentage


class StorageSpec(_Wire):
    """Where model versions live: a PVC the operator creates or an existing one."""

    existing_claim: str | None = Field(None, max_length=253)
    retain_on_delete: bool = True
    size: Quantity = "1Gi"
    storage_class_name: str | None = Field(None, max_length=253)
    access_modes: list[AccessMode] = Field(
        default_factory=lambda: list[AccessMode](["ReadWriteMany"]), min_length=1, max_length=4
    )


class ModelServiceSpec(_Wire):
    """The desired state of a ModelService."""

    training: TrainingSpec | None = None
    model: ModelRef | None = None
    quality_gate: QualityGateSpec | None = None
    serving: ServingSpec = Field(default_factory=ServingSpec)
    storage: StorageSpec = Field(default_factory=StorageSpec)


class _StatusWire(_Wire):
    """Base of status models: fields written by older operators are ignored."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


class VersionMetrics(_StatusWire):
    """Evaluation metrics of a model version."""

    accuracy: float | None = None
    loss: float | None = None


class ModelStatus(_StatusWire):
    """The model being served."""

    version: int | None = None
    uri: str | None = None
    metrics: VersionMetrics | None = None
    trained_at: str | None = None


class ModelVersionRecord(_StatusWire):
    """One trained version and its quality-gate verdict."""

    version: int
    uri: str | None = None
    job_name: str | None = None
    metrics: VersionMetrics | None = None
    trained_at: str | None = None
    quality_gate: Literal["Passed", "Failed"] | None = None
    promoted_at: str | None = None
    gated_at: str | None = None
    dataset_uri: str | None = None
    dataset_sha256: str | None = None
    hyperparameters: dict[str, Any] | None = None
    image_digest: str | None = None


class TrainingStatus(_StatusWire):
    """The training Job for the current training spec and its live progress."""

    job_name: str | None = None
    spec_hash: str | None = None
    version: int | None = None
    state: Literal["Pending", "Running", "Succeeded", "Failed"] | None = None
    epoch: int | None = None
    epochs: int | None = None
    loss: float | None = None
    accuracy: float | None = None


class AutoscalerStatus(_StatusWire):
    """Which object drives the predictor's replicas, on what, and why that one."""

    kind: Literal["ScaledObject", "HorizontalPodAutoscaler"]
    name: str
    metric: AutoscalingMetric
    target: str
    reason: str
    message: str


class ServingStatus(_StatusWire):
    """The predictor's replicas and address."""

    version: int | None = None
    replicas: int | None = None
    ready_replicas: int | None = None
    ready: str | None = None
    url: str | None = None
    grpc_address: str | None = None
    autoscaler: AutoscalerStatus | None = None


class Condition(_StatusWire):
    """A standard Kubernetes condition."""

    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str
    message: str = ""
    observed_generation: int | None = None
    last_transition_time: str | None = None


class ModelServiceStatus(_StatusWire):
    """The observed state of a ModelService, written only by the operator."""

    phase: Phase | None = None
    observed_generation: int | None = None
    conditions: list[Condition] = Field(default_factory=list)
    model: ModelStatus | None = None
    training: TrainingStatus | None = None
    serving: ServingStatus | None = None
    versions: list[ModelVersionRecord] = Field(default_factory=list)
    highest_version: int | None = None


class ModelService(_Wire):
    """A whole ModelService object (only the parts the operator reads)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    api_version: str = "modelservice.dev/v1alpha1"
    kind: str = "ModelService"
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: ModelServiceSpec
    status: ModelServiceStatus | None = None
