"""Fetch a provider's result image: http(s) only, a few redirects, a hard size cap.

The URL comes from a third party, so nothing here trusts it: each hop is
checked, the body is read in chunks and dropped as soon as it grows past the
cap. httpx exceptions become ``DownloadError`` here and nowhere else. Whether
the bytes are really an image is another module's question.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

MAX_REDIRECTS = 3
REDIRECT_CODES = frozenset({301, 302, 303, 307, 308})
# 4xx answers that mean "later", not "never".
TRANSIENT_CODES = frozenset({408, 429})


class DownloadError(Exception):
    """The image could not be fetched; ``retryable`` says whether trying again later may help."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable


async def download_image(client: httpx.AsyncClient, url: str, *, max_bytes: int, timeout: float) -> bytes:
    """The body at ``url``, at most ``max_bytes`` long, within ``timeout`` seconds overall.

    ``client`` must not carry credentials as default headers: the URL is not ours.
    """
    try:
        async with asyncio.timeout(timeout):
            return await _fetch(client, url, max_bytes=max_bytes, timeout=timeout)
    except TimeoutError as exc:
        raise DownloadError(f"download of {url} timed out after {timeout:g} s", retryable=True) from exc


async def _fetch(client: httpx.AsyncClient, url: str, *, max_bytes: int, timeout: float) -> bytes:
    current = _checked(url)
    for _ in range(MAX_REDIRECTS + 1):
        with _wrapped(url):
            request = client.build_request("GET", current, timeout=timeout)
            response = await client.send(request, stream=True, follow_redirects=False)
            try:
                if response.status_code in REDIRECT_CODES:
                    location = response.headers.get("location")
                    if not location:
                        raise DownloadError(f"download of {url}: redirect without a Location", retryable=False)
                    current = _checked(str(response.url.join(location)))
                    continue
                _check_status(response, url)
                return await _read(response, url, max_bytes=max_bytes)
            finally:
                await response.aclose()
    raise DownloadError(f"download of {url} redirected more than {MAX_REDIRECTS} times", retryable=False)


async def _read(response: httpx.Response, url: str, *, max_bytes: int) -> bytes:
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise DownloadError(f"download of {url} refused: {declared} bytes, more than {max_bytes}", retryable=False)
    body = bytearray()
    # Decoded bytes are counted, so a small compressed body cannot inflate past the cap.
    async for chunk in response.aiter_bytes():
        if len(body) + len(chunk) > max_bytes:
            raise DownloadError(f"download of {url} refused: more than {max_bytes} bytes", retryable=False)
        body += chunk
    return bytes(body)


def _checked(url: str) -> httpx.URL:
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise DownloadError(f"not a URL: {url!r}", retryable=False) from exc
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise DownloadError(f"refusing to download {url!r}: only http(s) URLs are fetched", retryable=False)
    return parsed


def _check_status(response: httpx.Response, url: str) -> None:
    code = response.status_code
    if 200 <= code < 300:
        return
    raise DownloadError(f"download of {url} answered {code}", retryable=code >= 500 or code in TRANSIENT_CODES)


@contextmanager
def _wrapped(url: str) -> Iterator[None]:
    """httpx's exceptions, as DownloadError: network trouble is retryable, a bad request is not."""
    try:
        yield
    except httpx.TimeoutException as exc:
        raise DownloadError(f"download of {url} timed out", retryable=True) from exc
    except httpx.UnsupportedProtocol as exc:
        raise DownloadError(f"download of {url}: unsupported URL", retryable=False) from exc
    except httpx.TransportError as exc:
        raise DownloadError(f"download of {url} failed: {type(exc).__name__}: {exc}", retryable=True) from exc
    except (httpx.RequestError, httpx.InvalidURL) as exc:
        raise DownloadError(f"download of {url} failed: {type(exc).__name__}: {exc}", retryable=False) from exc
