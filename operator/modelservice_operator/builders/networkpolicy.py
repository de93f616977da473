"""The predictor's NetworkPolicy: only the peers ``spec.serving.access`` names get in.

Ingress to the predictor pods is closed except the inference ports (``http``, ``grpc``) from
the admitted peers, and the metrics port from the ModelService's namespace,
``access.metricsNamespaces`` and the operator's own scrapers (KEDA's namespace when KEDA
scales the predictor). Egress stays open: a server downloading its model needs it, and
the downloader refuses addresses inside the cluster itself. Kubelet probes come from the node,
which network plugins admit regardless of policies.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..models import AccessSpec, ServingSpec
from ..names import predictor_selector
from .common import Owner, predictor_child
from .deployment import METRICS_PORT_NAME

__all__ = ["NAMESPACE_LABEL", "build_network_policy"]

# The container ports clients infer on (builders/deployment.py): HTTP and gRPC.
INFERENCE_PORT_NAMES = ("http", "grpc")
# Set by the API server on every namespace (Kubernetes 1.22+): selects a namespace by name.
NAMESPACE_LABEL = "kubernetes.io/metadata.name"


def _namespace(name: str) -> dict[str, Any]:
    return {"namespaceSelector": {"matchLabels": {NAMESPACE_LABEL: name}}}


def _peers(access: AccessSpec, own_namespace: str) -> list[dict[str, Any]]:
    peers: list[dict[str, Any]] = []
    if access.same_namespace:
        peers.append({"podSelector": {}})  # every pod of the policy's own namespace
    peers.extend(_namespace(name) for name in access.namespaces)
    for pods in access.pods:
        peer: dict[str, Any] = {"podSelector": {"matchLabels": dict(pods.match_labels)}}
        if pods.namespace and pods.namespace != own_namespace:
            peer.update(_namespace(pods.namespace))
        peers.append(peer)
    return peers


def build_network_policy(
    owner: Owner, serving: ServingSpec, scraper_namespaces: Sequence[str] = ()
) -> dict[str, Any]:
    """Return the predictor's NetworkPolicy (an empty peer list admits no one)."""
    access = serving.access or AccessSpec()
    ingress: list[dict[str, Any]] = []
    peers = _peers(access, owner.namespace)
    if peers:
        ports = [{"port": port, "protocol": "TCP"} for port in INFERENCE_PORT_NAMES]
        ingress.append({"from": peers, "ports": ports})
    metrics_namespaces = sorted({*access.metrics_namespaces, *scraper_namespaces})
    scrapers = [{"podSelector": {}}, *(_namespace(n) for n in metrics_namespaces)]
    ingress.append({"from": scrapers, "ports": [{"port": METRICS_PORT_NAME, "protocol": "TCP"}]})
    spec: dict[str, Any] = {
        "podSelector": {"matchLabels": predictor_selector(owner.name)},
        "policyTypes": ["Ingress"],
        "ingress": ingress,
    }
    return predictor_child(owner, "networking.k8s.io/v1", "NetworkPolicy", spec)
