"""The retry policy: exponential, capped, jittered, Retry-After as a floor, per object."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from modelservice_operator.backoff import (
    RETRY_AFTER_CAP_S,
    Backoff,
    BackoffPolicy,
    parse_retry_after,
)

pytestmark = pytest.mark.unit


def test_ceilings_double_from_base_up_to_the_cap() -> None:
    policy = BackoffPolicy(base_s=1, max_s=60)
    assert [policy.ceiling(n) for n in range(1, 9)] == [1, 2, 4, 8, 16, 32, 60, 60]
    assert policy.ceiling(0) == 1  # no failure yet reads as the first
    assert policy.ceiling(100_000) == 60  # no overflow after a long outage


def test_jitter_shortens_a_delay_by_at_most_its_fraction() -> None:
    policy = BackoffPolicy(base_s=1, max_s=60, jitter=0.5)
    assert policy.delay(4, rand=lambda: 0.0) == 8
    assert policy.delay(4, rand=lambda: 1.0) == 4
    assert policy.delay(4, rand=lambda: 0.5) == 6
    unjittered = BackoffPolicy(base_s=1, max_s=60, jitter=0)
    assert unjittered.delay(3, rand=lambda: 0.9) == 4


def test_real_jitter_spreads_objects_that_failed_together() -> None:
    policy = BackoffPolicy(base_s=1, max_s=60)
    delays = {round(policy.delay(5), 6) for _ in range(50)}
    assert len(delays) > 40
    assert all(8 <= d <= 16 for d in delays)


def test_retry_after_is_a_floor_with_spread_above_it() -> None:
    policy = BackoffPolicy(base_s=1, max_s=60, jitter=0.5)
    # First failure: the exponential part is 1 s, the server asked for 5 s.
    assert policy.delay(1, retry_after=5, rand=lambda: 0.0) == 5
    assert policy.delay(1, retry_after=5, rand=lambda: 1.0) == 7.5
    # A long exponential delay is not shortened by a short Retry-After.
    assert policy.delay(7, retry_after=2, rand=lambda: 0.0) == 60
    # Absurd values are capped; zero or negative means no advice.
    assert policy.delay(1, retry_after=1e9, rand=lambda: 0.0) == RETRY_AFTER_CAP_S
    assert policy.delay(1, retry_after=0, rand=lambda: 0.0) == 1


@pytest.mark.parametrize(
    "kwargs",
    [{"base_s": 0}, {"base_s": 5, "max_s": 1}, {"factor": 0.5}, {"jitter": 1.5}],
)
def test_nonsense_policies_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=r"invalid backoff policy|not a fraction"):
        BackoffPolicy(**kwargs)


def test_failures_are_counted_per_object_and_reset_on_success() -> None:
    backoff: Backoff[str] = Backoff(BackoffPolicy(base_s=1, max_s=60, jitter=0), rand=lambda: 0)
    assert [backoff.failed("broken") for _ in range(4)] == [1, 2, 4, 8]
    assert backoff.failed("other") == 1  # another object starts from the bottom
    backoff.succeeded("broken")
    assert backoff.failures("broken") == 0
    assert backoff.failed("broken") == 1
    assert len(backoff) == 2


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("3", 3.0),
        (" 1.5 ", 1.5),
        ("-4", 0.0),
        ("Tue, 01 Dec 2026 03:00:10 GMT", 10.0),
        ("", None),
        (None, None),
        ("soon", None),
        ("nan", None),
    ],
)
def test_retry_after_header_forms(header: str | None, seconds: float | None) -> None:
    now = datetime(2026, 12, 1, 3, 0, 0, tzinfo=UTC)
    assert parse_retry_after(header, now=now) == seconds
