"""Slow, idle, oversized and many clients cannot hold the server.

First each limit of the connection guard on its own (an in-process server, small limits, raw
sockets), then a slowloris run against the real ``serve`` entrypoint in a subprocess: hundreds
of slow sockets and a few 64 MB headers while a normal client measures its latency and the
server's RSS is sampled. The numbers are printed (``pytest -s``) and asserted against
generous bounds: two shared CPUs run this, so the bounds catch a server that is held, not jitter.
"""

from __future__ import annotations

import contextlib
import resource
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .conftest import MODEL_NAME, ServerFactory, TrainedModel, free_port, serving_env

pytestmark = pytest.mark.unit

V1 = f"/v1/models/{MODEL_NAME}:predict"
ONE_ROW = b'{"instances": [[' + b",".join([b"0.5"] * 64) + b"]]}"
REQUEST = (
    f"POST {V1} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
    f"content-length: {len(ONE_ROW)}\r\n\r\n"
).encode() + ONE_ROW


def _address(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").split(":")
    return host, int(port)


def _read_all(sock: socket.socket, timeout: float) -> bytes:
    """Everything until the server closes (or ``timeout``)."""
    sock.settimeout(timeout)
    chunks = []
    with contextlib.suppress(TimeoutError, ConnectionResetError):
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def _refused(url: str) -> str:
    text = httpx.get(url + "/metrics").text
    return "\n".join(
        line for line in text.splitlines() if line.startswith("modelservice_connections_refused")
    )


def test_oversized_head_is_431_and_closed(server_factory: ServerFactory) -> None:
    with server_factory(max_header_bytes=4096) as server:
        with socket.create_connection(_address(server.url)) as sock:
            sock.sendall(f"GET /v2/health/live HTTP/1.1\r\nhost: x\r\nx-big: {'a' * 8000}".encode())
            answer = _read_all(sock, 5)
        assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
        assert b"4096 bytes" in answer
        with socket.create_connection(_address(server.url)) as sock:  # the same in the URL
            sock.sendall(b"GET /" + b"a" * 8000)
            assert _read_all(sock, 5).startswith(b"HTTP/1.1 431 ")
        # Just under the limit is served.
        fine = httpx.get(server.url + "/v2/health/live", headers={"x-big": "a" * 3000})
        assert fine.status_code == 200
        assert 'reason="header_too_large"} 2.0' in _refused(server.url)


def test_head_and_body_deadlines(server_factory: ServerFactory) -> None:
    with server_factory(header_timeout_s=0.5, body_timeout_s=0.8) as server:
        address = _address(server.url)
        with socket.create_connection(address) as sock:  # a head that never ends: 408
            started = time.monotonic()
            sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nhost: x\r\n")
            for _ in range(3):  # dribbling does not extend the deadline
                time.sleep(0.2)
                with contextlib.suppress(OSError):
                    sock.sendall(b"x-a: b\r\n")
            answer = _read_all(sock, 5)
            assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
            assert 0.4 < time.monotonic() - started < 3
        with socket.create_connection(address) as sock:  # silent: closed without a word
            started = time.monotonic()
            assert _read_all(sock, 5) == b""
            assert 0.4 < time.monotonic() - started < 3
        with socket.create_connection(address) as sock:  # a body that never ends: 408
            sock.sendall(REQUEST[: -len(ONE_ROW) + 10])
            answer = _read_all(sock, 5)
            assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
        with socket.create_connection(address) as sock:  # keep-alive: answered, then served again
            sock.sendall(REQUEST)
            time.sleep(0.3)
            sock.sendall(REQUEST)
            answers = _read_all(sock, 1.5)
            assert answers.count(b"HTTP/1.1 200 ") == 2
        refused = _refused(server.url)
        assert 'reason="header_timeout"} 1.0' in refused
        assert 'reason="idle_timeout"' in refused
        assert 'reason="body_timeout"} 1.0' in refused


def test_deadlines_move_with_each_request_and_keep_alive_closes_an_idle_connection(
    server_factory: ServerFactory,
) -> None:
    """One connection answered again and again for longer than any single deadline: each
    request gets fresh head and body deadlines (the guard moves one lazy timer), and the
    connection is closed once it idles past the keep-alive timeout."""
    with (
        server_factory(
            header_timeout_s=0.4, body_timeout_s=0.4, keep_alive_timeout_s=0.6
        ) as server,
        socket.create_connection(_address(server.url)) as sock,
    ):
        sock.settimeout(5)
        started = time.monotonic()
        for _ in range(8):  # 8 x 0.25 s: past every deadline, never past one per request
            sock.sendall(REQUEST)
            assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
            time.sleep(0.25)
        assert time.monotonic() - started > 1.6
        idle_since = time.monotonic()
        assert _read_all(sock, 5) == b""  # closed without a word
        assert 0.2 < time.monotonic() - idle_since < 3


def test_in_flight_cap_sheds_before_the_body_and_spares_probes(
    server_factory: ServerFactory,
) -> None:
    with server_factory(max_in_flight=3, body_timeout_s=10) as server:
        address = _address(server.url)
        holders = []
        for _ in range(3):  # three requests in flight, waiting for their bodies
            sock = socket.create_connection(address)
            sock.sendall(REQUEST[: -len(ONE_ROW) + 5])
            holders.append(sock)
        time.sleep(0.3)
        try:
            shed = httpx.post(server.url + V1, content=ONE_ROW)
            assert shed.status_code == 503
            assert shed.headers["retry-after"] == "1"
            assert "3 requests in flight" in shed.json()["error"]
            assert httpx.get(server.url + "/v2/health/ready").status_code == 200
            assert httpx.get(server.url + "/v2/health/live").status_code == 200
            assert 'reason="in_flight"} 1.0' in _refused(server.url)
        finally:
            for sock in holders:
                sock.close()
        time.sleep(0.3)
        assert httpx.post(server.url + V1, content=ONE_ROW).status_code == 200


def test_connection_cap_closes_the_longest_idle(server_factory: ServerFactory) -> None:
    with server_factory(max_connections=4) as server:
        address = _address(server.url)
        idle = [socket.create_connection(address) for _ in range(4)]
        time.sleep(0.2)
        try:
            with httpx.Client(base_url=server.url) as http:
                for _ in range(5):
                    assert http.post(V1, content=ONE_ROW).status_code == 200
            assert _read_all(idle[0], 2) == b""  # the oldest idle one made room
            assert 'reason="evicted"' in _refused(server.url)
        finally:
            for sock in idle:
                sock.close()


# ---------------------------------------------------------------- slowloris, end to end


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@contextlib.contextmanager
def _serve(
    model_dir: Path, nofile: int, *flags: str
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = free_port()

    def limit_files() -> None:  # a small open-file limit: running out must not be fatal
        resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    process = subprocess.Popen(
        [
            sys.executable, "-m", "modelservice_serving", "serve",
            "--model-dir", str(model_dir), "--model-name", MODEL_NAME,
            "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", *flags,
        ],
        env=serving_env(), preexec_fn=limit_files,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert process.poll() is None, "server exited"
            assert time.monotonic() < deadline, "server not ready"
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/v2/health/ready", timeout=2).status_code == 200:
                    break
            time.sleep(0.2)
        yield url, process
    finally:
        process.terminate()
        process.wait(30)


def _latencies_ms(url: str, count: int) -> list[float]:
    samples = []
    with httpx.Client(base_url=url, timeout=30) as http:
        for _ in range(count):
            started = time.perf_counter()
            response = http.post(V1, content=ONE_ROW)
            samples.append((time.perf_counter() - started) * 1000)
            assert response.status_code == 200, response.text
    return sorted(samples)


class _Attack:
    """Slow sockets of four kinds, reopened when the server closes them, until stopped."""

    def __init__(self, address: tuple[str, int], pid: int) -> None:
        self.address = address
        self.pid = pid
        self.stop = threading.Event()
        self.opened = 0
        self.closed_by_server = 0
        self.statuses: dict[str, int] = {}
        self.huge_sent: list[int] = []
        self.peak_rss_mb = 0.0

    def _open(self, kind: str) -> socket.socket | None:
        try:
            sock = socket.create_connection(self.address, timeout=2)
        except OSError:
            return None
        sock.setblocking(False)
        self.opened += 1
        with contextlib.suppress(OSError):
            if kind == "head":
                sock.send(f"POST {V1} HTTP/1.1\r\nhost: x\r\n".encode())
            elif kind == "body":
                sock.send(REQUEST[: -len(ONE_ROW) + 3])
        return sock

    def _dribble(self, sock: socket.socket, kind: str) -> bool:
        """One slow step; False once the server has closed the socket."""
        try:
            data = sock.recv(4096)
        except BlockingIOError:
            data = None
        except OSError:
            data = b""
        if data is not None:  # an answer (408/431/503) or a close: either way it is over
            if data.startswith(b"HTTP/1.1 "):
                status = data[9:12].decode()
                self.statuses[status] = self.statuses.get(status, 0) + 1
            self.closed_by_server += 1
            sock.close()
            return False
        with contextlib.suppress(OSError):
            if kind == "head":
                sock.send(b"x-a: b\r\n")
            elif kind == "body":
                sock.send(b"0")
        return True

    def _huge_header(self) -> None:
        sent = 0
        chunk = b"x" * (1 << 20)
        with socket.create_connection(self.address) as sock:
            sock.settimeout(5)
            try:
                sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nhost: x\r\nx-huge: ")
                while sent < 64 << 20 and not self.stop.is_set():
                    sock.sendall(chunk)
                    sent += len(chunk)
            except OSError:
                pass
        self.huge_sent.append(sent)

    def run(self, slow: int, silent: int, bodies: int) -> None:
        kinds = ["head"] * slow + ["silent"] * silent + ["body"] * bodies
        sockets: list[tuple[socket.socket | None, str]] = [(self._open(k), k) for k in kinds]
        huge = [threading.Thread(target=self._huge_header) for _ in range(8)]
        for thread in huge:
            thread.start()
        while not self.stop.is_set():
            self.peak_rss_mb = max(self.peak_rss_mb, _rss_mb(self.pid))
            for index, (sock, kind) in enumerate(sockets):
                if sock is None or not self._dribble(sock, kind):
                    sockets[index] = (self._open(kind), kind)
            time.sleep(0.25)
        for thread in huge:
            thread.join(30)
        for sock, _ in sockets:
            if sock is not None:
                sock.close()


def test_slowloris_does_not_hold_the_server(trained_model: TrainedModel) -> None:
    with _serve(
        trained_model.model_dir, 512, "--header-timeout-s", "2", "--body-timeout-s", "3"
    ) as (url, process):
        _latencies_ms(url, 20)  # warm
        before = _latencies_ms(url, 200)
        rss_before = _rss_mb(process.pid)
        attack = _Attack(_address(url), process.pid)
        attacker = threading.Thread(target=attack.run, args=(400, 100, 100))
        attacker.start()
        try:
            time.sleep(3)  # every kind of slow socket is open, the first ones already reaped
            during = _latencies_ms(url, 200)
            time.sleep(2)
            ready = httpx.get(url + "/v2/health/ready", timeout=5).status_code
        finally:
            attack.stop.set()
            attacker.join(60)
        refused = _refused(url)
        rss_after = _rss_mb(process.pid)

    def p(samples: list[float], q: float) -> float:
        return samples[min(len(samples) - 1, int(q * len(samples)))]

    print(
        f"\nslowloris: {attack.opened} slow sockets opened, {attack.closed_by_server} closed "
        f"by the server (answers {attack.statuses}); 64 MB headers stopped after "
        f"{[round(sent / 2**20, 1) for sent in attack.huge_sent]} MiB\n"
        f"one-row latency ms before: p50 {p(before, 0.5):.2f} p99 {p(before, 0.99):.2f}; "
        f"during: p50 {p(during, 0.5):.2f} p99 {p(during, 0.99):.2f} "
        f"(mean {statistics.mean(during):.2f})\n"
        f"server RSS MB before {rss_before:.0f}, peak during {attack.peak_rss_mb:.0f}, "
        f"after {rss_after:.0f}\n{refused}"
    )
    assert ready == 200  # the file limit (512) is below the sockets opened: probes still answer
    assert attack.opened >= 600
    assert attack.closed_by_server >= 300  # reaped by the deadlines and the connection cap
    assert all(sent <= 32 << 20 for sent in attack.huge_sent), attack.huge_sent
    assert p(during, 0.5) < max(10 * p(before, 0.5), 25.0)
    assert p(during, 0.99) < max(10 * p(before, 0.99), 250.0)
    assert attack.peak_rss_mb - rss_before < 150, (rss_before, attack.peak_rss_mb)
    assert 'reason="header_too_large"' in refused
    assert 'reason="evicted"' in refused  # more slow sockets than the file limit allows
    assert 'reason="body_timeout"' in refused  # busy, so never evicted: the deadline ends them
