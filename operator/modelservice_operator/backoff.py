"""When to retry a ModelService whose reconcile failed: exponential backoff with jitter.

Pure: the policy computes delays from a failure count, an optional ``Retry-After`` and a
random number; :class:`Backoff` keeps the failure count per object so that one object that
keeps failing backs off alone while every other object is reconciled at once.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Generic, TypeVar

__all__ = ["Backoff", "BackoffPolicy", "parse_retry_after"]

K = TypeVar("K", bound=Hashable)

# A Retry-After beyond this is a server bug or a misread header, not advice to follow.
RETRY_AFTER_CAP_S = 600.0


@dataclass(frozen=True)
class BackoffPolicy:
    """Delays of 1, 2, 4, ... times ``base_s``, at most ``max_s``, each shortened by jitter.

    ``jitter`` is the fraction of a delay that is random: with 0.5 the n-th retry waits
    between half and all of ``base_s * factor**(n-1)`` ("equal jitter"), so objects that
    failed together do not retry together. A ``Retry-After`` is a floor: the retry waits at
    least that long, plus up to ``jitter`` of it again, so that many objects told the same
    Retry-After spread out instead of returning at the same instant.
    """

    base_s: float = 1.0
    max_s: float = 120.0
    factor: float = 2.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if self.base_s <= 0 or self.max_s < self.base_s or self.factor < 1:
            raise ValueError(f"invalid backoff policy {self}")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"jitter {self.jitter} is not a fraction")

    def ceiling(self, failures: int) -> float:
        """The un-jittered delay after ``failures`` consecutive failures (at least 1)."""
        try:
            raw = self.base_s * self.factor ** (max(failures, 1) - 1)
        except OverflowError:  # thousands of failures in a row
            return self.max_s
        return min(self.max_s, raw)

    def delay(
        self,
        failures: int,
        retry_after: float | None = None,
        rand: Callable[[], float] = random.random,
    ) -> float:
        """Seconds to wait before the next try after ``failures`` consecutive failures."""
        ceiling = self.ceiling(failures)
        wait = ceiling * (1 - self.jitter * rand())
        if retry_after is not None and retry_after > 0:
            floor = min(retry_after, RETRY_AFTER_CAP_S)
            wait = max(wait, floor * (1 + self.jitter * rand()))
        return wait


@dataclass
class Backoff(Generic[K]):
    """Consecutive failures per object, and the delay the policy gives the next retry."""

    policy: BackoffPolicy = field(default_factory=BackoffPolicy)
    rand: Callable[[], float] = random.random
    _failures: dict[K, int] = field(default_factory=dict)

    def failed(self, key: K, retry_after: float | None = None) -> float:
        """Count a failure of ``key``; return how long it waits before its next try."""
        failures = self._failures.get(key, 0) + 1
        self._failures[key] = failures
        return self.policy.delay(failures, retry_after, self.rand)

    def succeeded(self, key: K) -> None:
        """``key`` worked: its next failure starts from the shortest delay again."""
        self._failures.pop(key, None)

    def failures(self, key: K) -> int:
        """Consecutive failures of ``key`` so far."""
        return self._failures.get(key, 0)

    def __len__(self) -> int:
        return len(self._failures)


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds from an HTTP ``Retry-After`` header (delay-seconds or an HTTP-date)."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if seconds != seconds:  # NaN
        return None
    return max(0.0, seconds)
