"""A loopback proxy in front of the API server that answers chosen requests with 429.

The operator under test talks plain HTTP to the proxy (its kubeconfig has no credentials);
the proxy forwards every request to the real API server over TLS with the admin's client
certificate, streaming watch responses through, except those a rule picks: those get
``429 Too Many Requests`` with a ``Retry-After`` header and a Kubernetes Status body, as API
Priority and Fairness sends them. Every request is recorded with its time, so a test can
check how long the operator waited before it tried again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import ClientError, ClientSession, ClientTimeout, TCPConnector, web

# Decides one request: seconds of Retry-After to refuse it with, or None to forward it.
Rule = Callable[[str, str, bytes], float | None]

HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
    "host",
    "upgrade",
    "proxy-connection",
}


@dataclass(frozen=True)
class Seen:
    """One request the proxy saw."""

    at: float  # time.monotonic()
    method: str
    path: str
    body: bytes
    throttled: float | None  # the Retry-After it was refused with, or None: forwarded


class ThrottleProxy:
    """Run with ``with ThrottleProxy(kubeconfig, rule) as proxy:`` in a test."""

    def __init__(self, admin_kubeconfig: Path, rule: Rule) -> None:
        config = json.loads(admin_kubeconfig.read_text())
        cluster = config["clusters"][0]["cluster"]
        user = config["users"][0]["user"]
        self.upstream = cluster["server"].rstrip("/")
        self.tls = ssl.create_default_context(cafile=cluster["certificate-authority"])
        self.tls.load_cert_chain(user["client-certificate"], user["client-key"])
        self.rule = rule
        self.seen: list[Seen] = []
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self._session: ClientSession | None = None

    def __enter__(self) -> ThrottleProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=30)
        return self

    def __exit__(self, *_: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    def kubeconfig(self, path: Path) -> Path:
        """A kubeconfig that reaches the API server through this proxy, without credentials."""
        path.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [
                        {"name": "proxy", "cluster": {"server": f"http://127.0.0.1:{self.port}"}}
                    ],
                    "users": [{"name": "proxy", "user": {}}],
                    "contexts": [
                        {"name": "proxy", "context": {"cluster": "proxy", "user": "proxy"}}
                    ],
                    "current-context": "proxy",
                }
            )
        )
        return path

    def requests(self, match: Callable[[Seen], bool]) -> list[Seen]:
        """The requests seen so far that ``match`` picks, in order."""
        return [s for s in list(self.seen) if match(s)]

    async def _start(self) -> None:
        self._session = ClientSession(
            connector=TCPConnector(ssl=self.tls, limit=0),
            timeout=ClientTimeout(total=None, sock_connect=10),
            auto_decompress=False,
        )
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    async def _stop(self) -> None:
        # Upstream first: open watch streams end, so their handlers return.
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._runner.cleanup(), timeout=10)
        # Handlers of streams the client never closed: cancelled, not left for the GC.
        pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        path = request.path_qs
        retry_after = self.rule(request.method, path, body)
        self.seen.append(Seen(time.monotonic(), request.method, path, body, retry_after))
        if retry_after is not None:
            status: dict[str, Any] = {
                "kind": "Status",
                "apiVersion": "v1",
                "status": "Failure",
                "message": "Too many requests, please try again later.",
                "reason": "TooManyRequests",
                "details": {"retryAfterSeconds": int(retry_after)},
                "code": 429,
            }
            return web.json_response(
                status, status=429, headers={"Retry-After": str(int(retry_after))}
            )
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        async with self._session.request(
            request.method, self.upstream + path, headers=headers, data=body or None
        ) as upstream:
            response = web.StreamResponse(
                status=upstream.status,
                headers={k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP},
            )
            await response.prepare(request)
            try:
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
                await response.write_eof()
            except (ConnectionError, ClientError):  # either side went away (a watch ended)
                pass
            return response
