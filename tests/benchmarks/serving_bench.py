"""Serving benchmark: this server vs KServe 0.21 and MLServer 1.7 on the digits SavedModel.

Every server gets one core (``taskset``); the load generator, ``wrk`` with 32 connections,
runs on another core and posts one JSON instance per request over loopback only. Each
server is warmed up, measured for a fixed time, then stopped. The floor is a FastAPI
endpoint that only parses the same JSON. The table is printed and written to
``tests/benchmarks/serving.md``.

KServe and MLServer pin conflicting dependencies, so each lives in its own throwaway venv
(``--kserve-python``, ``--mlserver-python``; see serving.md for the two pip commands); a
missing one is skipped and reported.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
CACHE = Path(os.environ.get("MSO_BENCH_CACHE", Path.home() / ".cache" / "mso-bench"))
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
    command: list[str]
    path: str
    body: str
    env: dict[str, str]
    cwd: Path | None = None


@dataclass(frozen=True)
class Result:
    name: str
    path: str
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int
    cpu_us_per_request: float = 0.0


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


def wait_ready(port: int, process: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        for path in READY_PATHS:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
                    if r.status == 200 and b'"ready":false' not in r.read().replace(b" ", b""):
                        return
            except OSError:
                pass
        time.sleep(0.3)
    raise RuntimeError("server never became ready")


def group_cpu_seconds(pgid: int) -> float:
    """User+system CPU seconds of every live process in the server's process group."""
    ticks = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # field 5 of /proc/PID/stat: the process group
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


@contextmanager
def serving(target: Target, port: int, cpu: str, log: Path) -> Iterator[int]:
    command = [
        "taskset",
        "-c",
        cpu,
        *[part.replace("{port}", str(port)) for part in target.command],
    ]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "OMP_NUM_THREADS": "1", **target.env}
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=target.cwd,
            start_new_session=True,
        )  # fmt: skip
        try:
            wait_ready(port, process)
            yield process.pid
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()


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
    return Result("", "", rps, percentiles.get(50, 0.0), percentiles.get(99, 0.0), errors, requests)


def targets(model_dir: Path, args: argparse.Namespace, workdir: Path) -> list[Target]:
    found = [
        Target(
            "modelservice-serving (V1)",
            [sys.executable, "-m", "modelservice_serving", "serve", "--model-dir", str(model_dir),
             "--model-name", MODEL_NAME, "--host", "127.0.0.1", "--port", "{port}",
             "--log-level", "warning"],
            f"/v1/models/{MODEL_NAME}:predict", V1_BODY, {},
        ),
        Target(
            "modelservice-serving (V2)",
            [sys.executable, "-m", "modelservice_serving", "serve", "--model-dir", str(model_dir),
             "--model-name", MODEL_NAME, "--host", "127.0.0.1", "--port", "{port}",
             "--log-level", "warning"],
            f"/v2/models/{MODEL_NAME}/infer", V2_BODY, {},
        ),
        Target(
            "floor: FastAPI JSON parse only",
            [sys.executable, str(HERE / "floor_app.py"), "{port}"],
            f"/v1/models/{MODEL_NAME}:predict", V1_BODY, {},
        ),
    ]  # fmt: skip
    if args.kserve_python and Path(args.kserve_python).exists():
        found.append(
            Target(
                "KServe 0.21 ModelServer (V1)",
                [args.kserve_python, str(HERE / "kserve_server.py"), str(model_dir), "{port}"],
                f"/v1/models/{MODEL_NAME}:predict", V1_BODY, {},
            )
        )  # fmt: skip
    if args.mlserver_python and Path(args.mlserver_python).exists():
        repository = workdir / "mlserver"
        shutil.copytree(HERE / "mlserver", repository, dirs_exist_ok=True)
        found.append(
            Target(
                "MLServer 1.7 adaptive batching (V2)",
                [str(Path(args.mlserver_python).parent / "mlserver"), "start", str(repository)],
                f"/v2/models/{MODEL_NAME}/infer", V2_BODY, {}, repository,
            )
        )  # fmt: skip
    return found


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


def table(results: list[Result]) -> str:
    kserve = next((r for r in results if r.name.startswith("KServe")), None)
    floor = next((r for r in results if r.name.startswith("floor")), None)
    lines = [
        "| server | endpoint | req/s | p50 ms | p99 ms | errors | server CPU µs/req "
        "| x KServe req/s | / floor req/s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        vs_kserve = f"{r.rps / kserve.rps:.2f}" if kserve and kserve.rps else "n/a"
        vs_floor = f"{r.rps / floor.rps:.2f}" if floor and floor.rps else "n/a"
        lines.append(
            f"| {r.name} | `{r.path}` | {r.rps:,.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | "
            f"{r.errors} | {r.cpu_us_per_request:,.0f} | {vs_kserve} | {vs_floor} |"
        )
    return "\n".join(lines)


def _version(python: str, package: str) -> str:
    if not Path(python).exists():
        return "not installed"
    probe = subprocess.run(
        [python, "-c", f"import importlib.metadata as m; print(m.version({package!r}))"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    return probe.stdout.strip() or "unknown"


def report(args: argparse.Namespace, command: str, rendered: str, load_before: float) -> str:
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    return f"""# Serving benchmark

Recorded {when} by `make bench` (`.venv/bin/python {command}`).

Setup: the digits SavedModel (64 inputs, 2 x 128 hidden units, 10 classes) trained by this
image's `train`. Each server is pinned to one core (`taskset -c {args.server_cpu}`); `wrk`
(1 thread, {args.connections} connections, {args.warmup_seconds:.0f} s warm-up, then \
{args.seconds:.0f} s measured) runs on core {args.load_cpu}; one JSON instance per request,
127.0.0.1 only. Machine: {os.cpu_count()} CPUs shared with other work (load average
{load_before:.1f} before, {os.getloadavg()[0]:.1f} after), so absolute numbers are noisy;
the server's own CPU per request (its process group's user+system time over the measured
window) is the steadier comparison.

Compared: this server (`serve` defaults: max batch 32, max latency 5 ms) on both protocols;
KServe {_version(args.kserve_python, "kserve")} `ModelServer` (1 worker) with a custom
`kserve.Model` calling the SavedModel signature (`kserve_server.py`; KServe has no Python
TensorFlow runtime); MLServer {_version(args.mlserver_python, "mlserver")} with a custom
`MLModel` runtime (`mlserver/runtime.py`), adaptive batching on (max batch 32, 5 ms),
`parallel_workers: 0`; the floor, a FastAPI endpoint that only parses the JSON
(`floor_app.py`).

{rendered}

Targets: at least 3x KServe's requests per second with p99 no worse; at least 0.85 of the
floor. The floor parses the V1 body, so the V1 row is the like-for-like comparison; the V2
row parses a larger body (tensor name, shape, datatype) and checks it against the signature.

KServe and MLServer pin conflicting dependencies: each lives in a throwaway venv outside
the project (the script's defaults):

```
python3.11 -m venv ~/.cache/mso-bench/kserve
~/.cache/mso-bench/kserve/bin/pip install kserve==0.21.0 tensorflow-cpu==2.21.0
python3.11 -m venv ~/.cache/mso-bench/mlserver
~/.cache/mso-bench/mlserver/bin/pip install mlserver==1.7.1 tensorflow-cpu==2.21.0
apt-get install wrk
```
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model-dir", type=Path, default=CACHE / "model" / "v1")
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--warmup-seconds", type=float, default=3)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--server-cpu", default="0")
    parser.add_argument("--load-cpu", default="1")
    parser.add_argument("--kserve-python", default=str(CACHE / "kserve" / "bin" / "python"))
    parser.add_argument("--mlserver-python", default=str(CACHE / "mlserver" / "bin" / "python"))
    parser.add_argument("--only", default="", help="comma list of name prefixes to run")
    parser.add_argument("--record", default=str(HERE / "serving.md"), help='"" to skip')
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is needed: apt-get install wrk", file=sys.stderr)
        return 2
    model_dir = ensure_model(args.model_dir)
    load_before = os.getloadavg()[0]
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="mso-bench-") as tmp:
        workdir = Path(tmp)
        for target in targets(model_dir, args, workdir):
            if args.only and not any(target.name.startswith(p) for p in args.only.split(",")):
                continue
            port = free_port()
            if target.cwd is not None and target.name.startswith("MLServer"):
                write_mlserver_settings(target.cwd, port, model_dir)
            log = workdir / (re.sub(r"\W+", "-", target.name) + ".log")
            url = f"http://127.0.0.1:{port}{target.path}"
            try:
                with serving(target, port, args.server_cpu, log) as pgid:
                    load = (url, target.body)
                    wrk(*load, args.warmup_seconds, args.connections, args.load_cpu, workdir)
                    cpu_before = group_cpu_seconds(pgid)
                    result = wrk(*load, args.seconds, args.connections, args.load_cpu, workdir)
                    cpu_used = group_cpu_seconds(pgid) - cpu_before
            except (RuntimeError, subprocess.SubprocessError) as exc:
                print(f"{target.name}: {exc}\n{log.read_text()[-2000:]}", file=sys.stderr)
                continue
            result = Result(target.name, target.path, result.rps, result.p50_ms, result.p99_ms,
                            result.errors, result.requests,
                            cpu_used * 1e6 / max(result.requests, 1))  # fmt: skip
            results.append(result)
            print(f"{target.name}: {result.rps:,.0f} req/s p99 {result.p99_ms:.2f} ms", flush=True)
    command = " ".join(["tests/benchmarks/serving_bench.py", *sys.argv[1:]])
    rendered = table(results)
    print(rendered)
    if args.record:
        Path(args.record).write_text(report(args, command, rendered, load_before))
    return 0


if __name__ == "__main__":
    sys.exit(main())
