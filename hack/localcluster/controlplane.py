"""Start and stop the project's local Kubernetes cluster.

A real control plane (etcd, kube-apiserver, kube-controller-manager,
kube-scheduler) built from pinned versions by ``build-binaries.sh``, with kwok
simulating the nodes, GPU nodes included, and one real worker node
(``realnode.py``: containerd, kubelet, kube-proxy, metrics-server) where this
machine can run it. The control plane listens on loopback on ports chosen free
at start (on all addresses when the real node's pods must reach it), and all
state lives in ``.cluster/`` of the checkout, so two checkouts on one machine
never fight; the real node is one per machine and goes to the first cluster.

Commands:
    up        start the cluster, or reuse a healthy running one (idempotent)
    autoscalers  start KEDA and Karpenter (those built) in the running cluster
    down      stop every process ``up`` started and remove ``.cluster/``
    nodes     show the nodes with their GPU capacity
    status    exit 0 when the cluster is healthy
    load-image IMAGE...  copy Docker images into the real node's containerd

``MSO_REAL_NODE=0`` starts simulated nodes only. KEDA and Karpenter's kwok provider
(``autoscalers.py``) run too unless ``MSO_AUTOSCALERS=0``.

With ``MSO_USE_EXISTING_CLUSTER=true`` and ``KUBECONFIG`` naming a cluster
(kind, k3d, a real one), ``up`` only checks that cluster and links its
kubeconfig; nothing is started.

Only the standard library is used, so ``down`` works without the venv.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import autoscalers
import realnode

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
STATE_DIR = Path(os.environ.get("MSO_CLUSTER_DIR", REPO / ".cluster"))
SERVICE_CIDR = "10.96.0.0/16"
SERVICE_IP = "10.96.0.1"
START_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class SimulatedNode:
    """One kwok node: its name, size, GPUs and labels."""

    name: str
    cpu: str
    memory: str
    gpu_resource: str | None = None
    gpu_count: int = 0
    gpu_product: str | None = None


NODES = (
    SimulatedNode("cpu-1", "16", "64Gi"),
    SimulatedNode("cpu-2", "16", "64Gi"),
    SimulatedNode("gpu-h100-1", "96", "1Ti", "nvidia.com/gpu", 8, "NVIDIA-H100-80GB-HBM3"),
    SimulatedNode("gpu-a100-1", "64", "512Gi", "nvidia.com/gpu", 4, "NVIDIA-A100-SXM4-40GB"),
    SimulatedNode(
        "gpu-mig-1", "64", "512Gi", "nvidia.com/mig-1g.10gb", 7, "NVIDIA-A100-SXM4-40GB-MIG-1g.10gb"
    ),
)


def log(message: str) -> None:
    print(f"[localcluster] {message}", file=sys.stderr, flush=True)


def run(*args: str | Path, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], check=True, text=True, **kwargs)  # type: ignore[call-overload, no-any-return]


# ---------------------------------------------------------------- binaries


def build_binaries(real_node: bool = False, autoscaler_parts: tuple[str, ...] = ()) -> Path:
    """Build (or find in the cache) the pinned binaries; return their folder."""
    extra = ["--real-node"] if real_node else []
    extra += [f"--{part}" for part in autoscaler_parts]
    result = run("bash", HERE / "build-binaries.sh", *extra, stdout=subprocess.PIPE)
    return Path(result.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- certificates


def openssl(*args: str | Path) -> None:
    run("openssl", *args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def make_pki(pki: Path, node_ip: str | None = None) -> None:
    """A CA, the API server's serving cert, client certs and the SA key pair.

    With ``node_ip`` (the real node's address) also the kubelet's, kube-proxy's,
    metrics-server's and the API server's kubelet and front-proxy client certs.
    """
    pki.mkdir(parents=True, exist_ok=True)
    openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "3650",
        "-keyout",
        pki / "ca.key",
        "-out",
        pki / "ca.crt",
        "-subj",
        "/CN=mso-local-ca",
    )
    sans = ",".join(
        [
            "IP:127.0.0.1",
            f"IP:{SERVICE_IP}",
            "DNS:localhost",
            "DNS:kubernetes",
            "DNS:kubernetes.default",
            "DNS:kubernetes.default.svc",
            "DNS:kubernetes.default.svc.cluster.local",
            *([f"IP:{node_ip}"] if node_ip else []),
        ]
    )
    sign(pki, "apiserver", "/CN=kube-apiserver", f"subjectAltName={sans}")
    sign(pki, "admin", "/O=system:masters/CN=mso-admin", "extendedKeyUsage=clientAuth")
    sign(
        pki,
        "controller-manager",
        "/CN=system:kube-controller-manager",
        "extendedKeyUsage=clientAuth",
    )
    sign(pki, "scheduler", "/CN=system:kube-scheduler", "extendedKeyUsage=clientAuth")
    if node_ip:
        node = realnode.NODE_NAME
        client = "extendedKeyUsage=clientAuth"
        sign(pki, "kubelet-client", f"/O=system:nodes/CN=system:node:{node}", client)
        sign(
            pki,
            "kubelet",
            f"/CN={node}",
            f"subjectAltName=IP:{node_ip},DNS:{node}\nextendedKeyUsage=serverAuth",
        )
        sign(pki, "kube-proxy", "/CN=system:kube-proxy", client)
        # The API server reaches kubelets (logs, exec) and aggregated APIs with these.
        sign(pki, "apiserver-kubelet-client", "/O=system:masters/CN=kube-apiserver", client)
        sign(
            pki,
            "metrics-server",
            "/CN=system:metrics-server",
            f"subjectAltName=IP:{node_ip},DNS:metrics-server.kube-system.svc"
            "\nextendedKeyUsage=serverAuth,clientAuth",
        )
    # Aggregated APIs (metrics-server, KEDA's metrics API server) get requests through this.
    sign(pki, "front-proxy-client", "/CN=front-proxy-client", "extendedKeyUsage=clientAuth")
    openssl("genrsa", "-out", pki / "sa.key", "2048")
    openssl("rsa", "-in", pki / "sa.key", "-pubout", "-out", pki / "sa.pub")


def sign(pki: Path, name: str, subject: str, extension: str) -> None:
    ext = pki / f"{name}.ext"
    ext.write_text(extension + "\n")
    openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        pki / f"{name}.key",
        "-out",
        pki / f"{name}.csr",
        "-subj",
        subject,
    )
    openssl(
        "x509",
        "-req",
        "-in",
        pki / f"{name}.csr",
        "-CA",
        pki / "ca.crt",
        "-CAkey",
        pki / "ca.key",
        "-CAcreateserial",
        "-days",
        "3650",
        "-out",
        pki / f"{name}.crt",
        "-extfile",
        ext,
    )


def write_kubeconfig(path: Path, server: str, pki: Path, user: str) -> None:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "mso-local",
                "cluster": {"server": server, "certificate-authority": str(pki / "ca.crt")},
            }
        ],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate": str(pki / f"{user}.crt"),
                    "client-key": str(pki / f"{user}.key"),
                },
            }
        ],
        "contexts": [{"name": "mso-local", "context": {"cluster": "mso-local", "user": user}}],
        "current-context": "mso-local",
    }
    path.write_text(json.dumps(config, indent=2))


# ---------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(name: str, argv: list[str], logs: Path) -> int:
    out = open(logs / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(
        argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
    )
    out.close()
    log(f"started {name} (pid {proc.pid})")
    return proc.pid


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours still answers kill(0): look at its state.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_until(what: str, check: object, timeout: float = START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():  # type: ignore[operator]
                return
        except Exception:
            pass
        time.sleep(0.25)
    raise SystemExit(
        f"[localcluster] timed out after {timeout:.0f}s waiting for {what}; "
        f"see {STATE_DIR / 'logs'}"
    )


def api_ok(server: str, pki: Path, path: str = "/readyz") -> bool:
    context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    context.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
    with urllib.request.urlopen(server + path, context=context, timeout=2) as response:
        return bool(response.status == 200)


# ---------------------------------------------------------------- state


def load_state() -> dict[str, object] | None:
    try:
        return dict(json.loads((STATE_DIR / "state.json").read_text()))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def healthy(state: dict[str, object]) -> bool:
    if state.get("external"):
        return kubectl_ok(Path(str(state["kubeconfig"])))
    pids = dict(state.get("pids", {}))  # type: ignore[call-overload]
    for part in ("real_node", "autoscalers"):
        node = state.get(part)
        if isinstance(node, dict):
            pids.update(node.get("pids", {}))
    if not all(alive(int(pid)) for pid in pids.values()):
        return False
    try:
        return api_ok(str(state["server"]), STATE_DIR / "pki")
    except Exception:
        return False


def kubectl_ok(kubeconfig: Path) -> bool:
    kubectl = shutil.which("kubectl") or str(STATE_DIR / "bin" / "kubectl")
    result = subprocess.run(
        [kubectl, "--kubeconfig", str(kubeconfig), "get", "--raw", "/readyz"],
        capture_output=True,
        text=True,
        check=False,
    )
    return result.returncode == 0


# ---------------------------------------------------------------- up / down


def up() -> None:
    state = load_state()
    if state and healthy(state):
        log(f"reusing the running cluster; KUBECONFIG={STATE_DIR / 'kubeconfig'}")
        if not state.get("external") and not state.get("real_node"):
            log(
                "this cluster has no real node ("
                + str(state.get("real_node_unavailable") or "it was started without one")
                + "); `localcluster.py down` then `up` to get one"
            )
        return
    if state:
        log("the recorded cluster is not healthy: replacing it")
        down()
    if os.environ.get("MSO_USE_EXISTING_CLUSTER", "").lower() in ("1", "true", "yes"):
        use_existing()
        return
    started = time.monotonic()
    reason = realnode.unavailable_reason(STATE_DIR)
    if reason:
        log(f"no real node: {reason}; the simulated nodes work without it")
    bins = build_binaries(real_node=reason is None, autoscaler_parts=autoscalers.wanted_parts())
    log(f"binaries: {bins}")
    start_cluster(bins, None if reason else realnode.host_ip(), reason)
    if autoscalers.wanted():
        start_autoscalers(bins)
    log(
        f"cluster ready in {time.monotonic() - started:.1f}s; "
        f"export KUBECONFIG={STATE_DIR / 'kubeconfig'}"
    )


def use_existing() -> None:
    kubeconfig = os.environ.get("KUBECONFIG", "")
    if not kubeconfig or not Path(kubeconfig).is_file():
        raise SystemExit(
            "[localcluster] MSO_USE_EXISTING_CLUSTER is set but KUBECONFIG names no file"
        )
    bins = STATE_DIR / "bin"
    bins.mkdir(parents=True, exist_ok=True)
    for tool in ("kubectl", "helm"):
        found = shutil.which(tool)
        if found and not (bins / tool).exists():
            (bins / tool).symlink_to(found)
    if not kubectl_ok(Path(kubeconfig)):
        raise SystemExit(f"[localcluster] the cluster in {kubeconfig} does not answer /readyz")
    link = STATE_DIR / "kubeconfig"
    link.unlink(missing_ok=True)
    link.symlink_to(Path(kubeconfig).resolve())
    state = {"external": True, "kubeconfig": str(link)}
    (STATE_DIR / "state.json").write_text(json.dumps(state, indent=2))
    log(f"using the existing cluster of {kubeconfig}")


def start_cluster(bins: Path, node_ip: str | None, no_node_reason: str | None) -> None:
    if STATE_DIR.exists():
        shutil.rmtree(STATE_DIR)
    pki, logs, data = STATE_DIR / "pki", STATE_DIR / "logs", STATE_DIR / "etcd"
    for folder in (logs, data, STATE_DIR / "bin"):
        folder.mkdir(parents=True)
    for tool in ("kubectl", "helm", "kwok"):
        (STATE_DIR / "bin" / tool).symlink_to(bins / tool)
    make_pki(pki, node_ip)
    names = ["etcd", "etcd_peer", "apiserver", "controller_manager", "scheduler", "kwok"]
    node_ports = ["kubelet", "kubelet_healthz", "kube_proxy_healthz", "kube_proxy_metrics"]
    node_ports.append("metrics_server")
    ports = {name: free_port() for name in names}
    node_port_map = {name: free_port() for name in node_ports} if node_ip else {}
    server = f"https://127.0.0.1:{ports['apiserver']}"
    kubeconfigs = {}
    users = ["admin", "controller-manager", "scheduler"]
    if node_ip:
        users += ["kubelet-client", "kube-proxy", "metrics-server"]
    for user in users:
        kubeconfigs[user] = STATE_DIR / f"{user}.kubeconfig"
        write_kubeconfig(kubeconfigs[user], server, pki, user)
    shutil.copy(kubeconfigs["admin"], STATE_DIR / "kubeconfig")
    for user in ("kubelet-client", "kube-proxy", "metrics-server"):
        if user in kubeconfigs:
            target = STATE_DIR / f"{user.removesuffix('-client')}.kubeconfig"
            kubeconfigs[user].rename(target)
    state: dict[str, object] = {"server": server, "ports": ports, "bin": str(bins), "pids": {}}
    if no_node_reason:
        state["real_node_unavailable"] = no_node_reason
    pids: dict[str, int] = {}
    state["pids"] = pids

    def save() -> None:
        (STATE_DIR / "state.json").write_text(json.dumps(state, indent=2))

    etcd_url = f"http://127.0.0.1:{ports['etcd']}"
    peer_url = f"http://127.0.0.1:{ports['etcd_peer']}"
    pids["etcd"] = start(
        "etcd",
        [
            str(bins / "etcd"),
            "--name=mso",
            f"--data-dir={data}",
            f"--listen-client-urls={etcd_url}",
            f"--advertise-client-urls={etcd_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=mso={peer_url}",
            "--unsafe-no-fsync",
            "--quota-backend-bytes=4294967296",
            "--log-level=warn",
        ],
        logs,
    )
    save()
    wait_until("etcd", lambda: urllib.request.urlopen(etcd_url + "/health", timeout=1))

    pids["kube-apiserver"] = start(
        "kube-apiserver",
        [
            str(bins / "kube-apiserver"),
            f"--etcd-servers={etcd_url}",
            f"--secure-port={ports['apiserver']}",
            f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--authorization-mode=Node,RBAC",
            "--allow-privileged=true",
            f"--cert-dir={pki}",
            *apiserver_node_flags(pki, node_ip),
            "--v=1",
        ],
        logs,
    )
    save()
    wait_until("kube-apiserver", lambda: api_ok(server, pki))

    pids["kube-controller-manager"] = start(
        "kube-controller-manager",
        [
            str(bins / "kube-controller-manager"),
            f"--kubeconfig={kubeconfigs['controller-manager']}",
            f"--authentication-kubeconfig={kubeconfigs['controller-manager']}",
            f"--authorization-kubeconfig={kubeconfigs['controller-manager']}",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            f"--secure-port={ports['controller_manager']}",
            "--use-service-account-credentials=true",
            f"--service-account-private-key-file={pki / 'sa.key'}",
            f"--root-ca-file={pki / 'ca.crt'}",
            f"--cluster-signing-cert-file={pki / 'ca.crt'}",
            f"--cluster-signing-key-file={pki / 'ca.key'}",
            "--enable-hostpath-provisioner=true",
            "--horizontal-pod-autoscaler-sync-period=5s",
            "--v=1",
        ],
        logs,
    )
    pids["kube-scheduler"] = start(
        "kube-scheduler",
        [
            str(bins / "kube-scheduler"),
            f"--kubeconfig={kubeconfigs['scheduler']}",
            f"--authentication-kubeconfig={kubeconfigs['scheduler']}",
            f"--authorization-kubeconfig={kubeconfigs['scheduler']}",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            f"--secure-port={ports['scheduler']}",
            "--v=1",
        ],
        logs,
    )
    kwok_config = STATE_DIR / "kwok.yaml"
    write_kwok_config(bins.parent / "kwok-stages", kwok_config)
    pids["kwok"] = start(
        "kwok",
        [
            str(bins / "kwok"),
            f"--kubeconfig={kubeconfigs['admin']}",
            f"--config={kwok_config}",
            "--manage-all-nodes=false",
            "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
            "--manage-nodes-with-label-selector=",
            "--cidr=10.244.0.1/16",
            "--node-ip=10.0.0.1",
            "--node-lease-duration-seconds=40",
            f"--server-address=127.0.0.1:{ports['kwok']}",
            "--v=WARN",
        ],
        logs,
    )
    save()

    kubectl = [str(bins / "kubectl"), "--kubeconfig", str(STATE_DIR / "kubeconfig")]
    # The controllers' service accounts and the default namespace's account
    # appear once the controller manager runs: wait for them before tests do.
    wait_until(
        "the default ServiceAccount",
        lambda: subprocess.run(
            [*kubectl, "get", "serviceaccount", "default", "-n", "default"],
            capture_output=True,
            check=True,
        ),
    )
    run(
        *kubectl,
        "apply",
        "--server-side",
        "-f",
        "-",
        input=cluster_objects(),
        stdout=subprocess.DEVNULL,
    )
    wait_until(
        "simulated nodes Ready",
        lambda: subprocess.run(
            [*kubectl, "wait", "--for=condition=Ready", "node", "--all", "--timeout=5s"],
            capture_output=True,
            check=True,
        ),
    )
    if node_ip:
        start_real_node(bins, node_ip, node_port_map, kubectl, state, save)


def aggregation_flags(pki: Path) -> list[str]:
    """API aggregation (metrics.k8s.io, external.metrics.k8s.io from host processes)."""
    return [
        f"--requestheader-client-ca-file={pki / 'ca.crt'}",
        "--requestheader-allowed-names=front-proxy-client",
        "--requestheader-username-headers=X-Remote-User",
        "--requestheader-group-headers=X-Remote-Group",
        "--requestheader-extra-headers-prefix=X-Remote-Extra-",
        f"--proxy-client-cert-file={pki / 'front-proxy-client.crt'}",
        f"--proxy-client-key-file={pki / 'front-proxy-client.key'}",
        # Straight to the endpoint: the servers are host processes, not behind kube-proxy.
        "--enable-aggregator-routing=true",
    ]


def apiserver_node_flags(pki: Path, node_ip: str | None) -> list[str]:
    """Flags that differ with a real node: reachable by pods, kubelets and aggregated APIs."""
    if not node_ip:
        return [
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            "--endpoint-reconciler-type=none",
            *aggregation_flags(pki),
        ]
    return [
        # Pods reach the API server through the `kubernetes` Service, whose endpoint the
        # lease reconciler sets to the advertised, non-loopback address.
        "--bind-address=0.0.0.0",
        f"--advertise-address={node_ip}",
        "--endpoint-reconciler-type=lease",
        f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
        f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
        "--kubelet-preferred-address-types=InternalIP,Hostname",
        *aggregation_flags(pki),
    ]


NODE_REF = f"node/{realnode.NODE_NAME}"
METRICS_API = "apiservice/v1beta1.metrics.k8s.io"


def start_real_node(
    bins: Path,
    node_ip: str,
    ports: dict[str, int],
    kubectl: list[str],
    state: dict[str, object],
    save: Callable[[], None],
) -> None:
    """Start the real node; if it fails, stop what started and carry on without it."""
    started = time.monotonic()
    pids: dict[str, int] = {}
    node: dict[str, object] = {"ip": node_ip, "ports": ports, "pids": pids}
    state["real_node"] = node
    save()
    try:
        realnode.start(STATE_DIR, bins, node_ip, ports, pids, start, wait_until)
        save()
        ca_bundle = (STATE_DIR / "pki" / "ca.crt").read_bytes()
        run(
            *kubectl,
            "apply",
            "--server-side",
            "-f",
            "-",
            input=realnode.api_objects(node_ip, ports, ca_bundle),
            stdout=subprocess.DEVNULL,
        )
        wait_until(
            f"the real node {realnode.NODE_NAME} Ready",
            lambda: subprocess.run(
                [*kubectl, "wait", "--for=condition=Ready", NODE_REF, "--timeout=5s"],
                capture_output=True,
                check=True,
            ),
        )
        log(f"real node {realnode.NODE_NAME} Ready in {time.monotonic() - started:.1f}s")
        wait_until(
            "metrics.k8s.io (metrics-server) Available",
            lambda: subprocess.run(
                [*kubectl, "wait", "--for=condition=Available", METRICS_API, "--timeout=5s"],
                capture_output=True,
                check=True,
            ),
        )
    except (SystemExit, Exception) as error:
        # The simulated nodes are still fine: keep them, say why there is no real node.
        reason = f"it failed to start ({error}); logs in {STATE_DIR / 'logs'}"
        log(f"no real node: {reason}")
        save()
        realnode.stop(STATE_DIR, bins, pids, stop)
        subprocess.run(
            [*kubectl, "delete", "node", realnode.NODE_NAME, "--ignore-not-found"],
            capture_output=True,
            check=False,
        )
        del state["real_node"]
        state["real_node_unavailable"] = reason
        save()
        return
    node["ready_s"] = round(time.monotonic() - started, 1)
    save()


def start_autoscalers(bins: Path) -> None:
    """Start KEDA and Karpenter where built and not running; one that fails is stopped and
    reported, and the cluster carries on without it."""
    state = load_state()
    assert state is not None
    record = state.setdefault("autoscalers", {"pids": {}})
    assert isinstance(record, dict)
    pids: dict[str, int] = record.setdefault("pids", {})
    ports: dict[str, int] = record.setdefault("ports", {})
    for name in autoscalers.PORT_NAMES:
        ports.setdefault(name, free_port())
    unavailable: dict[str, str] = {}

    def save() -> None:
        if unavailable:
            state["autoscalers_unavailable"] = "; ".join(
                f"{k}: {v}" for k, v in unavailable.items()
            )
        else:
            state.pop("autoscalers_unavailable", None)
        (STATE_DIR / "state.json").write_text(json.dumps(state, indent=2))

    node = state.get("real_node")
    ip = str(node["ip"]) if isinstance(node, dict) else realnode.host_ip()
    kubectl = [str(bins / "kubectl"), "--kubeconfig", str(STATE_DIR / "kubeconfig")]
    for part in autoscalers.wanted_parts():
        names = {"keda": ("keda", "keda-adapter"), "karpenter": ("karpenter",)}[part]
        if all(n in pids and alive(int(pids[n])) for n in names):
            continue
        started = time.monotonic()
        try:
            if not autoscalers.built(bins, part):
                raise RuntimeError(f"not built in {bins} (build-binaries.sh --autoscalers)")
            if part == "keda":
                if ip is None:
                    raise RuntimeError("no non-loopback address for KEDA's metrics API server")
                autoscalers.start_keda(
                    STATE_DIR, bins, ip, ports, pids, kubectl, start, wait_until, sign
                )
            else:
                autoscalers.start_karpenter(
                    STATE_DIR, bins, ports, pids, kubectl, NODES, start, wait_until
                )
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


def write_kwok_config(module_stages: Path, target: Path) -> None:
    """kwok's node stages from its module, with this project's pod stages."""
    docs = [
        (module_stages / "node" / "fast" / "node-initialize.yaml").read_text(),
        (
            module_stages / "node" / "heartbeat-with-lease" / "node-heartbeat-with-lease.yaml"
        ).read_text(),
        (module_stages / "pod" / "fast" / "pod-delete.yaml").read_text(),
        (HERE / "kwok-pod-stages.yaml").read_text(),
    ]
    target.write_text("\n---\n".join(doc.strip() for doc in docs) + "\n")


def cluster_objects() -> str:
    """Simulated nodes and the default StorageClass, as a JSON list."""
    items: list[dict[str, object]] = []
    for node in NODES:
        # ephemeral-storage: child pods request it, and a node without it fits none of them.
        resources: dict[str, str] = {
            "cpu": node.cpu,
            "memory": node.memory,
            "pods": "110",
            "ephemeral-storage": "200Gi",
        }
        labels = {
            "kubernetes.io/hostname": node.name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "type": "kwok",
        }
        taints: list[dict[str, str]] = []
        if node.gpu_resource:
            resources[node.gpu_resource] = str(node.gpu_count)
            labels["nvidia.com/gpu.product"] = str(node.gpu_product)
            labels["nvidia.com/gpu.count"] = str(node.gpu_count)
            taints.append({"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"})
        items.append(
            {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {
                    "name": node.name,
                    "labels": labels,
                    "annotations": {"kwok.x-k8s.io/node": "fake"},
                },
                "spec": {"taints": taints},
                "status": {"capacity": resources, "allocatable": resources},
            }
        )
    items.append(
        {
            "apiVersion": "storage.k8s.io/v1",
            "kind": "StorageClass",
            "metadata": {
                "name": "standard",
                "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
            },
            "provisioner": "kubernetes.io/host-path",
            "reclaimPolicy": "Delete",
            "volumeBindingMode": "Immediate",
        }
    )
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": items})


def down() -> None:
    state = load_state()
    if state and not state.get("external"):
        extra = state.get("autoscalers")
        if isinstance(extra, dict):
            for name, pid in reversed(list(dict(extra.get("pids", {})).items())):
                stop(name, int(pid))
        node = state.get("real_node")
        if isinstance(node, dict):
            bins = Path(str(state.get("bin", "")))
            node_pids = {k: int(v) for k, v in dict(node.get("pids", {})).items()}
            realnode.stop(STATE_DIR, bins, node_pids, stop)
        pids = state.get("pids", {})
        assert isinstance(pids, dict)
        # Stop in reverse start order so that nothing restarts what we stop.
        for name, pid in reversed(list(pids.items())):
            stop(name, int(pid))
    if STATE_DIR.exists():
        shutil.rmtree(STATE_DIR)
    log("cluster down; state removed")


def stop(name: str, pid: int) -> None:
    for sig, grace in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if not alive(pid):
                log(f"stopped {name}")
                return
            time.sleep(0.1)


def nodes() -> None:
    kubeconfig = STATE_DIR / "kubeconfig"
    kubectl = str(STATE_DIR / "bin" / "kubectl")
    columns = ",".join(
        [
            "NAME:.metadata.name",
            "READY:.status.conditions[?(@.type=='Ready')].status",
            "CPU:.status.allocatable.cpu",
            "MEMORY:.status.allocatable.memory",
            "GPU:.status.allocatable.nvidia\\.com/gpu",
            "MIG-1G.10GB:.status.allocatable.nvidia\\.com/mig-1g\\.10gb",
            "PRODUCT:.metadata.labels.nvidia\\.com/gpu\\.product",
        ]
    )
    run(kubectl, "--kubeconfig", kubeconfig, "version")
    run(kubectl, "--kubeconfig", kubeconfig, "get", "nodes", "-o", f"custom-columns={columns}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "command", choices=["up", "down", "nodes", "status", "load-image", "autoscalers"]
    )
    parser.add_argument("images", nargs="*", help="for load-image: Docker image names")
    parsed = parser.parse_args()
    command = parsed.command
    if command == "load-image":
        state = load_state()
        if not state or not state.get("real_node"):
            raise SystemExit("[localcluster] this cluster has no real node to load images into")
        for image in parsed.images:
            realnode.load_image(image)
    elif command == "up":
        up()
    elif command == "autoscalers":
        # Add KEDA and Karpenter (as built, no build) to the running cluster.
        state = load_state()
        if not state or state.get("external") or not healthy(state):
            raise SystemExit("[localcluster] no healthy local cluster to add autoscalers to")
        start_autoscalers(Path(str(state["bin"])))
    elif command == "down":
        down()
    elif command == "nodes":
        nodes()
    else:
        state = load_state()
        raise SystemExit(0 if state and healthy(state) else 1)


if __name__ == "__main__":
    main()
