"""When and how long to wait before retrying a failed HTTP call. Pure functions, tested alone."""

from __future__ import annotations

import random
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime

INITIAL_BACKOFF_S = 0.5
MAX_BACKOFF_S = 8.0
MAX_RETRY_AFTER_S = 120.0
JITTER = 0.25  # up to a quarter of each delay is random, so clients that failed together spread out

def is_retryable_status(status: int) -> bool:
    """Only these can succeed when sent again: timeouts, rate limits and server-side failures."""
    return status in (408, 429) or 500 <= status < 600


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header, given as seconds or as an HTTP date; None if
    absent or unreadable."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = (when - (now or datetime.now(timezone.utc))).total_seconds()
        return max(seconds, 0.0)
    return seconds if seconds >= 0 else None


def backoff_delay(retry: int, retry_after: float | None = None, rng: random.Random | None = None) -> float:
    """Delay before retry number ``retry`` (0-based): the server's Retry-After if it gave one
    (capped), else exponential backoff with jitter."""
    if retry_after is not None:
        return min(retry_after, MAX_RETRY_AFTER_S)
    base = min(MAX_BACKOFF_S, INITIAL_BACKOFF_S * 2**retry)
    return base * (1.0 - JITTER * (rng or random).random())
