"""One HTTP call to a remote provider: httpx's exceptions become ``ProviderError`` here and nowhere else, and the
answer must be a JSON object. fal and Replicate call through it; each says how its own refusals read (``refusal``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import httpx

from pipeline.providers.deadline import Deadline
from pipeline.providers.interface import ProviderError

# What of a provider's explanation (a refusal's body, a failure's reason, a malformed value) a message keeps.
DETAIL_LIMIT = 300


async def json_object(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    what: str,
    timeout: float,
    deadline: Deadline | None,
    headers: Mapping[str, str],
    refusal: Callable[[httpx.Response], ProviderError],
    json: dict[str, Any] | None = None,
    params: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The call's JSON object, or a ProviderError that says whether to retry (a timeout past ``deadline`` is its)."""
    try:
        response = await client.request(method, url, json=json, params=params, headers=headers, timeout=timeout)
    except httpx.TimeoutException as exc:
        if deadline is not None and deadline.remaining() <= 0:
            raise deadline.exceeded(what) from exc
        raise ProviderError(f"{what} timed out after {timeout:g} s", retryable=True) from exc
    except httpx.UnsupportedProtocol as exc:
        raise ProviderError(f"{what}: unsupported URL {url!r}", retryable=False) from exc
    except httpx.TransportError as exc:
        raise ProviderError(f"{what} failed: {type(exc).__name__}: {exc}", retryable=True) from exc
    except (httpx.RequestError, httpx.InvalidURL) as exc:
        raise ProviderError(f"{what} failed: {type(exc).__name__}: {exc}", retryable=False) from exc
    if not response.is_success:
        raise refusal(response)
    try:
        answer = response.json()
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        raise ProviderError(f"{what}: the answer is not a JSON object", retryable=False)
    return answer


def shortened(value: object) -> str:
    """``value`` for an error message or a log line: its text (``repr`` when not text), cut to ``DETAIL_LIMIT``."""
    text = value if isinstance(value, str) else ("" if value is None else repr(value))
    return text if len(text) <= DETAIL_LIMIT else f"{text[:DETAIL_LIMIT]}..."
