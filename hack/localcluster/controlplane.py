"""The control plane: etcd, kube-apiserver, controller-manager, scheduler and kwok; up and down."""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from localcluster import addons, realnode
from localcluster.kwok import cluster_objects, write_kwok_config
from localcluster.pki import SERVICE_CIDR, make_pki, write_kubeconfig
from localcluster.processes import alive, free_port, log, run, start, stop, wait_until
from localcluster.state import HERE, STATE_DIR, load_state


def build_binaries(real_node: bool = False, autoscaler_parts: tuple[str, ...] = ()) -> Path:
    """Build (or find in the cache) the pinned binaries; return their folder."""
    extra = ["--real-node"] if real_node else []
    extra += [f"--{part}" for part in autoscaler_parts]
    result = run("bash", HERE / "build-binaries.sh", *extra, stdout=subprocess.PIPE)
    return Path(result.stdout.strip().splitlines()[-1])


def api_ok(server: str, pki: Path, path: str = "/readyz") -> bool:
    context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    context.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
    with urllib.request.urlopen(server + path, context=context, timeout=2) as response:
        return bool(response.status == 200)


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


def up() -> None:
    state = load_state()
    if state and healthy(state):
        log(f"reusing the running cluster; KUBECONFIG={STATE_DIR / 'kubeconfig'}")
        if not state.get("external") and not state.get("real_node"):
            log(
                "this cluster has no real node ("
                + str(state.get("real_node_unavailable") or "it was started without one")
                + "); `python -m localcluster down` then `up` to get one"
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
    bins = build_binaries(real_node=reason is None, autoscaler_parts=addons.wanted_parts())
    log(f"binaries: {bins}")
    start_cluster(bins, None if reason else realnode.host_ip(), reason)
    if addons.wanted():
        addons.start_autoscalers(bins)
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
    node_ports += ["metrics_server", "kube_router_health"]
    ports = {name: free_port() for name in names}
    node_port_map = {name: free_port() for name in node_ports} if node_ip else {}
    server = f"https://127.0.0.1:{ports['apiserver']}"
    kubeconfigs = {}
    users = ["admin", "controller-manager", "scheduler"]
    if node_ip:
        users += ["kubelet-client", "kube-proxy", "metrics-server", "kube-router"]
    for user in users:
        kubeconfigs[user] = STATE_DIR / f"{user}.kubeconfig"
        write_kubeconfig(kubeconfigs[user], server, pki, user)
    shutil.copy(kubeconfigs["admin"], STATE_DIR / "kubeconfig")
    for user in ("kubelet-client", "kube-proxy", "metrics-server", "kube-router"):
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
            # client-go's default is 20 requests/s per controller: too few for
            # `make bench-operator`'s bursts of 1,000 claims, Jobs and pods, where the local
            # cluster, not the operator, would set the pace (claims bound at 0.3-0.5/s at
            # the default on a loaded host, ~3.5/s with this on an idle one). Scale tests
            # raise it the same way.
            "--kube-api-qps=200",
            "--kube-api-burst=400",
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
        # RBAC first: metrics-server reads the extension-apiserver-authentication ConfigMap
        # once as it starts and exits for good when it may not yet (a race it lost in a
        # clean-clone run whose cached binaries made the node start in under a second).
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
        realnode.start(STATE_DIR, bins, node_ip, ports, pids, start, wait_until)
        save()
        wait_until(
            f"the real node {realnode.NODE_NAME} Ready",
            lambda: subprocess.run(
                [*kubectl, "wait", "--for=condition=Ready", NODE_REF, "--timeout=5s"],
                capture_output=True,
                check=True,
            ),
        )
        log(f"real node {realnode.NODE_NAME} Ready in {time.monotonic() - started:.1f}s")
        policy = realnode.start_network_policy(
            STATE_DIR, bins, ports, SERVICE_CIDR, pids, start, wait_until
        )
        node["network_policy"] = policy
        save()
        log(
            "NetworkPolicy enforced by " + str(policy["by"])
            if policy["enforced"]
            else f"NetworkPolicy NOT enforced: {policy['reason']}"
        )
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
        # An aggregated API left registered and unavailable blocks every namespace deletion
        # (the namespace controller cannot list what it serves).
        for obj in (("node", realnode.NODE_NAME), (METRICS_API,)):
            subprocess.run(
                [*kubectl, "delete", *obj, "--ignore-not-found"],
                capture_output=True,
                check=False,
            )
        del state["real_node"]
        state["real_node_unavailable"] = reason
        save()
        return
    node["ready_s"] = round(time.monotonic() - started, 1)
    save()


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
