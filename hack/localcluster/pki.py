"""The local cluster's certificates and kubeconfigs, made with openssl."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from localcluster import realnode
from localcluster.processes import run

SERVICE_CIDR = "10.96.0.0/16"
SERVICE_IP = "10.96.0.1"


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
