"""Leader election on a ``coordination.k8s.io/v1`` Lease: one active replica, the rest standby.

The algorithm is client-go's ``leaderelection`` (what controller-runtime operators use):

- a candidate reads the Lease every ``retry_period_s``; it takes the Lease when nobody holds
  it, or when the holder's record has not changed for ``leaseDurationSeconds`` by the
  candidate's own clock (so clocks need not agree across nodes);
- the holder renews (``renewTime``) every ``retry_period_s`` with an optimistic-concurrency
  update (``resourceVersion``), so two candidates can never both win one round;
- a holder that could not renew for ``renew_deadline_s`` (< the lease duration) stops at
  once, before any standby may take over: the process exits and Kubernetes restarts it as a
  standby. A replica that stops in order hands the Lease over (empty holder) so the next one
  takes it within one retry period.

The decision of one round is the pure function :func:`next_record`; the rest is I/O.
While it waits, a standby answers the liveness probe itself (kopf serves it only once it
runs), so a healthy standby is never restarted by its probe.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from .kube import ApiError, Kube
from .settings import OperatorSettings

__all__ = ["Leadership", "LeaseConfig", "lead", "next_record"]

log = logging.getLogger(__name__)

SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


@dataclass(frozen=True)
class LeaseConfig:
    """Which Lease, who this replica is, and the timing of the election."""

    namespace: str
    name: str
    identity: str
    duration_s: float
    renew_deadline_s: float
    retry_period_s: float

    @classmethod
    def from_settings(cls, settings: OperatorSettings) -> LeaseConfig:
        """The Lease named by the settings, in the pod's namespace unless one is given."""
        namespace = settings.leader_election_namespace
        if not namespace and SERVICE_ACCOUNT_NAMESPACE.exists():
            namespace = SERVICE_ACCOUNT_NAMESPACE.read_text().strip()
        if not namespace:
            raise RuntimeError(
                "leader election needs MSO_OPERATOR_LEADER_ELECTION_NAMESPACE outside a pod"
            )
        identity = settings.identity or f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}"
        return cls(
            namespace=namespace,
            name=settings.leader_election_id,
            identity=identity,
            duration_s=settings.lease_duration_s,
            renew_deadline_s=settings.lease_renew_deadline_s,
            retry_period_s=settings.lease_retry_period_s,
        )


def micro_time(epoch_s: float) -> str:
    """A Kubernetes MicroTime (RFC 3339 with microseconds, UTC)."""
    return datetime.fromtimestamp(epoch_s, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def next_record(
    spec: dict[str, Any] | None,
    config: LeaseConfig,
    *,
    now: float,
    observed_at: float,
) -> dict[str, Any] | None:
    """The Lease spec to write this round, or None when another replica holds the Lease.

    ``spec`` is the Lease's spec as read (None: no Lease yet); ``observed_at`` is when (by
    this replica's monotonic clock, as ``now``) that spec was first seen unchanged; the
    wall clock goes only into the written record, for people reading it.
    """
    wall = time.time()
    record = {
        "holderIdentity": config.identity,
        "leaseDurationSeconds": math.ceil(config.duration_s),
        "acquireTime": micro_time(wall),
        "renewTime": micro_time(wall),
        "leaseTransitions": 0,
    }
    if spec is None:
        return record
    holder = spec.get("holderIdentity") or ""
    duration = float(spec.get("leaseDurationSeconds") or config.duration_s)
    if holder and holder != config.identity and now < observed_at + duration:
        return None
    transitions = int(spec.get("leaseTransitions") or 0)
    if holder == config.identity:
        record["acquireTime"] = spec.get("acquireTime") or record["acquireTime"]
        record["leaseTransitions"] = transitions
    else:
        record["leaseTransitions"] = transitions + 1
    return record


def _exit_now() -> None:
    # Another replica may hold the Lease soon: stop reconciling this instant, no cleanup.
    logging.shutdown()
    os._exit(1)


class Leadership:
    """Competes for the Lease, then keeps it renewed; calls ``on_lost`` if it slips."""

    def __init__(
        self,
        kube: Kube,
        config: LeaseConfig,
        on_lost: Callable[[], None] = _exit_now,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.kube = kube
        self.config = config
        self.on_lost = on_lost
        self.clock = clock
        self._lease: dict[str, Any] | None = None  # as last read or written
        self._observed: tuple[str, str] | None = None  # (holder, renewTime) last seen
        self._observed_at = 0.0
        self._renewed_at = 0.0
        self._renewer: asyncio.Task[None] | None = None
        self.transitions = 0

    @property
    def leading(self) -> bool:
        """True while this replica holds the Lease (as far as it knows)."""
        spec = (self._lease or {}).get("spec") or {}
        return bool(spec.get("holderIdentity") == self.config.identity)

    async def try_acquire_or_renew(self) -> bool:
        """One round: take or renew the Lease if the rules allow; True when holding it."""
        cfg = self.config
        if not self.leading or self._lease is None:
            self._lease = await self.kube.get("Lease", cfg.namespace, cfg.name)
        now = self.clock()
        spec = (self._lease or {}).get("spec") or {}
        seen = (str(spec.get("holderIdentity") or ""), str(spec.get("renewTime") or ""))
        if seen != self._observed:
            self._observed, self._observed_at = seen, now
        record = next_record(
            spec if self._lease is not None else None,
            cfg,
            now=now,
            observed_at=self._observed_at,
        )
        if record is None:
            return False
        try:
            if self._lease is None:
                body = {
                    "apiVersion": "coordination.k8s.io/v1",
                    "kind": "Lease",
                    "metadata": {"name": cfg.name, "namespace": cfg.namespace},
                    "spec": record,
                }
                lease, created = await self.kube.create(body)
                if not created:  # another replica created it first: compete next round
                    self._lease = lease
                    return False
            else:
                body = {**self._lease, "spec": record}
                lease = await self.kube.replace("Lease", cfg.namespace, cfg.name, body)
        except ApiError as exc:
            if exc.status == 409:  # someone else wrote it in between: read it again
                self._lease = None
                return False
            raise
        self._lease = lease
        self._observed = (cfg.identity, str(record["renewTime"]))
        self._observed_at = self._renewed_at = self.clock()
        return True

    async def acquire(self) -> None:
        """Wait until this replica holds the Lease."""
        cfg = self.config
        log.info("waiting to lead: Lease %s/%s as %s", cfg.namespace, cfg.name, cfg.identity)
        while True:
            try:
                if await self.try_acquire_or_renew():
                    spec = (self._lease or {}).get("spec") or {}
                    self.transitions = int(spec.get("leaseTransitions") or 0)
                    log.info("leading: Lease %s/%s as %s", cfg.namespace, cfg.name, cfg.identity)
                    return
            except ApiError as exc:
                log.warning("cannot read or take Lease %s/%s: %s", cfg.namespace, cfg.name, exc)
            # A standby looks twice per renewal period: it sees the last renewal sooner and
            # takes over up to a period earlier (one GET per second, one standby).
            await asyncio.sleep(cfg.retry_period_s / 2)

    def start_renewing(self) -> None:
        """Renew in the background until released; ``on_lost`` when the deadline passes."""
        self._renewer = asyncio.create_task(self._renew_forever(), name="lease renewer")

    async def _renew_forever(self) -> None:
        cfg = self.config
        while True:
            await asyncio.sleep(cfg.retry_period_s)
            try:
                renewed = await asyncio.wait_for(
                    self.try_acquire_or_renew(), timeout=cfg.renew_deadline_s
                )
            except (ApiError, TimeoutError, OSError) as exc:
                log.warning("cannot renew Lease %s/%s: %r", cfg.namespace, cfg.name, exc)
                renewed = False
            except Exception:  # aiohttp's errors and the like: same as no answer
                log.exception("cannot renew Lease %s/%s", cfg.namespace, cfg.name)
                renewed = False
            if renewed:
                continue
            taken = self._lease is not None and not self.leading
            if taken or self.clock() - self._renewed_at >= cfg.renew_deadline_s:
                log.critical(
                    "lost Lease %s/%s (last renewed %.1fs ago): stopping",
                    cfg.namespace,
                    cfg.name,
                    self.clock() - self._renewed_at,
                )
                self.on_lost()
                return

    async def release(self) -> None:
        """Stop renewing and hand the Lease over (empty holder), if this replica holds it."""
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
            self._renewer = None
        if not self.leading or self._lease is None:
            return
        cfg = self.config
        spec = {
            **(self._lease.get("spec") or {}),
            "holderIdentity": "",
            "leaseDurationSeconds": 1,
            "renewTime": micro_time(time.time()),
        }
        try:
            self._lease = await self.kube.replace(
                "Lease", cfg.namespace, cfg.name, {**self._lease, "spec": spec}
            )
            log.info("released Lease %s/%s", cfg.namespace, cfg.name)
        except ApiError as exc:  # the next leader waits out the lease duration instead
            log.warning("cannot release Lease %s/%s: %s", cfg.namespace, cfg.name, exc)


@contextlib.asynccontextmanager
async def standby_health(endpoint: str) -> AsyncIterator[None]:
    """Answer kopf's liveness endpoint (same URL) while kopf itself is not running yet."""
    if not endpoint:
        yield
        return
    from aiohttp import web

    url = urlparse(endpoint)

    async def healthy(_request: web.Request) -> web.Response:
        return web.json_response({"standby": True})

    app = web.Application()
    app.router.add_get(url.path or "/", healthy)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    try:
        await web.TCPSite(runner, url.hostname or "0.0.0.0", url.port or 80).start()
    except OSError as exc:  # kopf will report the same when it starts
        log.warning("cannot serve standby health on %s: %s", endpoint, exc)
    try:
        yield
    finally:
        await runner.cleanup()


async def lead(kube: Kube, settings: OperatorSettings) -> Leadership:
    """Block until this replica holds the Lease, then keep it renewed; return the handle."""
    leadership = Leadership(kube, LeaseConfig.from_settings(settings))
    async with standby_health(settings.liveness):
        await leadership.acquire()
    leadership.start_renewing()
    return leadership
