"""Fetch a provider's result image: http(s) only, public addresses only, a few redirects, a hard size cap.

The URL comes from a third party, so nothing here trusts it: each hop is
checked, its host resolved and every address it resolves to checked
(``address_policy``), and the request then goes to the checked address
(the URL's host kept in ``Host`` and, for https, in the TLS server name
through httpx's ``sni_hostname`` extension), so a second DNS answer cannot
send it elsewhere. The body is read in chunks and dropped as soon as it
grows past the cap. httpx exceptions become ``DownloadError`` here and
nowhere else. Whether the bytes are really an image is another module's
question.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from pipeline.address_policy import PUBLIC_ONLY, AddressPolicy, AddressRefused, resolve_allowed

MAX_REDIRECTS = 3
REDIRECT_CODES = frozenset({301, 302, 303, 307, 308})
# 4xx answers that mean "later", not "never".
TRANSIENT_CODES = frozenset({408, 429})


class DownloadError(Exception):
    """The image could not be fetched; ``retryable`` says whether trying again later may help."""

    def __init__(self, message: str, *, retryable: bool, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable
        self.status = status  # the HTTP status that refused it, if one did


def download_client(*, verify: ssl.SSLContext | bool = True) -> httpx.AsyncClient:
    """The client ``download_image`` needs: no redirects of its own, no credentials, no kept connections.

    Requests go to checked IP addresses; a kept TLS connection would be reused
    for another host name on the same address without its certificate being
    checked for that name.
    """
    return httpx.AsyncClient(
        follow_redirects=False, verify=verify, limits=httpx.Limits(max_keepalive_connections=0)
    )


async def download_image(
    client: httpx.AsyncClient,
    url: str,
    *,
    max_bytes: int,
    timeout: float,
    addresses: AddressPolicy = PUBLIC_ONLY,
) -> bytes:
    """The body at ``url``, at most ``max_bytes`` long, within ``timeout`` seconds overall.

    Every hop must lead to addresses ``addresses`` allows (public ones by default).
    ``client`` should come from ``download_client``.
    """
    try:
        async with asyncio.timeout(timeout):
            return await _fetch(client, url, max_bytes=max_bytes, timeout=timeout, addresses=addresses)
    except TimeoutError as exc:
        raise DownloadError(f"download of {url} timed out after {timeout:g} s", retryable=True) from exc


async def _fetch(
    client: httpx.AsyncClient, url: str, *, max_bytes: int, timeout: float, addresses: AddressPolicy
) -> bytes:
    current = _checked(url)
    for hop in range(MAX_REDIRECTS + 1):
        candidates = await _addresses_of(current, url, first=hop == 0, addresses=addresses)
        response = await _send(client, current, candidates, url=url, timeout=timeout)
        with _wrapped(url):
            try:
                if response.status_code in REDIRECT_CODES:
                    location = response.headers.get("location")
                    if not location:
                        raise DownloadError(f"download of {url}: redirect without a Location", retryable=False)
                    current = _checked(str(current.join(location)))
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


async def _addresses_of(current: httpx.URL, url: str, *, first: bool, addresses: AddressPolicy) -> list[str]:
    """The checked addresses to connect to for this hop; DownloadError when any may not be reached."""
    host = current.raw_host.decode("ascii")
    port = current.port or (443 if current.scheme == "https" else 80)
    try:
        return await resolve_allowed(host, port, addresses)
    except AddressRefused as exc:
        hop = "" if first else f"it redirects to {current}, and "
        raise DownloadError(
            f"download of {url} refused: {hop}{exc}; results are fetched from public addresses only", retryable=False
        ) from exc
    except (socket.gaierror, UnicodeError) as exc:  # UnicodeError: a label IDNA cannot encode
        raise DownloadError(f"download of {url} failed: cannot resolve {host}: {exc}", retryable=True) from exc


async def _send(
    client: httpx.AsyncClient, current: httpx.URL, candidates: list[str], *, url: str, timeout: float
) -> httpx.Response:
    """The response headers from the first checked address that accepts a connection, tried in order."""
    for index, address in enumerate(candidates):
        with _wrapped(url):
            try:
                request = _request_to(client, current, address, timeout=timeout)
                return await client.send(request, stream=True, follow_redirects=False)
            except httpx.ConnectError:
                if index == len(candidates) - 1:
                    raise
    raise DownloadError(f"download of {url} failed: no address to connect to", retryable=True)


def _request_to(client: httpx.AsyncClient, url: httpx.URL, address: str, *, timeout: float) -> httpx.Request:
    """GET ``url`` from ``address``: the URL's own host still names the site (Host) and the certificate (SNI)."""
    extensions = {"sni_hostname": url.raw_host.decode("ascii")} if url.scheme == "https" else None
    return client.build_request(
        "GET", url.copy_with(host=address), headers={"Host": url.netloc.decode("ascii")},
        extensions=extensions, timeout=timeout,
    )


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
    raise DownloadError(
        f"download of {url} answered {code}", retryable=code >= 500 or code in TRANSIENT_CODES, status=code
    )


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
