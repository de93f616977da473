"""The predictor Deployment: the server for one model directory, behind probes."""

from __future__ import annotations

from typing import Any

from modelservice_serving import contract
from modelservice_serving.contract import DEFAULT_MAX_BATCH_SIZE, DEFAULT_MAX_LATENCY_MS
from modelservice_serving.redact import redact_url

from ..models import SecretReference, ServingSpec
from ..names import (
    ANNOTATION_SPEC_HASH,
    LABEL_VERSION,
    predictor_name,
    predictor_selector,
    stable_hash,
)
from .common import (
    ModelVolume,
    Owner,
    PodDefaults,
    child_metadata,
    container_env,
    container_resources,
    container_security_context,
    credentials_volume,
    ephemeral_storage,
    hardened_pod,
    pod_scheduling,
    pod_security_context,
    tmp_volume,
)

__all__ = [
    "GRPC_PORT",
    "HTTP_PORT",
    "METRICS_PORT",
    "METRICS_PORT_NAME",
    "MODEL_CACHE_MOUNT",
    "PRE_STOP_SECONDS",
    "build_deployment",
    "owned_spec",
]

HTTP_PORT = contract.HTTP_PORT
# /metrics alone (serve --metrics-port): a NetworkPolicy admits scrapers here only.
METRICS_PORT = 9090
METRICS_PORT_NAME = "metrics"
AUTH_MOUNT = "/var/run/secrets/modelservice/auth"
GRPC_PORT = contract.GRPC_PORT  # the Open Inference Protocol over gRPC
PRE_STOP_SECONDS = 5
DEFAULT_GRACE_SECONDS = 30
DEFAULT_SERVING_REQUESTS = {"cpu": "500m", "memory": "1Gi"}
MODEL_CACHE_MOUNT = "/var/cache/models"
# The server refuses archives and unpacked models above 1 GiB (serve --model-max-bytes) and
# deletes the archive once unpacked; 2 GiB holds both for the moment they coexist.
MODEL_CACHE_SIZE = "2Gi"
SERVING_TMP_SIZE = "1Gi"
SERVING_EPHEMERAL_REQUEST = "256Mi"
# /tmp and logs; with a downloaded model its cache as well.
SERVING_EPHEMERAL_LIMIT = "2Gi"
SERVING_EPHEMERAL_LIMIT_WITH_CACHE = "4Gi"


def _probe(path: str, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period,
        "timeoutSeconds": 2,
        "failureThreshold": failures,
    }


def _model_args(model_dir: str, model_uri: str | None) -> list[str]:
    if model_uri is None:
        return [f"--model-dir={model_dir}"]
    return [
        # Redacted: credentials come from spec.model.credentials, never the URI.
        f"--model-uri={redact_url(model_uri)}",
        f"--model-cache-dir={MODEL_CACHE_MOUNT}",
        # Only here: a download failure is then one line in the pod's status (PVC-served
        # predictors keep their arguments, so an operator upgrade does not roll them).
        "--termination-log=/dev/termination-log",
    ]


# What slow or many clients may hold: the server's own defaults, stated in the pod spec.
SLOW_CLIENT_ARGS = (
    "--max-connections=1024",
    "--max-in-flight=256",
    "--grpc-max-in-flight=256",
    "--max-header-bytes=16384",
    "--header-timeout-s=10",
    "--body-timeout-s=30",
    "--keep-alive-timeout-s=5",
)


def _server_args(
    serving: ServingSpec, name: str, model_dir: str, model_uri: str | None, grace: int
) -> list[str]:
    batching = serving.batching
    args = [
        "serve",
        *_model_args(model_dir, model_uri),
        f"--model-name={name}",
        f"--port={HTTP_PORT}",
        f"--grpc-port={GRPC_PORT}",
        "--host=0.0.0.0",
        f"--max-batch-size={batching.max_batch_size if batching else DEFAULT_MAX_BATCH_SIZE}",
        f"--max-latency-ms={batching.max_latency_ms if batching else DEFAULT_MAX_LATENCY_MS}",
        # Drain within the grace period that is left after preStop.
        f"--graceful-timeout-s={max(1, grace - PRE_STOP_SECONDS - 2)}",
        f"--metrics-port={METRICS_PORT}",
        *SLOW_CLIENT_ARGS,
    ]
    if serving.auth is not None:
        args.append(f"--auth-token-file={AUTH_MOUNT}/{serving.auth.secret_ref.key}")
    if serving.docs:
        args.append("--docs=true")
    if batching is not None and batching.max_queue is not None:
        args.append(f"--max-queue={batching.max_queue}")
    return args


def build_deployment(
    owner: Owner,
    serving: ServingSpec,
    version: int | None,
    model_dir: str,
    model_volume: ModelVolume | None,
    defaults: PodDefaults,
    model_uri: str | None = None,
    model_credentials: SecretReference | None = None,
) -> dict[str, Any]:
    """Return the predictor Deployment serving ``model_dir`` (version ``version``).

    With ``model_uri`` (http/https) the server downloads the model itself into an emptyDir
    at ``/var/cache/models``, and no model store is mounted. The download runs while the
    server is already live, so the startupProbe (on liveness) does not bound it; readiness
    turns true once the model is loaded.

    ``spec.replicas`` is set to ``minReplicas`` for creation only: afterwards the HPA owns
    it and the reconciler patches only :func:`owned_spec`.
    """
    name = predictor_name(owner.name)
    grace = serving.termination_grace_period_seconds or DEFAULT_GRACE_SECONDS
    version_labels = {LABEL_VERSION: str(version)} if version is not None else {}
    tmp, tmp_mount = tmp_volume(SERVING_TMP_SIZE)
    mounts: list[dict[str, Any]] = [tmp_mount]
    volumes: list[dict[str, Any]] = [tmp]
    args = _server_args(serving, owner.name, model_dir, model_uri, grace)
    if model_uri is not None:
        mounts.insert(0, {"name": "model-cache", "mountPath": MODEL_CACHE_MOUNT})
        volumes.insert(0, {"name": "model-cache", "emptyDir": {"sizeLimit": MODEL_CACHE_SIZE}})
        if model_credentials is not None:
            volume, mount, directory = credentials_volume("model", model_credentials)
            volumes.append(volume)
            mounts.append(mount)
            args.append(f"--model-credentials-dir={directory}")
    elif model_volume is not None:
        mounts.insert(0, model_volume.mount())
        volumes.insert(0, model_volume.volume())
    if serving.auth is not None:
        ref = serving.auth.secret_ref
        volumes.append(
            {
                "name": "auth-token",
                "secret": {
                    "secretName": ref.name,
                    "items": [{"key": ref.key, "path": ref.key}],
                    "defaultMode": 0o440,
                },
            }
        )
        mounts.append({"name": "auth-token", "mountPath": AUTH_MOUNT, "readOnly": True})
    resources = container_resources(
        serving.resources, serving.gpu, defaults, DEFAULT_SERVING_REQUESTS
    )
    ephemeral_limit = (
        SERVING_EPHEMERAL_LIMIT_WITH_CACHE if model_uri is not None else SERVING_EPHEMERAL_LIMIT
    )
    container: dict[str, Any] = {
        "name": "server",
        "image": serving.image or defaults.default_image,
        "imagePullPolicy": defaults.image_pull_policy,
        "command": ["python", "-m", "modelservice_serving"],
        "args": args,
        "ports": [
            {"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"},
            {"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"},
            {"name": METRICS_PORT_NAME, "containerPort": METRICS_PORT, "protocol": "TCP"},
        ],
        "env": container_env(serving, [{"name": "HOME", "value": "/tmp"}]),
        "resources": ephemeral_storage(resources, SERVING_EPHEMERAL_REQUEST, ephemeral_limit),
        "securityContext": container_security_context(),
        "startupProbe": _probe("/v2/health/live", 5, 60),
        "readinessProbe": _probe("/v2/health/ready", 5, 2),
        "livenessProbe": _probe("/v2/health/live", 10, 3),
        "lifecycle": {"preStop": {"sleep": {"seconds": PRE_STOP_SECONDS}}},
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": mounts,
    }
    pod_labels = {**child_metadata(owner, name, "predictor")["labels"], **version_labels}
    template_meta: dict[str, Any] = {"labels": pod_labels}
    if serving.pod_annotations:
        template_meta["annotations"] = dict(serving.pod_annotations)
    spec: dict[str, Any] = {
        "selector": {"matchLabels": predictor_selector(owner.name)},
        "strategy": {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
        },
        "revisionHistoryLimit": 5,
        "progressDeadlineSeconds": 600,
        "template": {
            "metadata": template_meta,
            "spec": hardened_pod(
                {
                    "securityContext": pod_security_context(),
                    "terminationGracePeriodSeconds": grace,
                    "enableServiceLinks": False,
                    "containers": [container],
                    "volumes": volumes,
                    **pod_scheduling(serving, defaults),
                }
            ),
        },
    }
    owned = owned_spec(spec)
    deployment: dict[str, Any] = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": child_metadata(
            owner,
            name,
            "predictor",
            labels=version_labels,
            annotations={ANNOTATION_SPEC_HASH: stable_hash(owned)},
        ),
        "spec": {"replicas": serving.min_replicas, **spec},
    }
    return deployment


def owned_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """The Deployment spec fields the operator owns and patches (never ``replicas``)."""
    return {k: v for k, v in spec.items() if k not in ("replicas", "selector")}
