"""The local cluster's one real worker node: containerd, CNI, kubelet, kube-proxy, metrics-server.

Beside the simulated (kwok) nodes, ``python -m localcluster up`` starts a node that runs containers
for real, so the operator, training Jobs and predictors can run end to end:

- containerd (Debian's, its own instance: config, socket and state apart from Docker's) with
  CRI, runc and cgroupfs; the sandbox image is a pause program built here, ``FROM scratch``;
- CNI from Debian's ``containernetworking-plugins``: bridge ``mso0`` + host-local + portmap;
- kubelet and kube-proxy (iptables mode), built from the control plane's module;
- metrics-server as a host process behind an APIService, so the HPA controller sees real CPU;
- kube-router's network policy controller alone (``--run-firewall``, no routing, no service
  proxy) as a host process: it turns NetworkPolicies into iptables rules and ipsets on the
  bridge's traffic, so the policies the operator builds are enforced here, not just stored.

The node is tainted ``modelservice.dev/real-node=true:NoSchedule`` and labelled
``modelservice.dev/real-node=true``: only pods that opt in (toleration + nodeSelector) run on
it, and the simulated-node tests see no difference.

One machine has one real node at most: its bridge, pod range, iptables chains and containerd
are machine-wide. The first cluster to start one owns it (``/run/mso-real-node.json``); a second
cluster on the same machine runs with simulated nodes only and says why.

Only the standard library is used, like the rest of ``localcluster``.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

NODE_NAME = "real-1"
LABEL = "modelservice.dev/real-node"
TAINT = {"key": LABEL, "value": "true", "effect": "NoSchedule"}
# Beside kwok's fake pod range (10.244.0.0/16) so the two never overlap.
POD_SUBNET = "10.245.0.0/24"
BRIDGE = "mso0"
CNI_NETWORK = "mso"
PAUSE_IMAGE = "mso.local/pause:3.10"
CONTAINERD_ROOT = Path("/var/lib/mso-containerd")  # images survive `down`: no re-import
CONTAINERD_STATE = Path("/run/mso-containerd")
CONTAINERD_SOCK = CONTAINERD_STATE / "containerd.sock"
CNI_IPAM_DIR = Path("/run/mso-cni/ipam")
CNI_BIN_DIR = Path("/usr/lib/cni")
OWNER_FILE = Path("/run/mso-real-node.json")
PACKAGES = {
    # binary or file that proves the package -> Debian package
    "/usr/bin/containerd": "containerd",
    "/usr/sbin/runc": "runc",
    "/usr/lib/cni/bridge": "containernetworking-plugins",
    "/usr/sbin/iptables": "iptables",
    "/usr/sbin/conntrack": "conntrack",
    "/usr/sbin/ip": "iproute2",
    "/usr/sbin/ipset": "ipset",  # kube-router's policy sets
}
# kube-router's network policy controller: its filter chains and ipsets (names it uses in
# pkg/controllers/netpol), removed by ``down`` without its --cleanup-config, which would also
# flush every IPVS table and other interfaces of the machine.
KUBE_ROUTER_CHAIN_PREFIXES = ("KUBE-ROUTER-", "KUBE-NWPLCY-", "KUBE-POD-FW-")
KUBE_ROUTER_IPSET_PREFIXES = ("KUBE-SRC-", "KUBE-DST-")
PAUSE_SOURCE = """\
// pause: the pod sandbox's only process. It holds the pod's namespaces and exits on
// SIGINT or SIGTERM, like the upstream pause image (built here: no registry).
package main

import (
\t"os"
\t"os/signal"
\t"syscall"
)

func main() {
\tc := make(chan os.Signal, 1)
\tsignal.Notify(c, syscall.SIGINT, syscall.SIGTERM)
\t<-c
}
"""


def log(message: str) -> None:
    print(f"[localcluster] real node: {message}", file=sys.stderr, flush=True)


def enabled_by_env() -> bool:
    """``MSO_REAL_NODE=0`` (or false/no) asks for simulated nodes only."""
    return os.environ.get("MSO_REAL_NODE", "1").lower() not in ("0", "false", "no")


def host_ip() -> str | None:
    """The address of the default route's interface: the node's InternalIP.

    The API server's endpoint and the metrics-server endpoint must not be loopback
    (EndpointSlices refuse 127.0.0.0/8), and pods reach the host through it.
    """
    try:
        out = subprocess.run(
            ["ip", "-4", "-o", "route", "show", "default"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        dev = out[out.index("dev") + 1]
        addr = subprocess.run(
            ["ip", "-4", "-o", "addr", "show", "dev", dev],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        return addr[addr.index("inet") + 1].split("/")[0]
    except (OSError, ValueError, IndexError, subprocess.CalledProcessError):
        return None


def owner() -> dict[str, object] | None:
    """The cluster that holds this machine's real node, if it is still running."""
    try:
        record = dict(json.loads(OWNER_FILE.read_text()))
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    pid = int(str(record.get("kubelet_pid", 0)))
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError, ValueError):
        return None
    return record


def unavailable_reason(state_dir: Path) -> str | None:
    """Why this machine cannot run the real node now, or None when it can."""
    if not enabled_by_env():
        return "MSO_REAL_NODE=0 asks for simulated nodes only"
    if sys.platform != "linux":
        return f"a kubelet needs Linux, this is {sys.platform}"
    if os.geteuid() != 0:
        return "kubelet, containerd and kube-proxy need root (namespaces, cgroups, iptables)"
    held = owner()
    if held and Path(str(held.get("cluster_dir"))).resolve() != state_dir.resolve():
        return (
            f"the cluster in {held.get('cluster_dir')} already runs this machine's real node "
            "(one per machine: bridge, pod range and iptables chains are machine-wide)"
        )
    if "overlay" not in Path("/proc/filesystems").read_text():
        return "the kernel has no overlay filesystem (containerd's overlayfs snapshotter)"
    if not Path("/proc/sys/net/bridge/bridge-nf-call-iptables").exists():
        return "the kernel has no br_netfilter (bridged pod traffic would bypass kube-proxy)"
    cgroups = Path("/proc/cgroups").read_text()
    for controller in ("cpu", "memory", "pids"):
        if not any(line.split()[0] == controller for line in cgroups.splitlines()[1:]):
            return f"the kernel has no {controller} cgroup controller"
    if shutil.which("go") is None:
        return "Go is needed to build kubelet, kube-proxy and the pause program"
    try:
        ensure_packages()
    except subprocess.CalledProcessError as error:
        return f"installing Debian's containerd/runc/CNI plugins failed: {error}"
    if host_ip() is None:
        return "no IPv4 default route: the node needs a non-loopback address"
    return None


def ensure_packages() -> None:
    """Debian's containerd, runc, CNI plugins, iptables, ipset, conntrack (once; CI is fresh)."""
    missing = sorted({pkg for path, pkg in PACKAGES.items() if not Path(path).exists()})
    if not missing:
        return
    log(f"installing {' '.join(missing)} (apt-get)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, stdout=subprocess.DEVNULL)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )


# ---------------------------------------------------------------- images


def ctr(*args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # type: ignore[call-overload, no-any-return]
        ["ctr", "--address", str(CONTAINERD_SOCK), "--namespace", "k8s.io", *args],
        text=True,
        **kwargs,
    )


def docker_image_id(image: str) -> str:
    return subprocess.run(
        ["docker", "image", "inspect", "--format", "{{.Id}}", image],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def qualified(image: str) -> str:
    """The name containerd (and the kubelet) give an image: ``docker.io/library/x:tag``."""
    first = image.split("/")[0]
    if "/" not in image:
        image = f"docker.io/library/{image}"
    elif "." not in first and ":" not in first and first != "localhost":
        image = f"docker.io/{image}"
    return image if ":" in image.rsplit("/", 1)[-1] else image + ":latest"


def load_image(image: str) -> None:
    """Copy a Docker image into the node's containerd, unless that same image is there.

    The Docker image ID is kept as a label, so a rebuilt image is imported again and an
    unchanged one costs nothing (the 2 GB serving image takes about a minute to import).
    """
    wanted = docker_image_id(image)
    name = qualified(image)
    listed = ctr("images", "ls", f"name=={name}", capture_output=True, check=True).stdout
    if f"mso.docker-id={wanted}" in listed:
        return
    started = time.monotonic()
    for attempt in range(1, 4):
        save = subprocess.Popen(["docker", "save", image], stdout=subprocess.PIPE)
        result = ctr(
            "images", "import", "-", stdin=save.stdout, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, check=False,
        )  # fmt: skip
        if save.wait() != 0:
            raise RuntimeError(f"docker save {image} failed")
        if result.returncode == 0:
            break
        # containerd 1.6's garbage collector can remove a shared parent layer's snapshot
        # while an import unpacks onto it (the replaced image of the same name released
        # it): "parent snapshot ... does not exist". A second import unpacks it again.
        log(f"importing {image} failed (attempt {attempt}): {result.stderr.strip()}")
        if attempt == 3:
            raise RuntimeError(f"ctr images import {image} failed: {result.stderr.strip()}")
        time.sleep(2)
    ctr("images", "label", name, f"mso.docker-id={wanted}", check=True, stdout=subprocess.DEVNULL)
    log(f"loaded {image} into containerd in {time.monotonic() - started:.1f}s")
    prune_replaced_images()


def prune_replaced_images() -> None:
    """Drop ``sha256:<id>`` records of images no name points to any more.

    An import can leave the image ID itself as a record; after a rebuild that record
    would keep the old 2 GB serving image alive in the store for ever.
    """
    listed = ctr("images", "ls", capture_output=True, check=True).stdout.splitlines()[1:]
    current = {
        label.split("=", 1)[1]
        for line in listed
        if not line.startswith("sha256:")
        for label in line.split()[-1].split(",")
        if label.startswith("mso.docker-id=")
    }
    stale = [
        line.split()[0]
        for line in listed
        if line.startswith("sha256:") and line.split()[0] not in current
    ]
    if stale:
        ctr("images", "rm", *stale, capture_output=True, check=False)


def ensure_docker() -> None:
    """Docker (installed and started by the serving side's bootstrap script) for builds."""
    repo = Path(__file__).resolve().parents[2]
    subprocess.run(
        ["bash", str(repo / "serving" / "scripts" / "bootstrap-base-image.sh"), "--docker-only"],
        check=True,
    )


def build_pause_image(cache: Path) -> None:
    """The sandbox image: a static pause program ``FROM scratch``, built and loaded here."""
    listed = ctr("images", "ls", "-q", f"name=={PAUSE_IMAGE}", capture_output=True, check=True)
    if listed.stdout.strip():
        return
    src = cache / "pause"
    src.mkdir(parents=True, exist_ok=True)
    (src / "main.go").write_text(PAUSE_SOURCE)
    (src / "go.mod").write_text("module local/pause\n\ngo 1.22\n")
    env = {**os.environ, "CGO_ENABLED": "0"}
    subprocess.run(
        ["go", "build", "-trimpath", "-ldflags=-s -w", "-o", "pause", "."],
        cwd=src,
        env=env,
        check=True,
    )
    (src / "Dockerfile").write_text('FROM scratch\nCOPY pause /pause\nENTRYPOINT ["/pause"]\n')
    ensure_docker()
    subprocess.run(
        ["docker", "build", "-q", "-t", PAUSE_IMAGE, str(src)],
        check=True,
        stdout=subprocess.DEVNULL,
        env={**os.environ, "DOCKER_BUILDKIT": "0"},
    )
    load_image(PAUSE_IMAGE)


# ---------------------------------------------------------------- configuration


def oom_score_adj_restricted() -> bool:
    """True when this process may not lower an OOM score (no CAP_SYS_RESOURCE)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return not int(line.split()[1], 16) & (1 << 24)
    return True


def containerd_config(path: Path) -> None:
    """Config v2 for containerd 1.6: CRI on, runc with cgroupfs, our pause and CNI dirs."""
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    path.write_text(
        f"""version = 2
root = "{CONTAINERD_ROOT}"
state = "{CONTAINERD_STATE}"
# Only the CRI and what it needs: no Docker integration, no metrics listener.
disabled_plugins = ["io.containerd.internal.v1.tracing", "io.containerd.tracing.processor.v1.otlp"]

[grpc]
  address = "{CONTAINERD_SOCK}"

[plugins."io.containerd.internal.v1.opt"]
  path = "{CONTAINERD_ROOT}/opt"

[{cri}]
  sandbox_image = "{PAUSE_IMAGE}"
  enable_selinux = false
  # This VM withholds CAP_SYS_RESOURCE even from root, so no process may lower its
  # oom_score_adj: runc fails on the sandbox's -998 ("can't get final child's PID from
  # pipe"). Clamp to containerd's own score (0) instead, as rootless setups do.
  restrict_oom_score_adj = {"true" if oom_score_adj_restricted() else "false"}
  # Pods cannot reach a registry from here; images are loaded with `ctr images import`.
  [{cri}.containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [{cri}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [{cri}.containerd.runtimes.runc.options]
        # No systemd on this machine: the kubelet's cgroupDriver is cgroupfs too.
        SystemdCgroup = false
  [{cri}.cni]
    bin_dir = "{CNI_BIN_DIR}"
    conf_dir = "{path.parent / "net.d"}"
"""
    )
    net = path.parent / "net.d"
    net.mkdir(exist_ok=True)
    conflist = {
        "cniVersion": "0.4.0",
        "name": CNI_NETWORK,
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": True,
                "ipMasq": True,
                # A pod reaching its own Service must get the reply back through the bridge.
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": POD_SUBNET}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(CNI_IPAM_DIR),
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }
    (net / "10-mso.conflist").write_text(json.dumps(conflist, indent=2))


def kubelet_config(path: Path, state_dir: Path, ip: str, ports: dict[str, int]) -> None:
    pki = state_dir / "pki"
    config = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": ip,
        "port": ports["kubelet"],
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": ports["kubelet_healthz"],
        "tlsCertFile": str(pki / "kubelet.crt"),
        "tlsPrivateKeyFile": str(pki / "kubelet.key"),
        # Only the API server (kubelet-client cert) and metrics-server get in, each as
        # the RBAC identity of its certificate.
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(pki / "ca.crt")},
        },
        "authorization": {"mode": "Webhook"},
        "cgroupDriver": "cgroupfs",
        # This machine has cgroup v1 (hybrid); 1.34 still runs there when told to.
        "failCgroupV1": False,
        "failSwapOn": False,
        "containerRuntimeEndpoint": f"unix://{CONTAINERD_SOCK}",
        "podLogsDir": str(state_dir / "pod-logs"),
        "registerWithTaints": [TAINT],
        # No cluster DNS: pods use the host's resolver, Services are reached by ClusterIP.
        "resolvConf": "/etc/resolv.conf",
        # The disk is shared with the rest of the machine: evict only when really short.
        "evictionHard": {
            "memory.available": "256Mi",
            "nodefs.available": "2%",
            "imagefs.available": "2%",
            "nodefs.inodesFree": "2%",
        },
        "imageGCHighThresholdPercent": 95,
        "imageGCLowThresholdPercent": 90,
        "serializeImagePulls": False,
        "maxPods": 40,
        # Fast feedback for tests: status and pod lifecycle events are seen sooner.
        "nodeStatusUpdateFrequency": "5s",
        "syncFrequency": "10s",
        "fileCheckFrequency": "10s",
        "protectKernelDefaults": False,
        "makeIPTablesUtilChains": True,
    }
    path.write_text(json.dumps(config, indent=2))


def kube_proxy_config(path: Path, state_dir: Path, ports: dict[str, int]) -> None:
    config = {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(state_dir / "kube-proxy.kubeconfig")},
        "mode": "iptables",
        "hostnameOverride": NODE_NAME,
        "clusterCIDR": POD_SUBNET,
        "healthzBindAddress": f"127.0.0.1:{ports['kube_proxy_healthz']}",
        "metricsBindAddress": f"127.0.0.1:{ports['kube_proxy_metrics']}",
        # Leave the machine's conntrack table size alone (shared machine, maybe read-only).
        "conntrack": {"maxPerCore": 0, "min": 0},
        # Not on loopback: that would set route_localnet on the whole machine.
        "iptables": {"localhostNodePorts": False},
    }
    path.write_text(json.dumps(config, indent=2))


RBAC_API = "rbac.authorization.k8s.io/v1"
READ = ["get", "list", "watch"]


def _binding(
    name: str, role_kind: str, role: str, user: str, namespace: str | None = None
) -> dict[str, object]:
    """A (Cluster)RoleBinding of ``role`` to the certificate user ``user``."""
    metadata = {"name": name, **({"namespace": namespace} if namespace else {})}
    return {
        "apiVersion": RBAC_API,
        "kind": "RoleBinding" if namespace else "ClusterRoleBinding",
        "metadata": metadata,
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role},
        "subjects": [{"kind": "User", "name": user}],
    }


def _user_cluster_role(user: str, rules: list[dict[str, list[str]]]) -> list[dict[str, object]]:
    """A ClusterRole named for a host process's certificate user, bound to that user."""
    role: dict[str, object] = {
        "apiVersion": RBAC_API,
        "kind": "ClusterRole",
        "metadata": {"name": user},
        "rules": rules,
    }
    return [role, _binding(user, "ClusterRole", user, user)]


def api_objects(ip: str, ports: dict[str, int], ca_bundle: bytes) -> str:
    """RBAC, Service and APIService for metrics-server running as a host process."""
    name = "metrics-server"
    metrics_user = "system:metrics-server"
    items: list[dict[str, object]] = [
        *_user_cluster_role(
            metrics_user,
            [
                {"apiGroups": [""], "resources": ["nodes/metrics"], "verbs": ["get"]},
                {"apiGroups": [""], "resources": ["pods", "nodes"], "verbs": READ},
            ],
        ),
        # Delegated authentication and authorization of the API server's requests.
        _binding(
            "metrics-server:system:auth-delegator",
            "ClusterRole",
            "system:auth-delegator",
            metrics_user,
        ),
        _binding(
            "metrics-server-auth-reader",
            "Role",
            "extension-apiserver-authentication-reader",
            metrics_user,
            namespace="kube-system",
        ),
        # kube-router's network policy controller: what its informers watch (it starts
        # Service, Endpoints and EndpointSlice informers even with the proxy off).
        *_user_cluster_role(
            "system:kube-router",
            [
                {
                    "apiGroups": [""],
                    "resources": ["namespaces", "pods", "services", "nodes", "endpoints"],
                    "verbs": READ,
                },
                {
                    "apiGroups": ["networking.k8s.io"],
                    "resources": ["networkpolicies"],
                    "verbs": READ,
                },
                {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": READ},
            ],
        ),
        {
            # A selector-less Service whose one endpoint is the host process.
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": "kube-system"},
            "spec": {
                "ports": [
                    {
                        "name": "https",
                        "port": 443,
                        "protocol": "TCP",
                        "targetPort": ports["metrics_server"],
                    }
                ]
            },
        },
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": name,
                "namespace": "kube-system",
                "labels": {
                    "kubernetes.io/service-name": name,
                    "endpointslice.kubernetes.io/managed-by": "localcluster.modelservice.dev",
                },
            },
            "addressType": "IPv4",
            "endpoints": [{"addresses": [ip], "conditions": {"ready": True}}],
            "ports": [{"name": "https", "port": ports["metrics_server"], "protocol": "TCP"}],
        },
        {
            "apiVersion": "apiregistration.k8s.io/v1",
            "kind": "APIService",
            "metadata": {"name": "v1beta1.metrics.k8s.io"},
            "spec": {
                "group": "metrics.k8s.io",
                "version": "v1beta1",
                "service": {"name": name, "namespace": "kube-system", "port": 443},
                "caBundle": base64.b64encode(ca_bundle).decode(),
                "groupPriorityMinimum": 100,
                "versionPriority": 100,
            },
        },
    ]
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": items})


# ---------------------------------------------------------------- start / stop


def start(
    state_dir: Path,
    bins: Path,
    ip: str,
    ports: dict[str, int],
    pids: dict[str, int],
    spawn: Callable[[str, list[str], Path], int],
    wait: Callable[[str, Callable[[], object], float], None],
) -> None:
    """Start containerd, kubelet, kube-proxy and metrics-server, recording pids as it goes.

    ``pids`` is filled in place, so a start that fails halfway still lets ``stop`` find
    what runs. ``spawn`` and ``wait`` are localcluster's, so processes, logs and timeouts
    behave like the control plane's.
    """
    logs = state_dir / "logs"
    node_dir = state_dir / "real-node"
    node_dir.mkdir(parents=True, exist_ok=True)
    for folder in (CONTAINERD_ROOT, CONTAINERD_STATE, CNI_IPAM_DIR, state_dir / "pod-logs"):
        folder.mkdir(parents=True, exist_ok=True)
    # Bridged pod traffic must pass through iptables, where kube-proxy's DNAT lives.
    for key, value in (
        ("net/bridge/bridge-nf-call-iptables", "1"),
        ("net/ipv4/ip_forward", "1"),
    ):
        Path("/proc/sys", key).write_text(value)

    containerd_config(node_dir / "containerd.toml")
    pids["containerd"] = spawn(
        "containerd",
        ["containerd", "--config", str(node_dir / "containerd.toml"), "--log-level", "warn"],
        logs,
    )
    wait("containerd", lambda: ctr("version", capture_output=True, check=True), 60)
    build_pause_image(bins.parent / "src")

    kubelet_config(node_dir / "kubelet.yaml", state_dir, ip, ports)
    pids["kubelet"] = spawn(
        "kubelet",
        [
            str(bins / "kubelet"),
            f"--config={node_dir / 'kubelet.yaml'}",
            f"--kubeconfig={state_dir / 'kubelet.kubeconfig'}",
            f"--root-dir={node_dir / 'kubelet'}",
            f"--cert-dir={node_dir / 'kubelet-pki'}",
            f"--hostname-override={NODE_NAME}",
            f"--node-ip={ip}",
            f"--node-labels={LABEL}=true",
            "--v=1",
        ],
        logs,
    )
    OWNER_FILE.write_text(
        json.dumps({"cluster_dir": str(state_dir), "kubelet_pid": pids["kubelet"]})
    )
    kube_proxy_config(node_dir / "kube-proxy.yaml", state_dir, ports)
    pids["kube-proxy"] = spawn(
        "kube-proxy",
        [str(bins / "kube-proxy"), f"--config={node_dir / 'kube-proxy.yaml'}", "--v=1"],
        logs,
    )
    pki = state_dir / "pki"
    pids["metrics-server"] = spawn(
        "metrics-server",
        [
            str(bins / "metrics-server"),
            f"--bind-address={ip}",
            f"--secure-port={ports['metrics_server']}",
            f"--tls-cert-file={pki / 'metrics-server.crt'}",
            f"--tls-private-key-file={pki / 'metrics-server.key'}",
            f"--kubeconfig={state_dir / 'metrics-server.kubeconfig'}",
            f"--authentication-kubeconfig={state_dir / 'metrics-server.kubeconfig'}",
            f"--authorization-kubeconfig={state_dir / 'metrics-server.kubeconfig'}",
            f"--kubelet-certificate-authority={pki / 'ca.crt'}",
            "--kubelet-preferred-address-types=InternalIP",
            "--kubelet-use-node-status-port",
            # Simulated nodes have no kubelet to scrape.
            f"--node-selector={LABEL}=true",
            "--metric-resolution=15s",
            "--kubelet-request-timeout=5s",
            "--v=1",
        ],
        logs,
    )


def kube_router_argv(
    bins: Path, state_dir: Path, ports: dict[str, int], service_cidr: str
) -> list[str]:
    """kube-router as a network policy controller only, for this node."""
    return [
        str(bins / "kube-router"),
        f"--kubeconfig={state_dir / 'kube-router.kubeconfig'}",
        f"--hostname-override={NODE_NAME}",
        "--run-firewall=true",
        "--run-router=false",
        "--run-service-proxy=false",
        f"--service-cluster-ip-range={service_cidr}",
        "--enable-ipv6=false",
        f"--health-port={ports['kube_router_health']}",
        "--metrics-port=0",
        # A full resync now and then; policy, pod and namespace events apply at once.
        "--iptables-sync-period=1m",
        "--v=1",
    ]


def kube_router_synced() -> bool:
    """Whether kube-router's first sync installed its forward chain (policies apply)."""
    return (
        subprocess.run(
            ["iptables", "-t", "filter", "-S", "KUBE-ROUTER-FORWARD"],
            capture_output=True,
            check=False,
        ).returncode
        == 0
    )


def start_network_policy(
    state_dir: Path,
    bins: Path,
    ports: dict[str, int],
    service_cidr: str,
    pids: dict[str, int],
    spawn: Callable[[str, list[str], Path], int],
    wait: Callable[[str, Callable[[], object], float], None],
) -> dict[str, object]:
    """Start kube-router's policy controller once the node exists; say whether it enforces.

    It reads the Node object at start, so this runs after the node registered. A failure
    leaves the node up without enforcement and says why (the NetworkPolicy e2e test fails
    with that reason; nothing else depends on it).
    """
    version = (
        (bins / "kube-router.version").read_text().strip()
        if (bins / "kube-router.version").exists()
        else None
    )
    if not (bins / "kube-router").exists() or version is None:
        return {"enforced": False, "reason": f"kube-router is not built in {bins}"}
    clean_kube_router()  # a chain left by an earlier run would pass for a first sync
    pids["kube-router"] = spawn(
        "kube-router", kube_router_argv(bins, state_dir, ports, service_cidr), state_dir / "logs"
    )
    try:
        wait("kube-router's first policy sync", kube_router_synced, 60)
    except (SystemExit, Exception) as error:
        return {"enforced": False, "reason": f"kube-router did not sync: {error}"}
    return {"enforced": True, "by": f"kube-router {version} (network policy controller)"}


def stop(
    state_dir: Path, bins: Path, pids: dict[str, int], halt: Callable[[str, int], None]
) -> None:
    """Stop the node's pods through the CRI, then its processes, then clean the host.

    Leaves nothing of this cluster behind: no pods or shims, no mounts under the kubelet's
    root, no CNI or kube-proxy iptables rules, no bridge, no IP allocations. The image
    store in ``/var/lib/mso-containerd`` stays, so the next ``up`` need not re-import.
    """
    node_dir = state_dir / "real-node"
    for name in ("kube-router", "metrics-server", "kubelet"):
        if name in pids:
            halt(name, pids[name])
    crictl = bins / "crictl"
    if CONTAINERD_SOCK.exists() and crictl.exists():
        # rmp -fa: stop and remove every pod sandbox, CNI DEL included.
        subprocess.run(
            [str(crictl), "--runtime-endpoint", f"unix://{CONTAINERD_SOCK}", "rmp", "-fa"],
            capture_output=True,
            timeout=120,
            check=False,
        )
    if "kube-proxy" in pids:
        halt("kube-proxy", pids["kube-proxy"])
        if (bins / "kube-proxy").exists():
            subprocess.run(
                [str(bins / "kube-proxy"), "--cleanup"], capture_output=True, check=False
            )
    if "containerd" in pids:
        halt("containerd", pids["containerd"])
    kill_shims()
    unmount_under(node_dir)
    clean_network()
    clean_kube_router()
    try:
        if json.loads(OWNER_FILE.read_text()).get("cluster_dir") == str(state_dir):
            OWNER_FILE.unlink()
    except (FileNotFoundError, json.JSONDecodeError):
        pass
    shutil.rmtree(CONTAINERD_STATE, ignore_errors=True)


def clean_kube_router() -> None:
    """kube-router's filter chains, the rules jumping to them, and its ipsets."""
    rules = subprocess.run(
        ["iptables", "-t", "filter", "-S"], capture_output=True, text=True, check=False
    ).stdout.splitlines()
    ours = KUBE_ROUTER_CHAIN_PREFIXES
    for rule in rules:
        args = shlex.split(rule)
        target = args[args.index("-j") + 1] if "-j" in args[:-1] else ""
        # A jump from a built-in chain into ours: delete it (ours go with their chains).
        if rule.startswith("-A ") and target.startswith(ours) and not args[1].startswith(ours):
            subprocess.run(
                ["iptables", "-t", "filter", "-D", *args[1:]], capture_output=True, check=False
            )
    chains = [r.split()[1] for r in rules if r.startswith("-N ") and r.split()[1].startswith(ours)]
    for flag in ("-F", "-X"):  # empty them all first: they jump to each other
        for chain in chains:
            subprocess.run(
                ["iptables", "-t", "filter", flag, chain], capture_output=True, check=False
            )
    if shutil.which("ipset") is None:
        return
    names = subprocess.run(
        ["ipset", "list", "-n"], capture_output=True, text=True, check=False
    ).stdout.split()
    for name in names:
        if name.startswith(KUBE_ROUTER_IPSET_PREFIXES):
            subprocess.run(["ipset", "destroy", name], capture_output=True, check=False)


def kill_shims() -> None:
    """Shims of our containerd that outlived it (a crictl that could not finish)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if (
            argv
            and argv[0].endswith(b"containerd-shim-runc-v2")
            and str(CONTAINERD_SOCK).encode() in b" ".join(argv)
        ):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(proc.name), signal.SIGKILL)


def unmount_under(root: Path) -> None:
    """The kubelet's tmpfs (projected tokens) and bind mounts, deepest first."""
    prefix = str(root.resolve()) + "/"
    mounts = [
        line.split()[1].replace("\\040", " ")
        for line in Path("/proc/mounts").read_text().splitlines()
        if line.split()[1].startswith(prefix)
    ]
    for mount in sorted(mounts, key=len, reverse=True):
        subprocess.run(["umount", "-l", mount], capture_output=True, check=False)


def clean_network() -> None:
    """The bridge, the CNI plugins' iptables chains and the host-local allocations."""
    subprocess.run(["ip", "link", "delete", BRIDGE], capture_output=True, check=False)
    for table in ("nat", "filter"):
        rules = subprocess.run(
            ["iptables", "-t", table, "-S"], capture_output=True, text=True, check=False
        ).stdout.splitlines()
        # The bridge plugin's per-pod masquerade chains carry a comment naming our network.
        for rule in rules:
            if rule.startswith("-A ") and f'name: \\"{CNI_NETWORK}\\"' in rule:
                args = shlex.split(rule)[1:]
                subprocess.run(
                    ["iptables", "-t", table, "-D", *args], capture_output=True, check=False
                )
        for rule in rules:
            if rule.startswith("-N CNI-"):
                chain = rule.split()[1]
                # -X refuses a chain that something still jumps to: only orphans go.
                subprocess.run(
                    ["iptables", "-t", table, "-X", chain], capture_output=True, check=False
                )
    # The kubelet's own utility chains (makeIPTablesUtilChains), which nothing else removes.
    for table, parent in (("filter", "INPUT"), ("filter", "OUTPUT")):
        subprocess.run(
            ["iptables", "-t", table, "-D", parent, "-j", "KUBE-FIREWALL"],
            capture_output=True,
            check=False,
        )
    for table in ("filter", "nat", "mangle"):
        for chain in ("KUBE-FIREWALL", "KUBE-KUBELET-CANARY", "KUBE-IPTABLES-HINT"):
            subprocess.run(["iptables", "-t", table, "-F", chain], capture_output=True, check=False)
            subprocess.run(["iptables", "-t", table, "-X", chain], capture_output=True, check=False)
    shutil.rmtree(CNI_IPAM_DIR, ignore_errors=True)
