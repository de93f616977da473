"""Real workloads on the local cluster's real node, shared by ``make demo`` and the e2e tier.

The operator image and the serving image are built with Docker, loaded into the real node's
containerd, the operator is installed by its Helm chart, and ModelServices are the CPU variant
of ``deploy/samples/modelservice-digits.yaml`` pinned to the real node. Requests go to the
predictor Service's ClusterIP from this machine, routed by kube-proxy's iptables rules.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from localcluster import docker_env, realnode
from localcluster.kubectl import KubeCluster, wait_for
from localcluster.state import REPO, cli_argv, cli_env

SERVING_IMAGE = docker_env.IMAGE
OPERATOR_IMAGE = "modelservice-operator:local"
NODE_SELECTOR = {realnode.LABEL: "true"}
TOLERATIONS = [{"key": realnode.LABEL, "operator": "Exists", "effect": "NoSchedule"}]
STORE_ROOT = Path("/tmp/mso-real-node-stores")  # /tmp: the hostPath deleter's only root
SERVING_UID = 1000  # the image's user and the operator's pod security context


def real_node_state(cluster_dir: Path) -> dict[str, Any] | None:
    """The real node's record in the cluster's state, or None (with the reason logged)."""
    try:
        state = json.loads((cluster_dir / "state.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    node = state.get("real_node")
    return node if isinstance(node, dict) else None


def no_real_node_reason(cluster_dir: Path) -> str:
    try:
        state = json.loads((cluster_dir / "state.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return "no local cluster state"
    if state.get("external"):
        return "an existing cluster (MSO_USE_EXISTING_CLUSTER) has no local real node"
    reason = state.get("real_node_unavailable") or "the running cluster was started without one"
    return f"no real node: {reason} (`python -m localcluster down` then `up` to get one)"


# ---------------------------------------------------------------- images


def python_base_image() -> str:
    """The local Debian base plus ``python``: operator/Dockerfile expects python:3.11-slim's.

    The debootstrapped base (no registry here) has only ``python3``.
    """
    local = docker_env.ensure_base_image()
    tag = "local/python-base:bookworm-python"
    subprocess.run(
        ["docker", "build", "-q", "-t", tag, "-"],
        input=f"FROM {local}\nRUN ln -sf /usr/bin/python3 /usr/local/bin/python\n",
        text=True,
        check=True,
        stdout=subprocess.DEVNULL,
        env={**os.environ, "DOCKER_BUILDKIT": "0"},
    )
    return tag


def build_operator_image(tag: str = OPERATOR_IMAGE) -> str:
    """operator/Dockerfile with Debian's Docker (legacy builder: no buildx on this machine)."""
    base = python_base_image()
    with tempfile.TemporaryDirectory(prefix="mso-operator-image.") as context:
        root = Path(context)
        shutil.copy(REPO / "pyproject.toml", root)
        shutil.copy(REPO / "README.md", root)
        shutil.copytree(
            REPO / "operator", root / "operator", ignore=shutil.ignore_patterns("__pycache__")
        )
        # Of the serving package, the files the operator's image takes (its contract and URL
        # redaction): those its build-context ignore file lets in, so the two never disagree.
        ignore = (REPO / "operator" / "Dockerfile.dockerignore").read_text().splitlines()
        for line in ignore:
            if line.startswith("!serving/"):
                target = root / line[1:]
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(REPO / line[1:], target)
        subprocess.run(
            [
                *("docker", "build", "-q", "--network", "host", "-f", "operator/Dockerfile"),
                *("--build-arg", f"BASE_IMAGE={base}", "-t", tag, str(root)),
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            env={**os.environ, "DOCKER_BUILDKIT": "0"},
            timeout=1800,
            cwd=root,
        )
    return tag


def build_and_load_images(cluster_dir: Path) -> tuple[str, str]:
    """Build the operator and serving images and load both into the real node."""
    started = time.monotonic()
    serving = docker_env.build_image(SERVING_IMAGE)
    operator = build_operator_image()
    built = time.monotonic()
    subprocess.run(
        cli_argv("load-image", operator, serving),
        env=cli_env(MSO_CLUSTER_DIR=str(cluster_dir)),
        check=True,
    )
    print(
        f"[real-node] images built in {built - started:.0f}s, "
        f"loaded in {time.monotonic() - built:.0f}s",
        file=sys.stderr,
    )
    return operator, serving


# ---------------------------------------------------------------- operator


def install_operator(
    cluster: KubeCluster,
    release: str,
    namespace: str,
    watch: list[str],
    operator_image: str,
    **extra_values: Any,
) -> None:
    """The operator by its Helm chart, on the real node, watching only ``watch``.

    Only the given namespaces: other people's tests on the same cluster run their own
    operators, and two operators on one ModelService would fight.
    """
    repository, tag = operator_image.rsplit(":", 1)
    values = {
        "image": {"repository": repository, "tag": tag, "pullPolicy": "IfNotPresent"},
        "watchNamespaces": watch,
        "serving": {"defaultImage": SERVING_IMAGE, "imagePullPolicy": "IfNotPresent"},
        "nodeSelector": NODE_SELECTOR,
        "tolerations": TOLERATIONS,
        "reconcileIntervalSeconds": 5,
        **extra_values,
    }
    with tempfile.NamedTemporaryFile("w", suffix=".json") as handle:
        json.dump(values, handle)
        handle.flush()
        cluster.kubectl("create", "namespace", namespace, check=False)
        cluster.helm(
            "upgrade",
            "--install",
            release,
            str(REPO / "charts" / "modelservice-operator"),
            "--namespace",
            namespace,
            "-f",
            handle.name,
            "--wait",
            "--timeout",
            "5m",
        )


def uninstall_operator(cluster: KubeCluster, release: str, namespace: str) -> None:
    cluster.helm("uninstall", release, "--namespace", namespace, "--wait", check=False)
    cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


# ---------------------------------------------------------------- model store


def model_store(cluster: KubeCluster, namespace: str, claim: str = "models") -> Path:
    """A PVC bound to a hostPath PV whose directory the serving user owns; returns the dir.

    kube-controller-manager's host-path provisioner makes ``root:root 0750`` directories,
    which the restricted pods (UID 1000; fsGroup does not apply to hostPath) cannot write.
    Real clusters use a CSI provisioner that honours fsGroup; here the directory is made
    with the right owner and bound statically.
    """
    path = STORE_ROOT / namespace / claim
    pv_name = f"{namespace}-{claim}"
    if not cluster.kubectl("get", "pv", pv_name, "--ignore-not-found", "-o", "name"):
        # A new volume starts empty: the directory may hold versions from an earlier
        # cluster (one that was taken down with the demo still in it).
        shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, SERVING_UID, SERVING_UID)
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": pv_name, "labels": {"modelservice.dev/e2e": namespace}},
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadWriteMany", "ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Delete",
                "storageClassName": "",
                "hostPath": {"path": str(path), "type": "Directory"},
                "claimRef": {"namespace": namespace, "name": claim},
            },
        }
    )
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": claim, "namespace": namespace},
            "spec": {
                "accessModes": ["ReadWriteMany"],
                "storageClassName": "",
                "volumeName": pv_name,
                "resources": {"requests": {"storage": "1Gi"}},
            },
        }
    )
    return path


def remove_store(namespace: str) -> None:
    shutil.rmtree(STORE_ROOT / namespace, ignore_errors=True)


# ---------------------------------------------------------------- ModelService


def cpu_sample(
    name: str, claim: str, *, epochs: int | None = None, **serving: Any
) -> dict[str, Any]:
    """deploy/samples' digits ModelService, CPU only, on the real node, with our store."""
    sample = yaml.safe_load((REPO / "deploy" / "samples" / "modelservice-digits.yaml").read_text())
    sample["metadata"]["name"] = name
    spec = sample["spec"]
    spec["training"].update(nodeSelector=NODE_SELECTOR, tolerations=TOLERATIONS)
    # The sample asks 1 CPU / 2 Gi; this node has 2 shared cores, so ask less.
    spec["training"]["resources"] = {"requests": {"cpu": "250m", "memory": "512Mi"}}
    if epochs is not None:
        spec["training"]["epochs"] = epochs
    spec["serving"].pop("gpu", None)
    spec["serving"].update(
        nodeSelector=NODE_SELECTOR,
        tolerations=TOLERATIONS,
        resources={"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"cpu": "1"}},
    )
    spec["serving"].update(serving)
    spec["storage"] = {"existingClaim": claim}
    return dict(sample)


def wait_ready(
    cluster: KubeCluster, namespace: str, name: str, version: int = 1, timeout: float = 600
) -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        ms = cluster.get("modelservice", name, "-n", namespace)
        status = ms.get("status", {})
        served = (status.get("serving") or {}).get("version")
        if status.get("phase") == "Ready" and served == version:
            return dict(ms)
        return None

    return dict(wait_for(f"ModelService {name} Ready at version {version}", ready, timeout, 2))


def service_url(cluster: KubeCluster, namespace: str, service: str) -> str:
    svc = cluster.get("service", service, "-n", namespace)
    port = svc["spec"]["ports"][0]["port"]
    return f"http://{svc['spec']['clusterIP']}:{port}"


# ---------------------------------------------------------------- data and HTTP


def held_out_digits(seed: int | None = None) -> tuple[Any, Any]:
    """The digits rows the training run held out as its test split, and their labels."""
    from modelservice_serving.settings import TrainSettings
    from modelservice_serving.train import datasets, pipeline

    settings = TrainSettings(dataset="digits", output="/nonexistent", seed=seed)
    parts = pipeline.split(datasets.load("digits"), settings)
    return parts.x_test, parts.y_test


def post(url: str, path: str, body: dict[str, Any], timeout: float = 10) -> dict[str, Any]:
    """One request on a fresh connection (as a client behind a load balancer would)."""
    host = url.removeprefix("http://")
    conn = http.client.HTTPConnection(host, timeout=timeout)
    try:
        conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        response = conn.getresponse()
        payload = response.read()
        if response.status != 200:
            raise RuntimeError(f"{path}: HTTP {response.status} {payload[:200]!r}")
        return dict(json.loads(payload))
    finally:
        conn.close()


def predict_v1(url: str, model: str, rows: Any) -> dict[str, Any]:
    return post(
        url, f"/v1/models/{model}:predict", {"instances": [list(map(float, r)) for r in rows]}
    )


def infer_v2(url: str, model: str, input_name: str, rows: Any) -> dict[str, Any]:
    flat = [float(v) for row in rows for v in row]
    body = {
        "inputs": [
            {
                "name": input_name,
                "shape": [len(rows), len(rows[0])],
                "datatype": "FP32",
                "data": flat,
            }
        ]
    }
    return post(url, f"/v2/models/{model}/infer", body)


def get_json(url: str, path: str) -> dict[str, Any]:
    host = url.removeprefix("http://")
    conn = http.client.HTTPConnection(host, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return dict(json.loads(response.read()))
    finally:
        conn.close()


@dataclass
class RequestLoop:
    """``workers`` threads sending one request after another until stopped.

    Bounded: at most ``max_seconds``, only to the given ClusterIP on this machine.
    """

    send: Callable[[], Any]
    workers: int = 2
    max_seconds: float = 300
    pause_s: float = 0.0
    ok: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    seen: dict[str, int] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __enter__(self) -> RequestLoop:
        deadline = time.monotonic() + self.max_seconds
        for _ in range(self.workers):
            thread = threading.Thread(target=self._run, args=(deadline,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def _run(self, deadline: float) -> None:
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                result = self.send()
                with self._lock:
                    self.ok += 1
                    key = str(result)
                    self.seen[key] = self.seen.get(key, 0) + 1
            except Exception as error:  # every failure counts, whatever its kind
                with self._lock:
                    self.failed += 1
                    self.errors.append(f"{time.strftime('%H:%M:%S')} {error!r}")
            if self.pause_s:
                time.sleep(self.pause_s)
