"""Download limits benchmark: how fast the guarded fetcher refuses an archive bomb and a trickle.

The archive bomb is the one of issue 10: a 1.2 MB ``.tgz`` of 200,003 empty files (the old
fetcher unpacked all of them in 53 s). The trickling server sends one byte every 0.1 s,
each read well inside any per-read timeout. Both servers listen on loopback (allowed
explicitly). Prints the numbers; docs/security.md records them.

    .venv/bin/python tests/benchmarks/download_limits.py
"""

from __future__ import annotations

import functools
import http.server
import io
import os
import tarfile
import tempfile
import threading
import time
from pathlib import Path

from modelservice_serving.download import DownloadError, DownloadPolicy, download, parse_networks
from modelservice_serving.fetch import ModelDownloadError, fetch_model

ENTRIES = 200_003
DEADLINE_S = 2.0


class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        if self.path != "/trickle":
            super().do_GET()
            return
        self.send_response(200)
        self.send_header("Content-Length", "100000")
        self.end_headers()
        for _ in range(1000):
            self.wfile.write(b"x")
            self.wfile.flush()
            time.sleep(0.1)


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="mso-bench-"))
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tf:
        for index in range(ENTRIES):
            info = tarfile.TarInfo(f"v1/f{index}")
            tf.addfile(info, io.BytesIO(b""))
    (root / "bomb.tgz").write_bytes(buffer.getvalue())
    handler = functools.partial(_Handler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"

    cache = Path(tempfile.mkdtemp(prefix="mso-bench-cache-"))
    started = time.perf_counter()
    try:
        fetch_model(f"{base}/bomb.tgz", cache, 1 << 30, 60, allowed_networks="127.0.0.1/32")
    except ModelDownloadError as exc:
        refused = time.perf_counter() - started
        files = sum(len(names) for _, _, names in os.walk(cache))
        print(f"archive bomb: {len(buffer.getvalue())} bytes, {ENTRIES} entries")
        print(f"  refused in {refused:.2f} s, {files} files written: {exc}")

    started = time.perf_counter()
    policy = DownloadPolicy(1 << 20, DEADLINE_S, parse_networks("127.0.0.1/32"))
    try:
        download(f"{base}/trickle", root / "trickle.out", policy)
    except DownloadError as exc:
        print(f"trickle (1 byte / 0.1 s), deadline {DEADLINE_S:g} s:")
        print(f"  stopped after {time.perf_counter() - started:.2f} s: {exc}")
    server.shutdown()


if __name__ == "__main__":
    main()
