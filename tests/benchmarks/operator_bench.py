"""The operator at N ModelServices: `make bench-operator` writes tests/benchmarks/operator.md.

On the local cluster (simulated kwok nodes; extra ones so every predictor fits), for each N:

- **floor**: a plain client does what the operator must, at the same concurrency: per
  object create the ModelService, its store PVC and its training Job, patch its status once;
  the time until all N Jobs exist is the API floor;
- **operator**: the same N ModelServices are created at once (same client, same
  concurrency) with the operator running; time until all N Jobs exist (vs the floor) and
  until all N are Ready (simulated training of 1 s, tiny CPU serving);
- **steady state**: with all N Ready and idle, the API requests per second the operator
  sends (counted inside the operator process by operator_launch.py: kopf's and the
  reconciler's), its RSS and CPU seconds;
- **single apply -> Ready** p50/p99 of one ModelService at a time on an otherwise idle
  cluster.

``--label`` names the run (``baseline`` for main's operator, ``after`` for this branch);
``--operator-path`` is the folder holding the ``modelservice_operator`` package to run
(default: this checkout's). Results accumulate in operator-results.json; the Markdown
table is rewritten from all of them. The machine's load average is recorded with each run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "operator"))
# The local cluster's; kubernetes_asyncio reads the variable when it is imported.
os.environ["KUBECONFIG"] = str(REPO / ".cluster" / "kubeconfig")

from operator_timeline import Timeline, segments_summary  # noqa: E402

from modelservice_operator.builders.common import ModelVolume, Owner  # noqa: E402
from modelservice_operator.builders.job import build_job  # noqa: E402
from modelservice_operator.builders.pvc import build_pvc, store_claim  # noqa: E402
from modelservice_operator.cache import CHILD_KINDS  # noqa: E402
from modelservice_operator.kube import ApiError, Kube, connect  # noqa: E402
from modelservice_operator.models import ModelServiceSpec  # noqa: E402
from modelservice_operator.settings import OperatorSettings  # noqa: E402

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "operator-results.json"
REPORT = HERE / "operator.md"
CLUSTER = REPO / ".cluster"
CONCURRENCY = 10  # the operator's default max_concurrent_reconciles
TINY = {"requests": {"cpu": "10m", "memory": "16Mi"}}
SIM_TRAINING = {
    "sim.modelservice.dev/duration": "1s",
    "sim.modelservice.dev/termination-message": json.dumps(
        {
            "status": "Succeeded",
            "metrics": {"accuracy": 0.97, "loss": 0.1},
            "trainedAt": "2026-12-01T00:00:00Z",
        }
    ),
}
# What the operator watches: the ModelServices and every child kind (cache.CHILD_KINDS).
WATCHED_PLURALS = {"modelservices", *(selector[-1] for selector in CHILD_KINDS.values())}
EXTRA_NODES = 12  # x 1000 pods each: room for every training and predictor pod


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def kubectl(*args: str, input: str | None = None, check: bool = True) -> str:
    result = subprocess.run(
        [str(CLUSTER / "bin" / "kubectl"), "--kubeconfig", str(CLUSTER / "kubeconfig"), *args],
        input=input,
        capture_output=True,
        text=True,
        check=False,
    )
    if check and result.returncode != 0:
        raise RuntimeError(result.stderr)
    return result.stdout


def manifest(name: str, training: bool = True) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "serving": {"minReplicas": 1, "maxReplicas": 1, "resources": TINY},
    }
    if training:
        spec["training"] = {
            "dataset": "digits",
            "epochs": 1,
            "resources": TINY,
            "podAnnotations": SIM_TRAINING,
        }
        spec["qualityGate"] = {"metric": "accuracy", "minimum": 0.9}
    else:
        spec["model"] = {"uri": "https://models.example.com/digits.tar.gz"}
    return {
        "apiVersion": "modelservice.dev/v1alpha1",
        "kind": "ModelService",
        "metadata": {"name": name},
        "spec": spec,
    }


def add_nodes() -> None:
    items = []
    for index in range(EXTRA_NODES):
        name = f"bench-{index}"
        resources = {"cpu": "1000", "memory": "4Ti", "pods": "1000", "ephemeral-storage": "100Ti"}
        items.append(
            {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {
                    "name": name,
                    "labels": {
                        "kubernetes.io/hostname": name,
                        "kubernetes.io/os": "linux",
                        "kubernetes.io/arch": "amd64",
                        "type": "kwok",
                    },
                    "annotations": {"kwok.x-k8s.io/node": "fake"},
                },
                "spec": {"taints": []},
                "status": {"capacity": resources, "allocatable": resources},
            }
        )
    kubectl(
        "apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": items})
    )


def fresh_namespace(name: str) -> None:
    kubectl(
        "delete",
        "namespace",
        name,
        "--ignore-not-found",
        "--wait=true",
        "--timeout=600s",
        check=False,
    )
    kubectl("create", "namespace", name)
    deadline = time.monotonic() + 60
    while not kubectl("get", "serviceaccount", "default", "-n", name, check=False):
        if time.monotonic() > deadline:
            raise RuntimeError("no default ServiceAccount")
        time.sleep(0.5)


async def bounded(items: list[Any], work: Callable[[Any], Awaitable[None]], limit: int) -> None:
    queue: asyncio.Queue[Any] = asyncio.Queue()
    for item in items:
        queue.put_nowait(item)

    async def worker() -> None:
        while not queue.empty():
            await work(queue.get_nowait())

    await asyncio.gather(*(worker() for _ in range(limit)))


async def create_ms(kube: Kube, namespace: str, name: str, training: bool = True) -> dict[str, Any]:
    body = manifest(name, training)
    body["metadata"]["namespace"] = namespace
    obj, _ = await kube.create(body)
    return obj


async def count(kube: Kube, kind: str, namespace: str) -> int:
    return len(await kube.list_objects(kind, namespace))


async def wait_count(
    kube: Kube, kind: str, namespace: str, n: int, start: float, limit_s: float
) -> float:
    while True:
        if await count(kube, kind, namespace) >= n:
            return time.monotonic() - start
        if time.monotonic() - start > limit_s:
            raise TimeoutError(f"{kind} in {namespace}: fewer than {n} after {limit_s}s")
        await asyncio.sleep(0.5)


class NotReadyError(TimeoutError):
    """Not all N Ready within the limit: how many were."""

    def __init__(self, ready: int, n: int, limit_s: float, phases: dict[str, int]) -> None:
        super().__init__(f"{ready}/{n} Ready after {limit_s:.0f}s: {phases}")
        self.ready = ready


async def wait_ready(kube: Kube, namespace: str, n: int, start: float, limit_s: float) -> float:
    shown = time.monotonic()
    while True:
        items = await kube.list_objects("ModelService", namespace)
        phases: dict[str, int] = {}
        for i in items:
            phase = str((i.get("status") or {}).get("phase"))
            phases[phase] = phases.get(phase, 0) + 1
        ready = phases.get("Ready", 0)
        if ready >= n:
            return time.monotonic() - start
        if time.monotonic() - start > limit_s:
            raise NotReadyError(ready, n, limit_s, phases)
        if time.monotonic() - shown > 15:  # progress, to see where a slow run stands
            shown = time.monotonic()
            log(f"  {time.monotonic() - start:.0f}s: {phases}, load {os.getloadavg()[0]:.1f}")
        await asyncio.sleep(1.0)


async def floor(kube: Kube, n: int) -> float:
    """A plain client making the operator's writes: the API server's floor."""
    namespace = f"bench-floor-{n}"
    fresh_namespace(namespace)
    settings = OperatorSettings(default_image="modelservice-serving:bench")

    async def one(index: int) -> None:
        obj = await create_ms(kube, namespace, f"ms-{index}")
        meta = obj["metadata"]
        owner = Owner(meta["name"], namespace, meta["uid"])
        spec = ModelServiceSpec.model_validate(obj["spec"])
        pvc = build_pvc(owner, spec.storage)
        if pvc is not None:
            await kube.create(pvc)
        assert spec.training is not None
        claim = store_claim(owner, spec.storage)
        await kube.create(build_job(owner, spec.training, 1, ModelVolume(claim, False), settings))
        await kube.patch_status(namespace, meta["name"], {"phase": "Training"})

    start = time.monotonic()
    await bounded(list(range(n)), one, CONCURRENCY)
    elapsed = time.monotonic() - start
    gone_quietly(namespace)
    return elapsed


def gone_quietly(namespace: str) -> None:
    """Delete ``namespace`` and wait until garbage collection has removed it all.

    The next measurement must not share the control plane with the deletion of this one's
    N ModelServices, claims, Jobs and pods (at N = 1,000 several thousand objects): the
    operator's run used to overlap with the floor's clean-up, the floor's with nothing.
    """
    started = time.monotonic()
    kubectl("delete", "namespace", namespace, "--wait=true", "--timeout=900s", check=False)
    log(f"  namespace {namespace} gone after {time.monotonic() - started:.0f}s")


class Operator:
    """The operator process under measurement (through operator_launch.py)."""

    def __init__(self, namespace: str, operator_path: Path, workdir: Path) -> None:
        self.counts = workdir / f"counts-{namespace}.json"
        self.log = workdir / f"operator-{namespace}.log"
        env = {
            **os.environ,
            "KUBECONFIG": str(CLUSTER / "kubeconfig"),
            "PYTHONPATH": str(operator_path),
            "MSO_BENCH_COUNTS": str(self.counts),
            "MSO_OPERATOR_DEFAULT_IMAGE": "modelservice-serving:bench",
            "PYTHONUNBUFFERED": "1",
        }
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "operator_launch.py"), "run", "-m", "modelservice_operator",
             "--namespace", namespace, "--standalone"],
            env=env,
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
            cwd=workdir,
        )  # fmt: skip

    async def started(self, limit_s: float = 120) -> None:
        """Wait until the operator watches every kind (Python and kopf start slowly on a
        loaded host, and kopf runs no handler before every index holds its listing)."""
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            counts = self.requests(tries=1).get("counts", {})
            watched = {key.split()[1] for key in counts if key.endswith(" watch")}
            if watched >= WATCHED_PLURALS:
                await asyncio.sleep(1)  # the initial listings are in
                return
            await asyncio.sleep(0.25)
        raise TimeoutError("the operator did not start watching")

    def requests(self, tries: int = 20) -> dict[str, Any]:
        for _ in range(tries):
            try:
                data: dict[str, Any] = json.loads(self.counts.read_text())
                return data
            except (OSError, ValueError):
                time.sleep(0.25)
        return {"total": 0, "counts": {}}

    def usage(self) -> dict[str, float]:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        stat = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return {
            "rss_mib": int(fields["VmRSS"].split()[0]) / 1024,
            "peak_rss_mib": int(fields["VmHWM"].split()[0]) / 1024,
            "cpu_s": (int(stat[11]) + int(stat[12])) / ticks,
        }

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def rate(
    before: dict[str, Any], after: dict[str, Any], seconds: float
) -> tuple[float, dict[str, float]]:
    by_key = {
        key: (value - before["counts"].get(key, 0)) / seconds
        for key, value in after["counts"].items()
        if value - before["counts"].get(key, 0)
    }
    return (after["total"] - before["total"]) / seconds, by_key


async def at_scale(
    kube: Kube, n: int, operator_path: Path, workdir: Path, steady_s: float, ready_limit_s: float
) -> dict[str, Any]:
    result: dict[str, Any] = {"n": n, "load_before": os.getloadavg()}
    log(f"N={n}: floor")
    result["floor_jobs_s"] = await floor(kube, n)
    log(f"N={n}: floor {result['floor_jobs_s']:.1f}s")
    namespace = f"bench-op-{n}"
    fresh_namespace(namespace)
    operator = Operator(namespace, operator_path, workdir)
    try:
        await operator.started()
        at_start = operator.requests()
        start = time.monotonic()
        creating = asyncio.create_task(
            bounded(list(range(n)), lambda i: create_ms(kube, namespace, f"ms-{i}"), CONCURRENCY)
        )
        result["jobs_s"] = await wait_count(kube, "Job", namespace, n, start, 60 + n * 2)
        await creating
        # What the operator did until the last Job existed, and how long due reconciles
        # waited for a worker (saturated workers, or a saturated API server?).
        at_jobs = operator.requests()
        result["jobs_requests"] = rate(at_start, at_jobs, 1.0)[1]
        before, after = (snap.get("queue") or {} for snap in (at_start, at_jobs))

        def grew(key: str) -> float:
            return float(after.get(key, 0.0)) - float(before.get(key, 0.0))

        if grew("wait_count"):
            result["jobs_reconciles"] = grew("wait_count")
            result["jobs_mean_queue_wait_s"] = grew("wait_sum") / grew("wait_count")
        if grew("reconcile_count"):
            result["jobs_mean_reconcile_s"] = grew("reconcile_sum") / grew("reconcile_count")
        log(f"N={n}: all Jobs after {result['jobs_s']:.1f}s")
        top = sorted(result["jobs_requests"].items(), key=lambda kv: -kv[1])[:8]
        log(
            f"N={n}: until then {result.get('jobs_reconciles', 0):.0f} reconciles waited "
            f"{result.get('jobs_mean_queue_wait_s', 0.0):.3f}s each on average and took "
            f"{result.get('jobs_mean_reconcile_s', 0.0):.3f}s; requests: "
            + ", ".join(f"{key} {value:.0f}" for key, value in top)
        )
        try:
            result["ready_s"] = await wait_ready(
                kube, namespace, n, start, min(120 + n * 3, ready_limit_s)
            )
            log(f"N={n}: all Ready after {result['ready_s']:.1f}s")
        except NotReadyError as exc:
            # Measured anyway: the steady state below is then not all idle (see the notes).
            result["ready_s"], result["ready_count"] = None, exc.ready
            result["ready_limit_s"] = min(120 + n * 3, ready_limit_s)
            log(f"N={n}: {exc}")
        result["usage_busy"] = operator.usage()
        await asyncio.sleep(20)  # settle: last events, the resync after Ready
        before, cpu_before = operator.requests(), operator.usage()["cpu_s"]
        began = time.monotonic()
        await asyncio.sleep(steady_s)
        after, usage = operator.requests(), operator.usage()
        seconds = time.monotonic() - began
        result["steady_req_s"], result["steady_by_key"] = rate(before, after, seconds)
        result["steady_cpu_s_per_s"] = (usage["cpu_s"] - cpu_before) / seconds
        result["usage"] = usage
        result["requests_total"] = after["total"]
        result["load_after"] = os.getloadavg()
        log(f"N={n}: steady {result['steady_req_s']:.2f} req/s, RSS {usage['rss_mib']:.0f} MiB")
    finally:
        operator.stop()
        gone_quietly(namespace)
    return result


async def single(kube: Kube, operator_path: Path, workdir: Path, count_: int) -> dict[str, Any]:
    """apply -> Ready of one ModelService at a time on an otherwise idle cluster."""
    namespace = "bench-single"
    fresh_namespace(namespace)
    operator = Operator(namespace, operator_path, workdir)
    timeline = Timeline(kube, namespace)
    result: dict[str, Any] = {"load_before": os.getloadavg()}
    try:
        await operator.started()
        await timeline.start()
        for training, key in ((False, "uri"), (True, "trained")):
            latencies = []
            for index in range(count_):
                name = f"{key}-{index}"
                start = time.monotonic()
                timeline.applied(name, start)
                await create_ms(kube, namespace, name, training)
                while True:
                    obj = await kube.get("ModelService", namespace, name)
                    if obj and (obj.get("status") or {}).get("phase") == "Ready":
                        break
                    if time.monotonic() - start > 120:
                        raise TimeoutError(f"{name} not Ready")
                    await asyncio.sleep(0.02)
                latencies.append(time.monotonic() - start)
            result[key] = {
                "p50_s": statistics.median(latencies),
                "p99_s": statistics.quantiles(latencies, n=100, method="inclusive")[98],
                "count": len(latencies),
            }
            log(f"single {key}: p50 {result[key]['p50_s']:.2f}s p99 {result[key]['p99_s']:.2f}s")
            await asyncio.sleep(1)  # the last watch events
            seen = {n: m for n, m in timeline.seen.items() if n.startswith(f"{key}-")}
            result[key]["segments"] = segments_summary(seen)
            for seg in result[key]["segments"]:
                log(
                    f"  {key} {seg['from']} -> {seg['to']} ({seg['who']}): "
                    f"p50 {seg['p50_s']:.2f}s max {seg['max_s']:.2f}s"
                )
        result["load_after"] = os.getloadavg()
    finally:
        await timeline.stop()
        operator.stop()
        gone_quietly(namespace)
    return result


def git_rev(path: Path) -> str:
    out = subprocess.run(
        ["git", "-C", str(path), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    )
    return out.stdout.strip() or "?"


def ready_cell(row: dict[str, Any]) -> str:
    """All Ready time, or how many were Ready when the limit ran out."""
    if row.get("ready_s") is not None:
        return f"{row['ready_s']:.1f}"
    return f"{row.get('ready_count', 0)}/{row['n']} at {row.get('ready_limit_s', 0):.0f}"


def verdicts(results: dict[str, Any]) -> list[str]:
    """Each target against the largest N of the last run: met, or missed by how much."""
    label, run = list(results.items())[-1]
    rows = run.get("scale") or []
    if not rows and not run.get("single"):
        return []
    out = ["", f"Targets, {label} ({run['commit']}):", ""]

    def verdict(name: str, value: float, target: float, unit: str, at: str) -> None:
        state = "met" if value < target else f"missed by {value - target:.2f}{unit}"
        out.append(f"- {name} {at}: {value:.2f}{unit} (target < {target:g}{unit}): {state}")

    if rows:
        row = max(rows, key=lambda r: r["n"])
        at = f"at N={row['n']}"
        verdict("Jobs vs floor", row["jobs_s"] / row["floor_jobs_s"], 1.5, "x", at)
        if row.get("ready_s") is None:
            # Not all Ready: the "steady state" was ModelServices still moving, not idle.
            at += f", {ready_cell(row)} s Ready, not idle: not the target's measurement"
        verdict("steady state", row["steady_req_s"], 2.0, " req/s", at)
        verdict("RSS", row.get("usage", {}).get("rss_mib", 0.0), 300.0, " MiB", at)
    single_ = run.get("single") or {}
    if "uri" in single_:
        verdict("apply -> Ready p50", single_["uri"]["p50_s"], 1.0, " s", "(model URI)")
    if "trained" in single_:
        # A 1 s simulated training cannot be Ready in 1 s: its floor is the cluster's share.
        trained = single_["trained"]
        shares = {"operator": 0.0, "cluster": 0.0}
        for seg in trained.get("segments", []):
            if not (seg["from"] == "applied" and seg["to"] == "deployment"):
                shares[seg["who"]] += seg["p50_s"]
        out.append(
            f"- apply -> Ready p50 (1 s training): {trained['p50_s']:.2f} s, of which the "
            f"cluster (controllers, kwok, the simulated training) {shares['cluster']:.2f} s "
            f"and the operator {shares['operator']:.2f} s (sum of segment medians)"
        )
    return out


def render(results: dict[str, Any]) -> str:
    lines = [
        "# Operator at scale (`make bench-operator`)",
        "",
        "Generated by `tests/benchmarks/operator_bench.py` from `operator-results.json`; do not",
        "edit by hand. Local cluster on simulated kwok nodes (12 extra nodes of 1,000 pods), one",
        "operator process watching one namespace, simulated training of 1 s, tiny CPU serving.",
        f"Client and floor concurrency: {CONCURRENCY}. Requests are counted inside the operator",
        "process (kopf's and the reconciler's, `operator_launch.py`). The machine is shared and",
        "has 2 cores: the 1-minute load average is shown beside each row.",
        "",
        "Targets at N = 1,000: Jobs within 1.5x the floor; steady state < 2 req/s;",
        "RSS < 300 MiB; single apply -> Ready p50 < 1 s.",
        "",
        "| run | N | floor: N Jobs (s) | operator: N Jobs (s) | x floor | all Ready (s) "
        "| steady req/s | RSS MiB (peak) | CPU s | load 1m |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for label, run in results.items():
        for row in run.get("scale", []):
            usage = row.get("usage", {})
            lines.append(
                f"| {label} ({run['commit']}) | {row['n']} | {row['floor_jobs_s']:.1f} "
                f"| {row['jobs_s']:.1f} | {row['jobs_s'] / row['floor_jobs_s']:.2f} "
                f"| {ready_cell(row)} | {row['steady_req_s']:.2f} "
                f"| {usage.get('rss_mib', 0):.0f} ({usage.get('peak_rss_mib', 0):.0f}) "
                f"| {usage.get('cpu_s', 0):.0f} | {row['load_before'][0]:.1f} |"
            )
    lines += [
        "",
        "Single ModelService apply -> Ready, one at a time on an idle cluster",
        "(`uri`: serving an https model URI, no training; `trained`: 1 s simulated training):",
        "",
        "| run | kind | count | p50 (s) | p99 (s) | load 1m |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for label, run in results.items():
        single_ = run.get("single") or {}
        for key in ("uri", "trained"):
            if key in single_:
                s = single_[key]
                lines.append(
                    f"| {label} ({run['commit']}) | {key} | {s['count']} | {s['p50_s']:.2f} "
                    f"| {s['p99_s']:.2f} | {single_['load_before'][0]:.1f} |"
                )
    segments = [
        (label, run, key, seg)
        for label, run in results.items()
        for key in ("uri", "trained")
        for seg in ((run.get("single") or {}).get(key) or {}).get("segments", [])
    ]
    if segments:
        lines += [
            "",
            "Where the single apply -> Ready time goes: milestones seen by the benchmark's own",
            "watches (`operator_timeline.py`); `operator` is the time the operator takes to act,",
            "`cluster` is the control plane's, kwok's and the simulated training's (the floor):",
            "",
            "| run | kind | from -> to | who | what | p50 (s) | max (s) |",
            "| --- | --- | --- | --- | --- | ---: | ---: |",
        ]
        for label, run, key, seg in segments:
            lines.append(
                f"| {label} ({run['commit']}) | {key} | {seg['from']} -> {seg['to']} "
                f"| {seg['who']} | {seg['what']} | {seg['p50_s']:.2f} | {seg['max_s']:.2f} |"
            )
    lines += verdicts(results)
    lines += ["", "Steady-state requests per second by method and resource:", ""]
    for label, run in results.items():
        for row in run.get("scale", []):
            top = sorted(row.get("steady_by_key", {}).items(), key=lambda kv: -kv[1])[:8]
            text = ", ".join(f"`{k}` {v:.2f}" for k, v in top) or "none"
            lines.append(f"- {label}, N={row['n']}: {text}")
    notes = [r.get("notes") for r in results.values() if r.get("notes")]
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


async def main_async(args: argparse.Namespace) -> None:
    workdir = Path(args.workdir)
    os.environ["KUBECONFIG"] = str(CLUSTER / "kubeconfig")
    kubectl("apply", "-f", str(REPO / "deploy" / "crd" / "modelservices.modelservice.dev.yaml"))
    kubectl("wait", "--for=condition=Established", "crd/modelservices.modelservice.dev")
    add_nodes()
    kube = await connect()
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    run: dict[str, Any] = {
        "commit": args.commit or git_rev(Path(args.operator_path).parent),
        "scale": [],
        "notes": args.notes,
    }
    try:
        if not args.skip_single:
            run["single"] = await single(kube, Path(args.operator_path), workdir, args.single)
        for n in args.sizes:
            try:
                run["scale"].append(
                    await at_scale(
                        kube, n, Path(args.operator_path), workdir, args.steady, args.ready_limit
                    )
                )
            except (TimeoutError, ApiError) as exc:
                log(f"N={n} failed: {exc}")
                run["notes"] = (run.get("notes") or "") + f" N={n} did not finish: {exc}."
                break
            results[args.label] = run
            RESULTS.write_text(json.dumps(results, indent=1))
            REPORT.write_text(render(results))
    finally:
        await kube.close()
    results[args.label] = run
    RESULTS.write_text(json.dumps(results, indent=1))
    REPORT.write_text(render(results))
    print(render(results))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label", default="after")
    parser.add_argument("--operator-path", default=str(REPO / "operator"))
    parser.add_argument("--commit", default="")
    parser.add_argument(
        "--sizes", type=lambda s: [int(x) for x in s.split(",") if x], default=[100, 300, 1000]
    )
    parser.add_argument("--steady", type=float, default=60.0, help="seconds of steady state")
    parser.add_argument(
        "--ready-limit", type=float, default=1e9, help="longest wait for all Ready (s)"
    )
    parser.add_argument("--single", type=int, default=15, help="single applies per kind")
    parser.add_argument("--skip-single", action="store_true")
    parser.add_argument("--notes", default="")
    parser.add_argument("--workdir", default="/tmp/mso-bench-operator")
    args = parser.parse_args()
    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
