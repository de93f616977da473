"""``make demo``: the operator trains, gates and serves the digits model on the real node.

Starts (or reuses) the local cluster with its real node, builds the operator and serving
images and loads them into the node, installs the operator with its Helm chart, applies the
CPU variant of ``deploy/samples/modelservice-digits.yaml`` and waits for Ready. Then it asks
the predictor Service (its ClusterIP, through kube-proxy) for predictions of held-out digits
over KServe V1 and Open Inference Protocol V2, prints them beside the true labels and prints
``kubectl get ms``. Nothing is scripted: the accuracy is the training pod's, the predictions
the serving pod's.

    PYTHONPATH=hack .venv/bin/python -m localcluster.demo           # leaves the demo running
    PYTHONPATH=hack .venv/bin/python -m localcluster.demo --clean   # removes its namespaces
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from localcluster import workloads as rw
from localcluster.kubectl import KubeCluster, wait_for
from localcluster.state import REPO, cli_argv, cli_env

CLUSTER_DIR = Path(os.environ.get("MSO_CLUSTER_DIR", REPO / ".cluster"))
NAMESPACE = "mso-demo"
OPERATOR_NAMESPACE = "mso-demo-system"
RELEASE = "mso-demo"
NAME = "digits"


def say(message: str) -> None:
    print(f"\n==> {message}", flush=True)


def wait_trained_and_ready(cluster: KubeCluster, timeout: float) -> dict[str, Any]:
    """Wait until the current training spec's version is trained, promoted and served.

    Not a fixed version: run again over a store that kept its versions, the demo trains the
    next free number (docs/contracts.md, Version numbers).
    """

    def ready() -> dict[str, Any] | None:
        ms: dict[str, Any] = cluster.get("modelservice", NAME, "-n", NAMESPACE)
        status = ms.get("status") or {}
        model = (status.get("model") or {}).get("version")
        served = (status.get("serving") or {}).get("version")
        trained = (status.get("training") or {}).get("state") == "Succeeded"
        ok = status.get("phase") == "Ready" and trained and model is not None and served == model
        return ms if ok else None

    found: dict[str, Any] = wait_for(f"ModelService {NAME} trained and Ready", ready, timeout, 2)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--clean", action="store_true", help="remove the demo and exit")
    args = parser.parse_args()
    started = time.monotonic()
    subprocess.run(cli_argv("up"), env=cli_env(), check=True)
    cluster = KubeCluster(kubeconfig=CLUSTER_DIR / "kubeconfig", bin_dir=CLUSTER_DIR / "bin")
    if args.clean:
        cluster.kubectl("delete", "namespace", NAMESPACE, "--wait=true", check=False)
        rw.uninstall_operator(cluster, RELEASE, OPERATOR_NAMESPACE)
        rw.remove_store(NAMESPACE)
        return
    if rw.real_node_state(CLUSTER_DIR) is None:
        # Still show the control loop: the GPU sample on the simulated nodes, which says
        # plainly that its training result is scripted there.
        say(
            f"no real node ({rw.no_real_node_reason(CLUSTER_DIR)}): running the sample on the "
            "simulated nodes instead"
        )
        os.execve(
            sys.executable, [sys.executable, "-m", "localcluster.operator_process"], cli_env()
        )

    say("building the operator and serving images, loading them into the real node")
    operator_image, _ = rw.build_and_load_images(CLUSTER_DIR)

    say(f"installing the operator (Helm chart) into {OPERATOR_NAMESPACE}, watching {NAMESPACE}")
    cluster.kubectl("create", "namespace", NAMESPACE, check=False)
    rw.install_operator(cluster, RELEASE, OPERATOR_NAMESPACE, [NAMESPACE], operator_image)
    print(cluster.kubectl("get", "pods", "-n", OPERATOR_NAMESPACE, "-o", "wide"))

    say("applying the CPU variant of deploy/samples/modelservice-digits.yaml")
    rw.model_store(cluster, NAMESPACE)
    cluster.apply(rw.cpu_sample(NAME, "models"), namespace=NAMESPACE)
    ms = wait_trained_and_ready(cluster, timeout=900)
    model = ms["status"]["model"]
    if model["version"] != 1:
        # A second run over the kept store (make demo-clean keeps the volume's directory
        # until the PV goes): the store's versions are never overwritten.
        print(f"the model store already held versions up to {model['version'] - 1}")
    print(
        f"trained and promoted version {model['version']}: accuracy "
        f"{model['metrics']['accuracy']:.4f} (gate: >= {ms['spec']['qualityGate']['minimum']})"
    )
    print(cluster.kubectl("get", "pods,svc,hpa", "-n", NAMESPACE, "-o", "wide"))

    service = ms["status"]["serving"].get("url", "")
    url = rw.service_url(cluster, NAMESPACE, f"{NAME}-predictor")
    say(f"predicting held-out digits through the Service {url} (status url: {service})")
    x_test, y_test = rw.held_out_digits()
    rows = x_test[:10]
    v1 = np.asarray(rw.predict_v1(url, NAME, rows)["predictions"])
    meta = rw.get_json(url, f"/v2/models/{NAME}")
    input_name = meta["inputs"][0]["name"]
    out = rw.infer_v2(url, NAME, input_name, rows)["outputs"][0]
    v2 = np.asarray(out["data"]).reshape(out["shape"])
    print(" row | true digit | V1 predicted (score) | V2 predicted (score)")
    for i, truth in enumerate(y_test[:10]):
        a, b = int(v1[i].argmax()), int(v2[i].argmax())
        print(f" {i:3d} | {int(truth):10d} | {a:9d} ({v1[i][a]:.3f})  | {b:9d} ({v2[i][b]:.3f})")
    whole = rw.infer_v2(url, NAME, input_name, x_test)["outputs"][0]
    scores = np.asarray(whole["data"]).reshape(whole["shape"])
    right = int((scores.argmax(axis=1) == np.asarray(y_test)).sum())
    print(f"all {len(y_test)} held-out digits through the Service (V2): {right} right")

    say("kubectl get ms")
    print(cluster.kubectl("get", "ms", "-n", NAMESPACE))
    print(f"demo done in {time.monotonic() - started:.0f}s; remove it with: {__file__} --clean")


if __name__ == "__main__":
    main()
