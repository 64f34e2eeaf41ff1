"""What every provider's webhook verifier (server/webhook_fal.py, server/webhook_standard.py) shares."""

from __future__ import annotations

from dataclasses import dataclass


class WebhookRefused(Exception):
    """A webhook call whose signature does not hold; the message says why (for the log, never the caller)."""


@dataclass(frozen=True, slots=True)
class Delivery:
    """A verified webhook call: the provider's request it is about (None: the body names none), and what tells a
    repeated delivery apart."""

    request_id: str | None
    # Equal for the same delivery sent twice (a replay, or a retry of one we already handled).
    key: str


def check_timestamp(raw: str, *, now: float, tolerance: float) -> int:
    """Unix seconds within ``tolerance`` of ``now`` either way (an old call replayed later is refused); returns it."""
    if not raw.isascii() or not raw.isdigit() or len(raw) > 12:
        raise WebhookRefused("the timestamp is not Unix seconds")
    value = int(raw)
    if abs(now - value) > tolerance:
        raise WebhookRefused(f"the timestamp is more than {tolerance:g} s from now")
    return value
