"""Leader election on a Lease: the pure round decision and two replicas competing.

The API is a fake with the one property that matters: an update carrying a stale
``resourceVersion`` is refused with 409, as the API server does.
"""

from __future__ import annotations

import asyncio
import copy
import time
from typing import Any

import pytest

from modelservice_operator.kube import ApiError
from modelservice_operator.leader import Leadership, LeaseConfig, next_record
from modelservice_operator.settings import OperatorSettings

pytestmark = pytest.mark.unit

NS = "ops"


def config(identity: str) -> LeaseConfig:
    return LeaseConfig(NS, "modelservice-operator", identity, 10, 7, 2)


class LeaseApi:
    """Just enough of kube.Kube for Leases, with optimistic concurrency."""

    def __init__(self) -> None:
        self.lease: dict[str, Any] | None = None
        self.calls: list[str] = []
        self.down = False

    def _check(self) -> None:
        if self.down:
            raise ApiError(0, "connection refused")

    async def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        self.calls.append("GET")
        self._check()
        return copy.deepcopy(self.lease)

    async def create(self, body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        self.calls.append("POST")
        self._check()
        if self.lease is not None:
            return copy.deepcopy(self.lease), False
        self.lease = copy.deepcopy(body)
        self.lease["metadata"]["resourceVersion"] = "1"
        return copy.deepcopy(self.lease), True

    async def replace(
        self, kind: str, namespace: str, name: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        self.calls.append("PUT")
        self._check()
        assert self.lease is not None
        if body["metadata"].get("resourceVersion") != self.lease["metadata"]["resourceVersion"]:
            raise ApiError(409, "the object has been modified")
        self.lease = copy.deepcopy(body)
        version = int(body["metadata"]["resourceVersion"]) + 1
        self.lease["metadata"]["resourceVersion"] = str(version)
        return copy.deepcopy(self.lease)

    @property
    def holder(self) -> str:
        return str(((self.lease or {}).get("spec") or {}).get("holderIdentity") or "")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def replica(api: LeaseApi, clock: Clock, name: str, lost: list[str]) -> Leadership:
    return Leadership(api, config(name), on_lost=lambda: lost.append(name), clock=clock)  # type: ignore[arg-type]


def test_round_decisions() -> None:
    me = config("me")
    fresh = next_record(None, me, now=0, observed_at=0)
    assert fresh is not None
    assert fresh["holderIdentity"] == "me"
    assert fresh["leaseTransitions"] == 0
    assert fresh["leaseDurationSeconds"] == 10
    held = {"holderIdentity": "other", "leaseDurationSeconds": 10, "leaseTransitions": 3}
    assert next_record(held, me, now=109.9, observed_at=100) is None
    taken = next_record(held, me, now=110.1, observed_at=100)
    assert taken is not None
    assert taken["leaseTransitions"] == 4
    mine = {**held, "holderIdentity": "me", "acquireTime": "2026-12-01T00:00:00.000000Z"}
    renewed = next_record(mine, me, now=100, observed_at=100)
    assert renewed is not None
    assert renewed["leaseTransitions"] == 3
    assert renewed["acquireTime"] == "2026-12-01T00:00:00.000000Z"
    released = {**held, "holderIdentity": ""}
    assert next_record(released, me, now=100, observed_at=100) is not None


async def test_one_leader_then_takeover_after_the_lease_duration_and_the_old_one_stops() -> None:
    api, clock, lost = LeaseApi(), Clock(), []
    a, b = replica(api, clock, "a", lost), replica(api, clock, "b", lost)
    assert await a.try_acquire_or_renew()
    assert not await b.try_acquire_or_renew()
    assert api.holder == "a"
    # The leader renews without reading first: one request per round.
    api.calls.clear()
    clock.now += 2
    assert await a.try_acquire_or_renew()
    assert api.calls == ["PUT"]
    # b sees a renewing: never takes over, however long it watches.
    for _ in range(10):
        clock.now += 2
        assert await a.try_acquire_or_renew()
        assert not await b.try_acquire_or_renew()
    # a stops renewing (killed): b takes over once the record it saw last (the renewal just
    # above) stood still for the lease duration, 10 s by b's own clock.
    clock.now += 9.9
    assert not await b.try_acquire_or_renew()
    clock.now += 0.2
    assert await b.try_acquire_or_renew()
    assert api.holder == "b"
    assert api.lease is not None
    assert api.lease["spec"]["leaseTransitions"] == 1
    # a comes back with a stale resourceVersion: refused, reads, sees b, does not lead.
    assert not await a.try_acquire_or_renew()
    assert not await a.try_acquire_or_renew()
    assert not a.leading
    assert b.leading


async def test_release_hands_over_at_the_next_round() -> None:
    api, clock, lost = LeaseApi(), Clock(), []
    a, b = replica(api, clock, "a", lost), replica(api, clock, "b", lost)
    assert await a.try_acquire_or_renew()
    assert not await b.try_acquire_or_renew()
    await a.release()
    assert api.holder == ""
    assert await b.try_acquire_or_renew()  # no wait for the lease duration


async def test_a_leader_that_cannot_renew_stops_before_a_standby_may_take_over() -> None:
    api, lost = LeaseApi(), []
    fast = LeaseConfig(NS, "lease", "a", duration_s=0.4, renew_deadline_s=0.25, retry_period_s=0.05)
    a = Leadership(api, fast, on_lost=lambda: lost.append("a"), clock=time.monotonic)  # type: ignore[arg-type]
    await a.acquire()
    a.start_renewing()
    await asyncio.sleep(0.2)
    assert lost == []
    assert api.holder == "a"
    api.down = True
    went_down = time.monotonic()
    while not lost:
        await asyncio.sleep(0.01)
        assert time.monotonic() - went_down < 2
    stopped_after = time.monotonic() - went_down
    assert stopped_after < fast.duration_s  # before any standby could take the Lease
    assert lost == ["a"]
    await a.release()


def test_settings_refuse_timings_that_allow_two_leaders() -> None:
    with pytest.raises(ValueError, match="lease_retry_period_s < lease_renew_deadline_s"):
        OperatorSettings(lease_duration_s=5, lease_renew_deadline_s=6)
    with pytest.raises(ValueError, match="lease_retry_period_s < lease_renew_deadline_s"):
        OperatorSettings(lease_retry_period_s=8, lease_renew_deadline_s=7)
    OperatorSettings(lease_duration_s=15, lease_renew_deadline_s=10, lease_retry_period_s=2)


def test_lease_identity_and_namespace_from_settings() -> None:
    named = LeaseConfig.from_settings(
        OperatorSettings(leader_election_namespace="ops", identity="pod-1")
    )
    assert (named.namespace, named.name, named.identity) == (
        "ops",
        "modelservice-operator",
        "pod-1",
    )
    generated = {
        LeaseConfig.from_settings(OperatorSettings(leader_election_namespace="ops")).identity
        for _ in range(3)
    }
    assert len(generated) == 3  # two replicas on one host never share an identity
