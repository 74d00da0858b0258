from __future__ import annotations

import random

import pytest

from llmxmr.retry import (
    MAX_BACKOFF_S,
    MAX_RETRY_AFTER_S,
    backoff_delay,
    is_retryable_status,
    parse_retry_after,
)


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504, 599])
def test_retryable(status):
    assert is_retryable_status(status)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422])
def test_not_retryable(status):
    assert not is_retryable_status(status)


def test_backoff_grows_exponentially_with_bounded_jitter():
    rng = random.Random(0)
    delays = [backoff_delay(retry, rng=rng) for retry in range(8)]
    for retry, delay in enumerate(delays):
        base = min(MAX_BACKOFF_S, 0.5 * 2**retry)
        assert 0.75 * base <= delay <= base


def test_retry_after_wins_and_is_capped():
    assert backoff_delay(0, retry_after=3.0) == 3.0
    assert backoff_delay(0, retry_after=10_000) == MAX_RETRY_AFTER_S


@pytest.mark.parametrize(("header", "expected"), [("2", 2.0), (" 1.5 ", 1.5), (None, None), ("soon", None), ("-1", None)])
def test_parse_retry_after(header, expected):
    assert parse_retry_after(header) == expected


def test_retry_after_as_http_date():
    from datetime import datetime, timezone

    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=timezone.utc)
    assert parse_retry_after("Thu, 01 Jan 2026 12:00:30 GMT", now=now) == 30.0
    assert parse_retry_after("Thu, 01 Jan 2026 11:00:00 GMT", now=now) == 0.0
