"""KEDA and Karpenter (kwok provider) as host processes of the local cluster.

- KEDA: ``keda`` (the operator: ScaledObjects become HPAs, scalers read metrics) and
  ``keda-adapter`` (the metrics API server behind ``v1beta1.external.metrics.k8s.io``: the
  HPA controller reads scaler values through it). Both use a certificate signed by the
  cluster CA for their mutual-TLS gRPC link and for the aggregated API; the API server
  reaches the adapter through a selector-less Service whose endpoint is this host.
- Karpenter with its kwok cloud provider (``karpenter-kwok``): a pending pod gets a NodeClaim,
  Karpenter creates a Node annotated ``kwok.x-k8s.io/node=fake`` that the local kwok runs,
  and consolidates it away once empty. One NodePool per simulated GPU product carries that
  product's label and the GPU taint, so GPU pods land on nodes like the static ones; the
  instance types (``karpenter-instance-types.json``) mirror the static nodes' shapes.

``MSO_AUTOSCALERS`` chooses them: both by default, ``0`` neither.
Only the standard library is used.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from localcluster import realnode
from localcluster.kwok import NODES
from localcluster.pki import sign
from localcluster.processes import alive, free_port, log, start, stop, wait_until
from localcluster.state import STATE_DIR, load_state, save_state

NAMESPACE = "keda"
EXTERNAL_METRICS_API = "apiservice/v1beta1.external.metrics.k8s.io"
# The GPU products the NodePools offer, as the static simulated nodes label them.
GPU_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}


class GPUNode(Protocol):
    """What a NodePool needs of a simulated GPU node (localcluster.SimulatedNode)."""

    @property
    def name(self) -> str: ...
    @property
    def cpu(self) -> str: ...
    @property
    def memory(self) -> str: ...
    @property
    def gpu_resource(self) -> str | None: ...
    @property
    def gpu_count(self) -> int: ...
    @property
    def gpu_product(self) -> str | None: ...


# Both by default: KEDA built with only the scalers it needs (build-binaries.sh, keda_lean.py)
# and Karpenter's kwok provider each build in minutes cold and are cached after.
DEFAULT_PARTS = ("keda", "karpenter")


def wanted_parts() -> tuple[str, ...]:
    """The autoscalers ``make cluster`` runs, from ``MSO_AUTOSCALERS``.

    Unset, ``1`` or ``all``: KEDA and Karpenter; ``0`` (or false, no): none; otherwise a
    comma-separated list of ``keda`` and ``karpenter``.
    """
    value = os.environ.get("MSO_AUTOSCALERS", "").strip().lower()
    if not value:
        return DEFAULT_PARTS
    if value in ("0", "false", "no"):
        return ()
    if value in ("1", "all", "true", "yes"):
        return tuple(PARTS)
    parts = tuple(part.strip() for part in value.split(",") if part.strip())
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        raise SystemExit(f"MSO_AUTOSCALERS: unknown {unknown}; known: {sorted(PARTS)}")
    return parts


def wanted() -> bool:
    """Whether ``make cluster`` runs any autoscaler (``MSO_AUTOSCALERS=0`` leaves them out)."""
    return bool(wanted_parts())


PARTS: dict[str, tuple[str, ...]] = {
    "keda": ("keda", "keda-adapter"),
    "karpenter": ("karpenter-kwok",),
}


def built(bins: Path, part: str) -> bool:
    """Whether build-binaries.sh --autoscalers left ``part``'s binaries here."""
    return all((bins / name).is_file() for name in PARTS[part])


def sign_keda_cert(pki: Path, ip: str, sign: Callable[[Path, str, str, str], None]) -> Path:
    """KEDA's certificate folder (ca.crt, tls.crt, tls.key, KEDA's file names)."""
    sans = ",".join(
        [
            "IP:127.0.0.1",
            f"IP:{ip}",
            "DNS:keda-operator.keda.svc",
            "DNS:keda-metrics-apiserver.keda.svc",
            "DNS:keda-metrics-apiserver.keda.svc.cluster.local",
        ]
    )
    sign(
        pki,
        "keda",
        "/CN=keda-operator",
        f"subjectAltName={sans}\nextendedKeyUsage=serverAuth,clientAuth",
    )
    certs = pki / "keda-certs"
    certs.mkdir(exist_ok=True)
    (certs / "ca.crt").write_bytes((pki / "ca.crt").read_bytes())
    (certs / "tls.crt").write_bytes((pki / "keda.crt").read_bytes())
    (certs / "tls.key").write_bytes((pki / "keda.key").read_bytes())
    return certs


def keda_api_objects(ip: str, adapter_port: int, ca_bundle: bytes) -> str:
    """The namespace, and the adapter's Service, EndpointSlice and APIService."""
    name = "keda-metrics-apiserver"
    items: list[dict[str, object]] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {
                "ports": [
                    {"name": "https", "port": 443, "protocol": "TCP", "targetPort": adapter_port}
                ]
            },
        },
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": name,
                "namespace": NAMESPACE,
                "labels": {
                    "kubernetes.io/service-name": name,
                    "endpointslice.kubernetes.io/managed-by": "localcluster.modelservice.dev",
                },
            },
            "addressType": "IPv4",
            "endpoints": [{"addresses": [ip], "conditions": {"ready": True}}],
            "ports": [{"name": "https", "port": adapter_port, "protocol": "TCP"}],
        },
        {
            "apiVersion": "apiregistration.k8s.io/v1",
            "kind": "APIService",
            "metadata": {"name": "v1beta1.external.metrics.k8s.io"},
            "spec": {
                "group": "external.metrics.k8s.io",
                "version": "v1beta1",
                "service": {"name": name, "namespace": NAMESPACE, "port": 443},
                "caBundle": base64.b64encode(ca_bundle).decode(),
                "groupPriorityMinimum": 100,
                "versionPriority": 100,
            },
        },
    ]
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": items})


def instance_types(nodes: Sequence[GPUNode]) -> list[dict[str, object]]:
    """One kwok instance type per simulated GPU node shape (same CPU, memory and GPUs)."""
    types: list[dict[str, object]] = []
    for node in nodes:
        if not node.gpu_resource:
            continue
        offerings = [
            {
                "Price": 1.0 + node.gpu_count,
                "Available": True,
                "Requirements": [
                    {"key": "karpenter.sh/capacity-type", "operator": "In", "values": [kind]},
                    {
                        "key": "topology.kubernetes.io/zone",
                        "operator": "In",
                        "values": ["local-a"],
                    },
                ],
            }
            for kind in ("on-demand",)
        ]
        types.append(
            {
                "name": instance_type_name(node),
                "offerings": offerings,
                "architecture": "amd64",
                "operatingSystems": ["linux"],
                "resources": {
                    "cpu": node.cpu,
                    "memory": node.memory,
                    "pods": "110",
                    # Child pods request it (as on the static simulated nodes).
                    "ephemeral-storage": "200Gi",
                    node.gpu_resource: str(node.gpu_count),
                },
            }
        )
    return types


def instance_type_name(node: GPUNode) -> str:
    """``gpu-h100-1`` -> ``gpu-h100``: the shape, not the machine."""
    return node.name.rsplit("-", 1)[0]


def karpenter_objects(nodes: Sequence[GPUNode]) -> str:
    """The KWOKNodeClass and one NodePool per GPU product (its label and the GPU taint)."""
    items: list[dict[str, object]] = [
        {
            "apiVersion": "karpenter.kwok.sh/v1alpha1",
            "kind": "KWOKNodeClass",
            "metadata": {"name": "default"},
        }
    ]
    for node in nodes:
        if not node.gpu_resource:
            continue
        items.append(
            {
                "apiVersion": "karpenter.sh/v1",
                "kind": "NodePool",
                "metadata": {"name": instance_type_name(node)},
                "spec": {
                    "template": {
                        "metadata": {
                            "labels": {
                                "nvidia.com/gpu.product": str(node.gpu_product),
                                "nvidia.com/gpu.count": str(node.gpu_count),
                                "type": "kwok",
                            }
                        },
                        "spec": {
                            "nodeClassRef": {
                                "group": "karpenter.kwok.sh",
                                "kind": "KWOKNodeClass",
                                "name": "default",
                            },
                            "requirements": [
                                {
                                    "key": "node.kubernetes.io/instance-type",
                                    "operator": "In",
                                    "values": [instance_type_name(node)],
                                }
                            ],
                            "taints": [GPU_TAINT],
                            "expireAfter": "Never",
                        },
                    },
                    # Empty or underused nodes go soon: the consolidation e2e waits for it.
                    "disruption": {
                        "consolidationPolicy": "WhenEmptyOrUnderutilized",
                        "consolidateAfter": "5s",
                        "budgets": [{"nodes": "100%"}],
                    },
                    "limits": {str(node.gpu_resource): str(node.gpu_count * 4)},
                },
            }
        )
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": items})


def crd_files(bins: Path, part: str) -> list[Path]:
    """KEDA's or Karpenter's CRDs, copied next to the binaries by the build."""
    root = bins.parent
    if part == "keda":
        return sorted((root / "keda-config" / "crd" / "bases").glob("*.yaml"))
    return sorted((root / "karpenter-crds").glob("*.yaml"))


def _apply_crds(kubectl: list[str], files: list[Path]) -> None:
    for crd in files:
        subprocess.run(
            [*kubectl, "apply", "--server-side", "-f", str(crd)],
            check=True,
            capture_output=True,
        )
    subprocess.run(
        [*kubectl, "wait", "--for=condition=Established", "--timeout=60s", "crd", "--all"],
        check=True,
        capture_output=True,
    )


def start_keda(
    state_dir: Path,
    bins: Path,
    ip: str,
    ports: dict[str, int],
    pids: dict[str, int],
    kubectl: list[str],
    spawn: Callable[[str, list[str], Path], int],
    wait: Callable[[str, Callable[[], object], float], None],
    sign: Callable[[Path, str, str, str], None],
) -> None:
    """Install KEDA's CRDs, start its operator and metrics API server, wait for the API.

    ``pids`` is filled in place, so a start that fails halfway still lets ``down`` stop
    what runs.
    """
    logs, pki = state_dir / "logs", state_dir / "pki"
    admin = state_dir / "kubeconfig"
    _apply_crds(kubectl, crd_files(bins, "keda"))
    certs = sign_keda_cert(pki, ip, sign)
    env_prefix = [
        "env",
        f"KUBECONFIG={admin}",
        "WATCH_NAMESPACE=",
        f"KEDA_CLUSTER_OBJECT_NAMESPACE={NAMESPACE}",
        f"POD_NAMESPACE={NAMESPACE}",
    ]
    subprocess.run(
        [*kubectl, "apply", "--server-side", "-f", "-"],
        input=keda_api_objects(ip, ports["keda_adapter"], (pki / "ca.crt").read_bytes()),
        text=True,
        check=True,
        capture_output=True,
    )
    pids["keda"] = spawn(
        "keda",
        [
            *env_prefix,
            str(bins / "keda"),
            "--leader-elect=false",
            f"--metrics-bind-address=127.0.0.1:{ports['keda_metrics']}",
            f"--health-probe-bind-address=127.0.0.1:{ports['keda_health']}",
            f"--metrics-service-bind-address=127.0.0.1:{ports['keda_grpc']}",
            f"--cert-dir={certs}",
            f"--ca-dir={certs}",
            "--enable-cert-rotation=false",
            "--enable-webhook-patching=false",
            "--enable-apiservice-patching=false",
            "--zap-log-level=info",
        ],
        logs,
    )
    pids["keda-adapter"] = spawn(
        "keda-adapter",
        [
            *env_prefix,
            str(bins / "keda-adapter"),
            f"--lister-kubeconfig={admin}",
            f"--authentication-kubeconfig={admin}",
            f"--authorization-kubeconfig={admin}",
            f"--secure-port={ports['keda_adapter']}",
            f"--port={ports['keda_adapter_metrics']}",
            f"--tls-cert-file={certs / 'tls.crt'}",
            f"--tls-private-key-file={certs / 'tls.key'}",
            f"--client-ca-file={certs / 'ca.crt'}",
            f"--cert-dir={certs}",
            f"--metrics-service-address=127.0.0.1:{ports['keda_grpc']}",
            "--zap-log-level=info",
        ],
        logs,
    )
    wait(
        "external.metrics.k8s.io (KEDA's metrics API server) Available",
        lambda: subprocess.run(
            [*kubectl, "wait", "--for=condition=Available", EXTERNAL_METRICS_API, "--timeout=5s"],
            capture_output=True,
            check=True,
        ),
        180.0,
    )


def start_karpenter(
    state_dir: Path,
    bins: Path,
    ports: dict[str, int],
    pids: dict[str, int],
    kubectl: list[str],
    nodes: Sequence[GPUNode],
    spawn: Callable[[str, list[str], Path], int],
    wait: Callable[[str, Callable[[], object], float], None],
) -> None:
    """Install Karpenter's CRDs, NodeClass and NodePools, and start it."""
    logs = state_dir / "logs"
    admin = state_dir / "kubeconfig"
    _apply_crds(kubectl, crd_files(bins, "karpenter"))
    types_file = state_dir / "karpenter-instance-types.json"
    types_file.write_text(json.dumps(instance_types(nodes), indent=2))
    subprocess.run(
        [*kubectl, "apply", "--server-side", "-f", "-"],
        input=karpenter_objects(nodes),
        text=True,
        check=True,
        capture_output=True,
    )
    # Nothing in the kwok provider marks its NodeClass Ready (a real provider's controller
    # would), and NodePools of a NodeClass not Ready launch nothing.
    ready = {
        "type": "Ready",
        "status": "True",
        "reason": "Ready",
        "message": "",
        "observedGeneration": 1,
        "lastTransitionTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    subprocess.run(
        [*kubectl, "patch", "kwoknodeclass", "default", "--subresource=status",
         "--type=merge", "-p", json.dumps({"status": {"conditions": [ready]}})],
        check=True,
        capture_output=True,
    )  # fmt: skip
    pids["karpenter"] = spawn(
        "karpenter",
        [
            "env",
            f"KUBECONFIG={admin}",
            "SYSTEM_NAMESPACE=kube-system",
            str(bins / "karpenter-kwok"),
            "--disable-leader-election=true",
            f"--metrics-port={ports['karpenter_metrics']}",
            f"--health-probe-port={ports['karpenter_health']}",
            f"--instance-types-file-path={types_file}",
            "--batch-idle-duration=500ms",
            "--batch-max-duration=2s",
            "--log-level=info",
        ],
        logs,
    )

    def healthy() -> bool:
        url = f"http://127.0.0.1:{ports['karpenter_health']}/healthz"
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)

    wait("Karpenter healthy", healthy, 120.0)


PORT_NAMES = (
    "keda_metrics",
    "keda_health",
    "keda_grpc",
    "keda_adapter",
    "keda_adapter_metrics",
    "karpenter_metrics",
    "karpenter_health",
)


def start_autoscalers(bins: Path) -> None:
    """Start KEDA and Karpenter where built and not running; one that fails is stopped and
    reported, and the cluster carries on without it."""
    state = load_state()
    assert state is not None
    record = state.setdefault("autoscalers", {"pids": {}})
    assert isinstance(record, dict)
    pids: dict[str, int] = record.setdefault("pids", {})
    ports: dict[str, int] = record.setdefault("ports", {})
    for name in PORT_NAMES:
        ports.setdefault(name, free_port())
    unavailable: dict[str, str] = {}

    def save() -> None:
        if unavailable:
            state["autoscalers_unavailable"] = "; ".join(
                f"{k}: {v}" for k, v in unavailable.items()
            )
        else:
            state.pop("autoscalers_unavailable", None)
        save_state(state)

    node = state.get("real_node")
    ip = str(node["ip"]) if isinstance(node, dict) else realnode.host_ip()
    kubectl = [str(bins / "kubectl"), "--kubeconfig", str(STATE_DIR / "kubeconfig")]
    for part in wanted_parts():
        names = {"keda": ("keda", "keda-adapter"), "karpenter": ("karpenter",)}[part]
        if all(n in pids and alive(int(pids[n])) for n in names):
            continue
        started = time.monotonic()
        try:
            if not built(bins, part):
                raise RuntimeError(f"not built in {bins} (build-binaries.sh --autoscalers)")
            if part == "keda":
                if ip is None:
                    raise RuntimeError("no non-loopback address for KEDA's metrics API server")
                start_keda(STATE_DIR, bins, ip, ports, pids, kubectl, start, wait_until, sign)
            else:
                start_karpenter(STATE_DIR, bins, ports, pids, kubectl, NODES, start, wait_until)
        except (SystemExit, Exception) as error:
            unavailable[part] = f"it failed to start ({error}); logs in {STATE_DIR / 'logs'}"
            log(f"no {part}: {unavailable[part]}")
            for name in names:
                if name in pids:
                    stop(name, int(pids.pop(name)))
            save()
            continue
        record[f"{part}_ready_s"] = round(time.monotonic() - started, 1)
        log(f"{part} ready in {record[f'{part}_ready_s']}s")
        save()
    save()
