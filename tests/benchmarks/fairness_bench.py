"""Fairness benchmark: one-row requests while large requests run.

The server (``serve`` defaults: max batch 32, max latency 5 ms, queue 1024 rows) is pinned
to one core; the load runs on another: ``--small-clients`` loops posting one-row V1
requests and ``--big-clients`` loops posting ``--big-rows``-row requests, each client
sending its next request as soon as the last is answered. Measured for ``--seconds`` after a
warm-up, first with no big clients, then with them. Printed: the one-row requests' p50/p99
latency and share refused (503), and the big requests' rows per second and share refused.

``--server-pythonpath DIR`` runs another checkout's server code (e.g. ``/work/main/serving``)
for a before/after comparison. ``--record`` replaces the fairness section of
``tests/benchmarks/serving.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from serving_bench import (  # noqa: E402
    CACHE,
    MODEL_NAME,
    READY_PATHS,
    ROW,
    ensure_model,
    free_port,
    wait_ready,
)

PATH = f"/v1/models/{MODEL_NAME}:predict"
BEGIN, END = "<!-- fairness:begin -->", "<!-- fairness:end -->"


@dataclass
class Tally:
    latencies_ms: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    rows: int = 0

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")

    def share(self, status: int) -> float:
        total = sum(self.statuses.values())
        return self.statuses.get(status, 0) / total if total else 0.0


def _request(rows: int) -> bytes:
    body = json.dumps({"instances": [ROW] * rows}).encode()
    return (
        f"POST {PATH} HTTP/1.1\r\nhost: bench\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    ).encode() + body


async def _client(port: int, rows: int, until: float, record_after: float, tally: Tally) -> None:
    """One keep-alive connection, one request at a time (reconnects when closed)."""
    request = _request(rows)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    while time.monotonic() < until:
        started = time.monotonic()
        writer.write(request)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            continue
        status = int(head[9:12])
        length = int(re.search(rb"content-length: (\d+)", head, re.I).group(1))  # type: ignore[union-attr]
        await reader.readexactly(length)
        if started >= record_after:
            tally.statuses[status] = tally.statuses.get(status, 0) + 1
            if status == 200:  # latency of answers, not of refusals (those are fast)
                tally.latencies_ms.append((time.monotonic() - started) * 1000)
                tally.rows += rows
        if status == 503:
            await asyncio.sleep(0.01)  # a client honouring Retry-After would wait longer
    writer.close()


async def _phase(
    port: int, small: int, big: int, big_rows: int, warmup: float, seconds: float
) -> tuple[Tally, Tally]:
    now = time.monotonic()
    until, record_after = now + warmup + seconds, now + warmup
    small_tally, big_tally = Tally(), Tally()
    await asyncio.gather(
        *(_client(port, 1, until, record_after, small_tally) for _ in range(small)),
        *(_client(port, big_rows, until, record_after, big_tally) for _ in range(big)),
    )
    return small_tally, big_tally


def run(args: argparse.Namespace, model_dir: Path, label: str, pythonpath: str | None) -> list[str]:
    port = free_port()
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "OMP_NUM_THREADS": "1"}
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    command = [
        "taskset", "-c", args.server_cpu, sys.executable, "-m", "modelservice_serving", "serve",
        "--model-dir", str(model_dir), "--model-name", MODEL_NAME, "--host", "127.0.0.1",
        "--port", str(port), "--log-level", "error",
    ]  # fmt: skip
    rows = []
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            try:
                wait_ready(port, process, READY_PATHS)
            except RuntimeError:
                log.seek(0)
                sys.stderr.write(log.read().decode(errors="replace")[-3000:])
                raise
            os.sched_setaffinity(0, {int(args.load_cpu)})
            for big in (0, args.big_clients):
                small_tally, big_tally = asyncio.run(
                    _phase(port, args.small_clients, big, args.big_rows, args.warmup, args.seconds)
                )
                rows.append(
                    f"| {label} | {args.small_clients} x 1 row, {big} x {args.big_rows} rows | "
                    f"{small_tally.percentile(0.5):.1f} | {small_tally.percentile(0.99):.1f} | "
                    f"{small_tally.share(503):.1%} | "
                    f"{small_tally.rows / args.seconds:,.0f} | "
                    + (
                        f"{big_tally.rows / args.seconds:,.0f} | {big_tally.share(503):.1%} |"
                        if big
                        else "- | - |"
                    )
                )
                print(rows[-1], flush=True)
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(30)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model-dir", type=Path, default=CACHE / "model" / "v1")
    parser.add_argument("--small-clients", type=int, default=8)
    parser.add_argument("--big-clients", type=int, default=8)
    parser.add_argument("--big-rows", type=int, default=256)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--warmup", type=float, default=2)
    parser.add_argument("--server-cpu", default="0")
    parser.add_argument("--load-cpu", default="1")
    parser.add_argument("--server-pythonpath", default="", help="compare: another checkout")
    parser.add_argument("--record", default=str(HERE / "serving.md"), help='"" to skip')
    args = parser.parse_args()
    model_dir = ensure_model(args.model_dir)
    load_before = os.getloadavg()[0]
    rows = run(args, model_dir, "this branch", None)
    if args.server_pythonpath:
        rows += run(args, model_dir, f"`{args.server_pythonpath}`", args.server_pythonpath)
    section = f"""{BEGIN}
## Fairness: one-row requests while large requests run

Recorded {time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())} by
`tests/benchmarks/fairness_bench.py {" ".join(sys.argv[1:])}`. The server (`serve` defaults:
max batch 32, max latency 5 ms, queue 1024 rows) on core {args.server_cpu}; the clients (one
keep-alive connection each, the next request as soon as the last is answered, 10 ms pause
after a 503) on core {args.load_cpu}; {args.warmup:g} s warm-up, {args.seconds:g} s measured.
Load average {load_before:.1f} before (2 shared CPUs: absolute numbers are noisy).

| server | clients | 1-row p50 ms | 1-row p99 ms | 1-row 503 | 1-row 200/s | big rows/s | big 503 |
|---|---|---:|---:|---:|---:|---:|---:|
{chr(10).join(rows)}

Latencies are of the answered (200) requests; 503s are counted apart. Large requests are
sliced into batches that they share with the one-row requests
(water-filling); admission refuses (503 before reading the body) what the queue cannot
take, and large requests leave the queue's last batch of room to small ones. So the one-row
requests keep their latency instead of waiting behind (or being refused because of) whole
large requests; the large ones pay: batches of at most 32 rows (main ran each 256-row
request as one model call, ignoring the maximum) and more of them refused.
{END}"""
    print(section)
    if args.record:
        path = Path(args.record)
        text = path.read_text()
        if BEGIN in text:
            text = text[: text.index(BEGIN)] + section + text[text.index(END) + len(END) :]
        else:
            text = text.rstrip("\n") + "\n\n" + section + "\n"
        path.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
