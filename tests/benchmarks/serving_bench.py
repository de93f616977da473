"""Serving benchmark: this server (HTTP V1, V2 and gRPC) against every peer on the digits model.

Peers: Triton (PyTriton, dynamic batching), KServe, MLServer, Ray Serve and BentoML, each with
batching where it has it; floors: a bare ASGI app (uvicorn + httptools + uvloop + orjson,
answering a constant) and a FastAPI parse-only endpoint. Every server gets one core
(``taskset``); the load generator runs on another: ``wrk`` (1 thread, 32 connections) for
HTTP, ``h2load`` (nghttp2's HTTP/2 load generator, in C: 32 calls in flight on 4
connections, the gRPC-framed request as its body, after one real gRPC call per server checked
the answer) for unary gRPC, ``grpc_load.py`` (grpcio's client, 32 requests in flight on 4
streams) for ModelStreamInfer. One instance per request, loopback only. Each server is
started (cold start = process start to ready, polled every 50 ms), warmed up, measured,
stopped. The table and the targets are
printed and written to ``tests/benchmarks/serving.md``.

Peers pin conflicting dependencies, so each lives in its own venv under
``~/.cache/modelservice-operator/bench/`` (``install_peers.sh``); a missing one is skipped
and reported.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from grpc_load import grpc_message  # noqa: E402  # beside this file, not a package

REPO = HERE.parents[1]
CACHE = Path(
    os.environ.get("MSO_BENCH_CACHE", Path.home() / ".cache" / "modelservice-operator" / "bench")
)
MODEL_NAME = "digits"
# One digits row (an 8x8 image, 0..16), as a client sends it.
ROW = [0, 0, 5, 13, 9, 1, 0, 0, 0, 0, 13, 15, 10, 15, 5, 0, 0, 3, 15, 2, 0, 11, 8, 0, 0, 4, 12,
       0, 0, 8, 8, 0, 0, 5, 8, 0, 0, 9, 8, 0, 0, 4, 11, 0, 1, 12, 7, 0, 0, 2, 14, 5, 10, 12, 0,
       0, 0, 0, 6, 13, 10, 0, 0, 0]  # fmt: skip
V1_BODY = json.dumps({"instances": [ROW]})
V2_BODY = json.dumps(
    {"inputs": [{"name": "inputs", "shape": [1, 64], "datatype": "FP32", "data": ROW}]}
)
READY_PATHS = ("/v2/health/ready", "/v2/models/digits/ready", "/v1/models/digits")


@dataclass(frozen=True)
class Target:
    name: str
    role: str  # ours | peer | floor
    command: list[str]
    path: str  # the HTTP path loaded, or "grpc" for ModelInfer on {grpc_port}
    body: str
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    ready_paths: tuple[str, ...] = READY_PATHS
    start_timeout_s: float = 300  # process start to ready, at most


@dataclass(frozen=True)
class Result:
    name: str
    role: str
    path: str
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int
    cpu_us_per_request: float = 0.0
    cold_start_s: float = 0.0
    cold_start_cpu_s: float = 0.0  # CPU the server's processes used until ready


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def ensure_model(model_dir: Path) -> Path:
    if (model_dir / "saved_model.pb").is_file():
        return model_dir
    subprocess.run(
        [sys.executable, "-m", "modelservice_serving", "train", "--epochs", "10", "--seed", "1",
         "--output", str(model_dir), "--termination-log", str(model_dir.parent / "term.json")],
        check=True,
    )  # fmt: skip
    return model_dir


def wait_ready(
    port: int, process: subprocess.Popen[bytes], paths: tuple[str, ...], timeout: float = 300
) -> None:
    """Until one of ``paths`` answers 200 (not ``"ready": false``); ``tcp:PORT``: accepts."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        for path in paths:
            if path.startswith("tcp:"):
                with (
                    contextlib.suppress(OSError),
                    socket.create_connection(("127.0.0.1", int(path[4:])), timeout=1),
                ):
                    return
                continue
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
                    if r.status == 200 and b'"ready":false' not in r.read().replace(b" ", b""):
                        return
            except OSError:
                pass
        time.sleep(0.05)
    raise RuntimeError("server never became ready")


def _process_table() -> dict[int, tuple[int, int, int]]:
    """pid: (parent, session, user+system ticks) of every live process."""
    table: dict[int, tuple[int, int, int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        table[int(stat.parent.name)] = (
            int(fields[1]),
            int(fields[3]),
            int(fields[11]) + int(fields[12]),
        )
    return table


def server_tree(root: int) -> dict[int, int]:
    """The server's live processes and their CPU ticks: its session and every descendant
    (BentoML's worker and Ray's daemons start sessions of their own)."""
    table = _process_table()
    tree: dict[int, int] = {}
    for pid, (_, session, ticks) in table.items():
        ancestor, hops = pid, 0
        while ancestor not in (0, 1, root) and ancestor in table and hops < 64:
            ancestor, hops = table[ancestor][0], hops + 1
        if session == root or ancestor == root:
            tree[pid] = ticks
    return tree


def tree_cpu_seconds(root: int) -> float:
    """User+system CPU seconds of the server's live processes."""
    return sum(server_tree(root).values()) / os.sysconf("SC_CLK_TCK")


@contextmanager
def serving(
    target: Target, port: int, grpc_port: int, cpu: str, log: Path
) -> Iterator[tuple[int, float, float]]:
    """Starts the server pinned to ``cpu``; yields its pid (= session id), its cold start
    (s, wall) and the CPU its processes used until ready (s: steadier on a busy machine)."""
    ports = {"{port}": str(port), "{grpc_port}": str(grpc_port)}
    command = ["taskset", "-c", cpu]
    for part in target.command:
        for placeholder, value in ports.items():
            part = part.replace(placeholder, value)
        command.append(part)
    ready_paths = tuple(path.replace("{grpc_port}", str(grpc_port)) for path in target.ready_paths)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "OMP_NUM_THREADS": "1", **target.env}
    with log.open("wb") as out:
        started = time.perf_counter()
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=target.cwd,
            start_new_session=True,
        )  # fmt: skip
        try:
            wait_ready(port, process, ready_paths, target.start_timeout_s)
            yield process.pid, time.perf_counter() - started, tree_cpu_seconds(process.pid)
        finally:
            leftovers = server_tree(process.pid)
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
            for pid in leftovers:  # what outlived the server (other sessions, daemons)
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)


def wrk(url: str, body: str, seconds: float, connections: int, cpu: str, workdir: Path) -> Result:
    script = workdir / "post.lua"
    script.write_text(
        'wrk.method = "POST"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        f"wrk.body = {json.dumps(body)}\n"
    )
    duration = f"-d{max(1, round(seconds))}s"  # wrk takes whole seconds
    completed = subprocess.run(
        ["taskset", "-c", cpu, "wrk", "-t1", f"-c{connections}", duration, "--latency",
         "--timeout", "10s", "-s", str(script), url],
        capture_output=True, text=True, check=True, timeout=seconds + 60,
    )  # fmt: skip
    return parse_wrk(completed.stdout)


def grpc_load(
    grpc_port: int, seconds: float, connections: int, cpu: str, stream: bool = False
) -> Result:
    completed = subprocess.run(
        ["taskset", "-c", cpu, sys.executable, str(HERE / "grpc_load.py"),
         f"127.0.0.1:{grpc_port}", MODEL_NAME, str(seconds), "--connections", str(connections),
         *(["--stream"] if stream else [])],
        capture_output=True, text=True, check=True, timeout=seconds + 60,
    )  # fmt: skip
    out = json.loads(completed.stdout.strip().splitlines()[-1])
    return Result(
        "", "", "", out["rps"], out["p50_ms"], out["p99_ms"], out["errors"], out["requests"]
    )


def h2load_grpc(
    grpc_port: int, seconds: float, connections: int, cpu: str, workdir: Path
) -> Result:
    """Unary ModelInfer calls as HTTP/2 requests: grpcio's Python client costs more CPU per
    call than our server does, so ``grpc_load.py`` would measure itself. h2load reads HTTP
    statuses only: the gRPC status of the same request is checked first, with grpcio."""
    check = grpc_load(grpc_port, 0.5, 1, cpu)
    if check.errors or not check.requests:
        raise RuntimeError(f"ModelInfer answered {check.errors} errors in the gRPC check")
    body = workdir / "infer.grpc"
    body.write_bytes(grpc_message(MODEL_NAME))
    log = workdir / "h2load.log"
    channels = 4
    completed = subprocess.run(
        ["taskset", "-c", cpu, "h2load", f"-c{channels}", f"-m{max(1, connections // channels)}",
         f"-D{max(1, round(seconds))}", "-d", str(body), "-H", "content-type: application/grpc",
         "-H", "te: trailers", f"--log-file={log}",
         f"http://127.0.0.1:{grpc_port}/inference.GRPCInferenceService/ModelInfer"],
        capture_output=True, text=True, check=True, timeout=seconds + 60,
    )  # fmt: skip
    return parse_h2load(completed.stdout, log.read_text())


def parse_h2load(text: str, log: str) -> Result:
    """h2load's summary and its per-request log (start, status, microseconds)."""
    rps = float(re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", text).group(1))  # type: ignore[union-attr]
    counts = re.search(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded", text)
    assert counts is not None, text
    done, succeeded = int(counts.group(2)), int(counts.group(3))
    statuses = re.search(r"status codes: (\d+) 2xx", text)
    ok = int(statuses.group(1)) if statuses else 0
    latencies = sorted(
        int(line.split()[2]) / 1000 for line in log.splitlines() if line.count("\t") >= 2
    )
    p50 = latencies[len(latencies) // 2] if latencies else 0.0
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] if latencies else 0.0
    return Result("", "", "", rps, p50, p99, done - min(succeeded, ok), done)


def _ms(value: str, unit: str) -> float:
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def parse_wrk(text: str) -> Result:
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))  # type: ignore[union-attr]
    percentiles = {
        int(p): _ms(v, u)
        for p, v, u in re.findall(r"^\s+(\d+)%\s+([\d.]+)(us|ms|s|m)\b", text, re.M)
    }
    requests = int(re.search(r"(\d+) requests in", text).group(1))  # type: ignore[union-attr]
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text
    )
    errors = int(non_2xx.group(1)) if non_2xx else 0
    if socket_errors:
        errors += sum(int(group) for group in socket_errors.groups())
    return Result(
        "", "", "", rps, percentiles.get(50, 0.0), percentiles.get(99, 0.0), errors, requests
    )


def _venv(args: argparse.Namespace, peer: str) -> Path | None:
    python = Path(args.peers) / peer / "bin" / "python"
    return python if python.exists() else None


def _libdir(python: Path) -> str:
    probe = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_config_var('LIBDIR'))"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return probe.stdout.strip()


def targets(model_dir: Path, args: argparse.Namespace, workdir: Path) -> list[Target]:
    serve = [sys.executable, "-m", "modelservice_serving", "serve", "--model-dir", str(model_dir),
             "--model-name", MODEL_NAME, "--host", "127.0.0.1", "--port", "{port}",
             "--grpc-port", "{grpc_port}", "--log-level", "warning"]  # fmt: skip
    found = [
        Target("modelservice-serving (V1)", "ours", serve, f"/v1/models/{MODEL_NAME}:predict",
               V1_BODY),
        Target("modelservice-serving (V2)", "ours", serve, f"/v2/models/{MODEL_NAME}/infer",
               V2_BODY),
        # Like for like with the peers: the same server on the SavedModel with TensorFlow.
        Target("modelservice-serving (V1, TensorFlow runtime)", "ours",
               [*serve, "--model-runtime", "tensorflow"], f"/v1/models/{MODEL_NAME}:predict",
               V1_BODY),
        Target("modelservice-serving (gRPC)", "ours", serve, "grpc", ""),
        Target("modelservice-serving (gRPC, grpcio server)", "ours",
               [*serve, "--grpc-server", "grpcio"], "grpc", ""),
        Target("modelservice-serving (gRPC stream)", "ours", serve, "grpc-stream", ""),
        Target("floor: bare ASGI + orjson", "floor",
               [sys.executable, str(HERE / "bare_floor.py"), "{port}"],
               f"/v1/models/{MODEL_NAME}:predict", V1_BODY),
        Target("floor: FastAPI JSON parse only", "floor",
               [sys.executable, str(HERE / "floor_app.py"), "{port}"],
               f"/v1/models/{MODEL_NAME}:predict", V1_BODY),
        Target("floor: bare grpc.aio, constant answer", "floor",
               [sys.executable, str(HERE / "grpc_floor.py"), "{grpc_port}"], "grpc", "",
               ready_paths=("tcp:{grpc_port}",)),
    ]  # fmt: skip
    if python := _venv(args, "triton"):
        found.append(
            Target(
                "Triton (PyTriton 0.7, dynamic batching) (V2)", "peer",
                [str(python), str(HERE / "triton_server.py"), str(model_dir), "{port}"],
                f"/v2/models/{MODEL_NAME}/infer", V2_BODY,
                {"LD_LIBRARY_PATH": ":".join(
                    [_libdir(python), *filter(None, [os.environ.get("LD_LIBRARY_PATH")])]
                )},
                ready_paths=(f"/v2/models/{MODEL_NAME}/ready",),
            )
        )  # fmt: skip
    if python := _venv(args, "kserve"):
        found.append(
            Target(
                "KServe 0.21 ModelServer (V1)", "peer",
                [str(python), str(HERE / "kserve_server.py"), str(model_dir), "{port}"],
                f"/v1/models/{MODEL_NAME}:predict", V1_BODY,
            )
        )  # fmt: skip
    if python := _venv(args, "mlserver"):
        repository = workdir / "mlserver"
        shutil.copytree(HERE / "mlserver", repository, dirs_exist_ok=True)
        found.append(
            Target(
                "MLServer 1.7 adaptive batching (V2)", "peer",
                [str(python.parent / "mlserver"), "start", str(repository)],
                f"/v2/models/{MODEL_NAME}/infer", V2_BODY, {}, repository,
            )
        )  # fmt: skip
    if python := _venv(args, "ray"):
        found.append(
            Target(
                "Ray Serve 2.60 @serve.batch (V1 body)", "peer",
                [str(python), str(HERE / "ray_server.py"), str(model_dir), "{port}"],
                f"/v1/models/{MODEL_NAME}:predict", V1_BODY, ready_paths=("/",),
                # A head node, its proxy and the replica, on one shared core: slow to start.
                start_timeout_s=900,
            )
        )  # fmt: skip
    if python := _venv(args, "bentoml"):
        found.append(
            Target(
                "BentoML 1.4 adaptive batching (V1 body)", "peer",
                [str(python.parent / "bentoml"), "serve", "service:Digits", "--host",
                 "127.0.0.1", "--port", "{port}"],
                "/predict", V1_BODY, {"MSO_BENCH_MODEL_DIR": str(model_dir)},
                HERE / "bentoml", ready_paths=("/readyz",),
            )
        )  # fmt: skip
    return found


# Sections other benchmarks write into the same file (fairness_bench.py), kept across reruns.
KEPT_SECTIONS = (("<!-- fairness:begin -->", "<!-- fairness:end -->"),)


def kept_sections(previous: str) -> str:
    """The other benchmarks' sections of ``previous``, to append after a new report."""
    kept = []
    for begin, end in KEPT_SECTIONS:
        if begin in previous and end in previous:
            kept.append(previous[previous.index(begin) : previous.index(end) + len(end)])
    return "".join(f"\n{section}\n" for section in kept)


def write_mlserver_settings(repository: Path, port: int, model_dir: Path) -> None:
    (repository / "settings.json").write_text(json.dumps({
        "http_port": port, "grpc_port": free_port(), "metrics_port": free_port(),
        "parallel_workers": 0, "debug": False, "host": "127.0.0.1",
    }))  # fmt: skip
    (repository / "model-settings.json").write_text(json.dumps({
        "name": MODEL_NAME, "implementation": "runtime.SavedModelRuntime",
        "parameters": {"uri": str(model_dir)},
        "max_batch_size": 32, "max_batch_time": 0.005,
    }))  # fmt: skip


def _row(results: list[Result], prefix: str) -> Result | None:
    return next((r for r in results if r.name.startswith(prefix)), None)


def table(results: list[Result]) -> str:
    peers = [r for r in results if r.role == "peer"]
    best = max(peers, key=lambda r: r.rps, default=None)
    floor = _row(results, "floor: bare ASGI")
    lines = [
        "| server | endpoint | req/s | p50 ms | p99 ms | errors | server CPU µs/req "
        "| cold start s (CPU s) | x best peer req/s | / bare floor req/s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        vs_best = f"{r.rps / best.rps:.2f}" if best and best.rps else "n/a"
        vs_floor = f"{r.rps / floor.rps:.2f}" if floor and floor.rps else "n/a"
        endpoint = {"grpc": "gRPC ModelInfer", "grpc-stream": "gRPC ModelStreamInfer"}.get(
            r.path, f"`{r.path}`"
        )
        lines.append(
            f"| {r.name} | {endpoint} | {r.rps:,.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | "
            f"{r.errors} | {r.cpu_us_per_request:,.0f} | {r.cold_start_s:.2f} "
            f"({r.cold_start_cpu_s:.2f}) | {vs_best} | "
            f"{vs_floor} |"
        )
    return "\n".join(lines)


def verdicts(results: list[Result], paired: dict[str, list[float]] | None = None) -> list[str]:
    """Each target of issue 11 with the measured ratio: met or missed, and by how much. The
    ratio targets use the median of their paired runs when there are some."""
    paired = paired or {}

    def ratio(row: Result, base: Result) -> tuple[float, str]:
        runs = paired.get(row.name)
        single = f"{row.rps:,.0f} vs {base.rps:,.0f} in the table"
        if not runs:
            return row.rps / base.rps, single
        shown = ", ".join(f"{value:.2f}" for value in runs)
        return statistics.median(runs), f"median of {len(runs)} paired runs ({shown}); {single}"

    peers = [r for r in results if r.role == "peer"]
    best = max(peers, key=lambda r: r.rps, default=None)
    named = {r.name: r for r in results}
    v1, v2, grpc_row, stream_row = (
        named.get(f"modelservice-serving ({p})") for p in ("V1", "V2", "gRPC", "gRPC stream")
    )
    floor = _row(results, "floor: bare ASGI")
    ours = max((r for r in (v1, v2) if r), key=lambda r: r.rps, default=None)
    lines: list[str] = []

    grpc_floor = _row(results, "floor: bare grpc.aio")

    def check(
        label: str, value: float, goal: float, detail: str, higher: bool = True, why: str = ""
    ) -> None:
        met = value >= goal if higher else value <= goal
        op = "≥" if higher else "≤"
        lines.append(f"- {label}: {value:.2f} (target {op} {goal:g}) "
                     f"{'met' if met else 'MISSED'}; {detail}")  # fmt: skip
        if not met and why:
            lines.append(f"  Why: {why}")

    def cpu(row: Result | None) -> str:
        return f"{row.cpu_us_per_request:,.0f} µs" if row else "n/a"

    if ours and best:
        check("our best HTTP req/s ÷ best peer's", ours.rps / best.rps, 2.0,
              f"{ours.name} {ours.rps:,.0f} vs {best.name} {best.rps:,.0f}")  # fmt: skip
        check("our p99 ÷ that peer's p99 (ms)", ours.p99_ms / max(best.p99_ms, 1e-9), 1.0,
              f"{ours.p99_ms:.2f} vs {best.p99_ms:.2f}", higher=False)  # fmt: skip
    if v1 and floor:
        value, detail = ratio(v1, floor)
        check("our V1 req/s ÷ bare floor's", value, 0.9, detail,
              why=f"server CPU per request {cpu(v1)} against the floor's {cpu(floor)}: the "
              "floor answers a constant without checks, batching or a model "
              "(docs/serving-performance.md).")  # fmt: skip
    if grpc_row and v2:
        value, detail = ratio(grpc_row, v2)
        check("our gRPC (unary ModelInfer) req/s ÷ our HTTP V2 req/s", value, 1.5, detail,
              why=f"{cpu(grpc_row)} per gRPC call against {cpu(v2)} per HTTP V2 request: "
              "HTTP/2 framing and HPACK in Python cost about what the JSON that gRPC's raw "
              "tensors save (grpcio's own server, for scale: "
              f"{cpu(named.get('modelservice-serving (gRPC, grpcio server)'))}; its bare "
              f"floor {cpu(grpc_floor)}; docs/serving-performance.md).")  # fmt: skip
    if stream_row and v2:
        check("our gRPC (ModelStreamInfer) req/s ÷ our HTTP V2 req/s", stream_row.rps / v2.rps,
              1.5, f"{stream_row.rps:,.0f} vs {v2.rps:,.0f}",
              why=f"{cpu(stream_row)} per streamed request against {cpu(v2)} per HTTP V2 "
              "request; its load generator is grpcio's Python client, which costs more per "
              "message than the server does (no C load generator speaks gRPC "
              "streams).")  # fmt: skip
    if v1:
        check("our cold start, s (process start to ready; target < 3)", v1.cold_start_s, 3.0,
              f"CPU until ready {v1.cold_start_cpu_s:.2f} s; peers' in the table",
              higher=False,
              why="the wall time beyond the CPU until ready is waiting for the shared core "
              "(see the load average above); no TensorFlow is imported.")  # fmt: skip
    return lines


def _version(python: Path | None, package: str) -> str:
    if python is None:
        return "not installed"
    probe = subprocess.run(
        [str(python), "-c", f"import importlib.metadata as m; print(m.version({package!r}))"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    return probe.stdout.strip() or "unknown"


def report(
    args: argparse.Namespace,
    command: str,
    rendered: str,
    targets_met: list[str],
    load_before: float,
) -> str:
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    versions = ", ".join(
        f"{package} {_version(_venv(args, peer), package)}"
        for peer, package in (("triton", "nvidia-pytriton"), ("kserve", "kserve"),
                              ("mlserver", "mlserver"), ("ray", "ray"), ("bentoml", "bentoml"))
    )  # fmt: skip
    met = "\n".join(targets_met)
    return f"""# Serving benchmark

Recorded {when} by `make bench` (`.venv/bin/python {command}`).

Setup: the digits SavedModel (64 inputs, 2 x 128 hidden units, 10 classes) trained by this
image's `train`. Each server is pinned to one core (`taskset -c {args.server_cpu}`, its
child processes with it); the load generator runs on core {args.load_cpu}: `wrk` (1 thread,
{args.connections} connections) for HTTP, `h2load` (nghttp2, C: {args.connections} calls in
flight on 4 HTTP/2 connections, the gRPC-framed request with raw tensor contents as its
body; each server's gRPC answer checked first with one grpcio call) for unary gRPC, and
`grpc_load.py` (grpcio's Python client, {args.connections} requests in flight on 4 streams)
for ModelStreamInfer;
{args.warmup_seconds:.0f} s warm-up, then {args.seconds:.0f} s measured; one instance per
request, 127.0.0.1 only. Machine: {os.cpu_count()} CPUs shared with other work (load
average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after), so absolute numbers are
noisy; the server's own CPU per request (user+system time of its session's processes over
the measured window) is the steadier comparison. Cold start: from process start to the
first 200 of its readiness endpoint (polled every 50 ms), model loaded; in parentheses the
CPU time its processes used until then (steadier than the wall time here).

Compared: this server (`serve` defaults: max batch 32, max latency 5 ms, the version's
LiteRT artifact `model.tflite`, inference answered inside the HTTP protocol, gRPC on the
event loop's own HTTP/2 server) on KServe V1, V2 JSON and gRPC, once more on V1 with
`--model-runtime tensorflow` (the SavedModel, as the peers run it) and on gRPC with
`--grpc-server grpcio` (grpcio's server, as before); peers ({versions}), each with
batching of 32 rows / 5 ms where it has one:
Triton through PyTriton (`triton_server.py`, dynamic batching, V2 JSON over HTTP), KServe's
`ModelServer` with a custom `kserve.Model` (`kserve_server.py`, no batching in KServe's
Python server), MLServer with a custom runtime (`mlserver/runtime.py`, adaptive batching),
Ray Serve (`ray_server.py`, `@serve.batch`, `max_ongoing_requests` 64), BentoML
(`bentoml/service.py`, adaptive batching); the floors: a bare ASGI app on uvicorn +
httptools + uvloop parsing the body with orjson (`bare_floor.py`) and a FastAPI endpoint
doing the same (`floor_app.py`). Peers serve the same SavedModel signature with TensorFlow
on one thread.

{rendered}

Targets (issue 11), this run. The two ratio targets (V1 ÷ bare floor, gRPC ÷ HTTP V2) are
judged on pairs run back to back ({PAIR_REPEATS} times, alternating which of the two runs
first, each with the table's warm-up and window), by the median ratio: the table's single
runs are minutes apart on a shared host.

{met}

The floors parse the V1 body, so the V1 row is the like-for-like comparison; the V2 row
parses a larger body (tensor name, shape, datatype) and checks it against the signature.

Reading the rows:
- "floor: bare grpc.aio" is grpcio's own cost per call with nothing to do: its CPU per
  request bounds any Python gRPC server built on grpcio (the C core does HTTP/2 on its own
  threads and hands each call to the event loop through a poller thread: several thread
  hops per call, on one core). Compare it with the bare ASGI floor's before reading the
  gRPC row against the HTTP rows.
- Cold start is process start to ready with the model loaded and warmed. This server runs
  the version's LiteRT artifact and never imports TensorFlow (the "TensorFlow runtime" row
  does, Keras skipped); the peers import TensorFlow, and Triton and Ray start their own
  server processes.
- A missed target is listed as MISSED with the measured ratio; `docs/serving-performance.md`
  says why and what was tried.

Peers pin conflicting dependencies: each lives in a venv of its own outside the project,
`tests/benchmarks/install_peers.sh` makes them (`~/.cache/modelservice-operator/bench/`);
`apt-get install wrk`.
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model-dir", type=Path, default=CACHE / "model" / "v1")
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--warmup-seconds", type=float, default=3)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--server-cpu", default="0")
    parser.add_argument("--load-cpu", default="1")
    parser.add_argument("--peers", default=str(CACHE), help="folder of the peers' venvs")
    parser.add_argument("--only", default="", help="comma list of name prefixes to run")
    parser.add_argument("--record", default=str(HERE / "serving.md"), help='"" to skip')
    args = parser.parse_args()
    for tool, package in (("wrk", "wrk"), ("h2load", "nghttp2-client")):
        if shutil.which(tool) is None:
            print(f"{tool} is needed: apt-get install {package}", file=sys.stderr)
            return 2
    model_dir = ensure_model(args.model_dir)
    load_before = os.getloadavg()[0]
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="mso-bench-") as tmp:
        workdir = Path(tmp)
        chosen = [
            target
            for target in targets(model_dir, args, workdir)
            if not args.only or any(target.name.startswith(p) for p in args.only.split(","))
        ]
        for target in chosen:
            result = run_target(target, model_dir, args, workdir)
            if result is None:
                continue
            results.append(result)
            print(f"{target.name}: {result.rps:,.0f} req/s p99 {result.p99_ms:.2f} ms "
                  f"cold start {result.cold_start_s:.2f} s", flush=True)  # fmt: skip
        paired = paired_ratios({target.name: target for target in chosen}, model_dir, args, workdir)
    command = " ".join(["tests/benchmarks/serving_bench.py", *sys.argv[1:]])
    rendered = table(results)
    targets_met = verdicts(results, paired)
    print(rendered)
    print("\n".join(targets_met))
    if args.record:
        record = Path(args.record)
        record.write_text(
            report(args, command, rendered, targets_met, load_before)
            + kept_sections(record.read_text() if record.exists() else "")
        )
    return 0


def run_target(
    target: Target, model_dir: Path, args: argparse.Namespace, workdir: Path
) -> Result | None:
    """Starts the server, measures it, stops it; None (and why, printed) when it failed."""
    port, grpc_port = free_port(), free_port()
    if target.cwd is not None and target.name.startswith("MLServer"):
        write_mlserver_settings(target.cwd, port, model_dir)
    log = workdir / (re.sub(r"\W+", "-", target.name) + ".log")
    try:
        with serving(target, port, grpc_port, args.server_cpu, log) as (sid, cold, cpu):
            result = measure(target, port, grpc_port, args, workdir, sid)
    except (RuntimeError, subprocess.SubprocessError, OSError) as exc:
        print(f"{target.name}: {exc}\n{log.read_text()[-2000:]}", file=sys.stderr)
        return None
    return replace(result, name=target.name, role=target.role, path=target.path,
                   cold_start_s=cold, cold_start_cpu_s=cpu)  # fmt: skip


# The ratio targets, each measured again as pairs run back to back, five times: the
# table's single runs are minutes apart on a shared host. Which of the two runs first
# alternates (ABAB, then BABA...), so a drift of the host over a pair favours neither.
PAIRED = (
    ("modelservice-serving (V1)", "floor: bare ASGI + orjson"),
    ("modelservice-serving (gRPC)", "modelservice-serving (V2)"),
)
PAIR_REPEATS = 5


def paired_ratios(
    chosen: dict[str, Target], model_dir: Path, args: argparse.Namespace, workdir: Path
) -> dict[str, list[float]]:
    """req/s of ours ÷ req/s of its comparison, per pair run; keyed by our row's name."""
    ratios: dict[str, list[float]] = {}
    for ours_name, base_name in PAIRED:
        ours, base = chosen.get(ours_name), chosen.get(base_name)
        if ours is None or base is None:
            continue
        for repeat in range(PAIR_REPEATS):
            order = (ours, base) if repeat % 2 == 0 else (base, ours)
            runs = {target.name: run_target(target, model_dir, args, workdir) for target in order}
            ours_run, base_run = runs[ours_name], runs[base_name]
            if ours_run and base_run and base_run.rps:
                ratios.setdefault(ours_name, []).append(ours_run.rps / base_run.rps)
        print(f"paired {ours_name} ÷ {base_name}: {ratios.get(ours_name)}", flush=True)
    return ratios


def measure(
    target: Target, port: int, grpc_port: int, args: argparse.Namespace, workdir: Path, sid: int
) -> Result:
    """Warm-up, then the measured run, with the server's CPU time over it."""
    if target.path == "grpc":

        def load(seconds: float) -> Result:
            return h2load_grpc(grpc_port, seconds, args.connections, args.load_cpu, workdir)
    elif target.path == "grpc-stream":

        def load(seconds: float) -> Result:
            return grpc_load(grpc_port, seconds, args.connections, args.load_cpu, stream=True)
    else:
        url = f"http://127.0.0.1:{port}{target.path}"

        def load(seconds: float) -> Result:
            return wrk(url, target.body, seconds, args.connections, args.load_cpu, workdir)

    load(args.warmup_seconds)
    cpu_before = tree_cpu_seconds(sid)
    result = load(args.seconds)
    cpu_used = tree_cpu_seconds(sid) - cpu_before
    return replace(result, cpu_us_per_request=cpu_used * 1e6 / max(result.requests, 1))


if __name__ == "__main__":
    sys.exit(main())
