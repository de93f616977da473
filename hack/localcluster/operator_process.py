"""The operator's demo: CRD, operator, the canonical sample, wait for Ready.

Usage (from the repository root, with the local cluster up)::

    PYTHONPATH=hack .venv/bin/python -m localcluster.operator_process \
        [--namespace demo] [--timeout 180]
        [--no-operator] [--stop]

It applies ``deploy/crd``, starts the operator (``python -m kopf run -m
modelservice_operator --namespace NS``) in the background unless ``--no-operator`` (one
already runs, e.g. from the chart), applies ``deploy/samples/modelservice-digits.yaml`` and
waits until the ModelService is Ready, printing ``kubectl get ms``. On simulated (kwok)
nodes, which run no code, the training result is scripted with the
``sim.modelservice.dev/*`` pod annotations of docs/contracts.md. The operator keeps running
(pid in ``.cluster/operator-demo.pid``, log in ``.cluster/logs/operator-demo.log``);
``--stop`` stops it. Exit status 0 when Ready, 1 otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
STATE = Path(os.environ.get("MSO_CLUSTER_DIR", REPO / ".cluster"))
CRD = REPO / "deploy" / "crd" / "modelservices.modelservice.dev.yaml"
SAMPLE = REPO / "deploy" / "samples" / "modelservice-digits.yaml"
PIDFILE = STATE / "operator-demo.pid"
SIM_RESULT = {
    "status": "Succeeded",
    "metrics": {"accuracy": 0.97, "loss": 0.09},
    "trainedAt": "2026-11-28T12:00:00Z",
}


def kubectl(*args: str, input: str | None = None, check: bool = True) -> str:
    """Run the cluster's kubectl."""
    env = {**os.environ, "KUBECONFIG": os.environ.get("KUBECONFIG", str(STATE / "kubeconfig"))}
    binary = STATE / "bin" / "kubectl"
    result = subprocess.run(
        [str(binary) if binary.exists() else "kubectl", *args],
        input=input,
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if check and result.returncode != 0:
        raise SystemExit(f"kubectl {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


def simulated() -> bool:
    """True when every node is a kwok node (pods run no code)."""
    nodes = json.loads(kubectl("get", "nodes", "-o", "json"))["items"]
    return bool(nodes) and all(
        (n["metadata"].get("annotations") or {}).get("kwok.x-k8s.io/node") == "fake" for n in nodes
    )


def stop() -> None:
    """Stop a demo operator started earlier."""
    if PIDFILE.exists():
        pid = int(PIDFILE.read_text())
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        PIDFILE.unlink()


def start_operator(namespace: str) -> None:
    """Start the operator in the background, watching ``namespace``."""
    stop()
    (STATE / "logs").mkdir(parents=True, exist_ok=True)
    log = (STATE / "logs" / "operator-demo.log").open("ab")
    env = {
        **os.environ,
        "KUBECONFIG": os.environ.get("KUBECONFIG", str(STATE / "kubeconfig")),
        "MSO_OPERATOR_RECONCILE_INTERVAL_S": "15",
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kopf",
            "run",
            "-m",
            "modelservice_operator",
            "--namespace",
            namespace,
            "--standalone",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=REPO,
        start_new_session=True,
    )
    PIDFILE.write_text(str(proc.pid))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--namespace", default="demo")
    parser.add_argument("--timeout", type=float, default=180)
    parser.add_argument("--no-operator", action="store_true")
    parser.add_argument("--stop", action="store_true")
    args = parser.parse_args()
    if args.stop:
        stop()
        return 0

    kubectl("apply", "-f", str(CRD))
    kubectl(
        "wait", "--for=condition=Established", "--timeout=60s", "crd/modelservices.modelservice.dev"
    )
    kubectl("create", "namespace", args.namespace, check=False)
    if not args.no_operator:
        start_operator(args.namespace)
    manifest: dict[str, Any] = yaml.safe_load(SAMPLE.read_text())
    if simulated():
        print(
            "[demo] every node is simulated (kwok): pods run no code, so the training "
            f"result is scripted ({json.dumps(SIM_RESULT['metrics'])}); scheduling, the "
            "Job, the gate, the Deployment, Service and HPA are real API objects",
            flush=True,
        )
        manifest["spec"]["training"]["podAnnotations"] = {
            "sim.modelservice.dev/duration": "3s",
            "sim.modelservice.dev/termination-message": json.dumps(SIM_RESULT),
        }
    kubectl("apply", "-n", args.namespace, "-f", "-", input=json.dumps(manifest))
    deadline = time.monotonic() + args.timeout
    phase = ""
    while time.monotonic() < deadline:
        ms = json.loads(kubectl("get", "ms", "digits", "-n", args.namespace, "-o", "json"))
        status = ms.get("status") or {}
        if status.get("phase", "") != phase:
            phase = status.get("phase", "")
            print(f"[demo] phase {phase or '-'}", flush=True)
        if phase == "Ready":
            print(kubectl("get", "ms", "-n", args.namespace))
            print("[demo] conditions:")
            print(
                kubectl(
                    "get",
                    "ms",
                    "digits",
                    "-n",
                    args.namespace,
                    "-o",
                    "jsonpath={range .status.conditions[*]}"
                    "{.type}{'\\t'}{.status}{'\\t'}{.reason}{'\\t'}{.message}{'\\n'}{end}",
                )
            )
            print(kubectl("get", "deploy,svc,hpa,job,pod", "-n", args.namespace, "-o", "wide"))
            return 0
        if phase == "Failed":
            break
        time.sleep(2)
    print(kubectl("get", "ms", "digits", "-n", args.namespace, "-o", "yaml"))
    return 1


if __name__ == "__main__":
    sys.exit(main())
