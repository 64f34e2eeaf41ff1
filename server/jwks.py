"""The public keys a token issuer signs with, from its JWKS (RFC 7517): read from a file, or fetched and cached.

Supabase (and most identity providers) publish their signing keys at a URL;
tokens name their key by ``kid``. ``FetchedKeys`` fetches that document with
httpx on the event loop (a request never blocks it), keeps the keys, and
fetches again in the background once they are older than the document's
``Cache-Control: max-age`` (else ``JWT_JWKS_CACHE_SECONDS``), and at once
when a token names a ``kid`` it does not know (a rotation), but never more
often than every ``JWT_JWKS_MIN_REFRESH_SECONDS``: tokens with made-up kids
cannot make us hammer the issuer. A failed fetch (issuer down, an error
status, a document with no usable key) keeps the keys we have; a token whose
key is not among them is refused as any bad token is (401), never a 500.

Only RS256 keys (RSA, 2048 bits or more) and ES256 keys (EC P-256), public
and for signing, are kept; HS256 is verified with ``JWT_SECRET`` only, never
with a key from a JWKS (server/auth.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import httpx
import orjson
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, EllipticCurvePublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from jwt import PyJWK, PyJWTError

logger = logging.getLogger(__name__)

RS256 = "RS256"
ES256 = "ES256"
# The asymmetric algorithms accepted, and the key type (kty) each must have.
KEY_TYPES = {RS256: "RSA", ES256: "EC"}
MIN_RSA_BITS = 2048
# A JWKS holds a few keys (~1 KB); a larger answer is refused as it arrives.
MAX_JWKS_BYTES = 256 * 1024
# Cache-Control max-age is followed within these bounds (a day at most, so a removed key goes within a day).
MAX_CACHE_SECONDS = 24 * 3600
_MAX_AGE = re.compile(r"(?:^|,)\s*max-age\s*=\s*\"?(\d+)\"?\s*(?:,|$)", re.IGNORECASE)


class JwksError(Exception):
    """A JWKS document or its fetch is unusable; the message says why."""


@dataclass(frozen=True, slots=True)
class KeySet:
    """The usable keys of one JWKS document, by ``kid``."""

    keys: Mapping[str, PyJWK]
    # Why the other entries were left out ("kid 'x': ..."), for the log.
    skipped: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class JwksConfig:
    """Where the keys come from (README: Authentication): a URL (``JWT_JWKS_URL``) or a file read at start."""

    url: str | None = None
    # JWT_JWKS_FILE, parsed by Settings.from_environ: a bad file stops the start, not the first request.
    keys: KeySet | None = None
    # How long fetched keys are fresh when the answer has no Cache-Control max-age (jose's default: 10 min).
    cache_seconds: float = 600.0
    # The least time between two fetches, whatever asks (jose's cooldown: 30 s).
    min_refresh_seconds: float = 30.0
    # One fetch, connection to last byte; fixed (tests shorten it).
    fetch_timeout_seconds: float = 5.0


def jwks_entries(document: bytes | str) -> list[object]:
    """The ``keys`` list of a JWKS document, each entry still to be checked; ``JwksError`` when there is none."""
    try:
        data = orjson.loads(document)
    except orjson.JSONDecodeError:
        raise JwksError("the JWKS is not JSON") from None
    entries = data.get("keys") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise JwksError("the JWKS is not an object with a 'keys' list")
    return entries


def parse_jwks(document: bytes | str) -> KeySet:
    """The RS256 and ES256 public signing keys of a JWKS document; ``JwksError`` when it has none."""
    entries = jwks_entries(document)
    keys: dict[str, PyJWK] = {}
    skipped: list[str] = []
    for entry in entries:
        kid = entry.get("kid") if isinstance(entry, dict) else None
        if not isinstance(entry, dict) or not isinstance(kid, str) or not kid:
            skipped.append("a key without a 'kid'")
            continue
        reason = _unusable(entry)
        if reason is None and kid in keys:
            reason = "a second key with this kid"
        if reason is not None:
            skipped.append(f"kid {kid!r}: {reason}")
            continue
        keys[kid] = PyJWK(entry)  # _unusable built it once already: it does not raise
    if not keys:
        raise JwksError("the JWKS has no usable RS256 or ES256 signing key" + "".join(f"; {s}" for s in skipped))
    return KeySet(keys, tuple(skipped))


def _unusable(entry: Mapping[str, object]) -> str | None:
    """Why a JWK may not verify our tokens, or None when it may."""
    if "d" in entry or entry.get("kty") == "oct":
        return "a private or symmetric key (a JWKS must publish public keys only)"
    if entry.get("use") not in (None, "sig"):
        return f"use is {entry.get('use')!r}, not 'sig'"
    try:
        jwk = PyJWK(dict(entry))
    except PyJWTError as error:
        return f"not a key pyjwt can use ({type(error).__name__})"
    algorithm = jwk.algorithm_name
    if KEY_TYPES.get(algorithm) != jwk.key_type:
        return f"algorithm {algorithm} with key type {jwk.key_type}: only RS256 (RSA) and ES256 (EC) are accepted"
    key = jwk.key
    if algorithm == RS256 and not (isinstance(key, RSAPublicKey) and key.key_size >= MIN_RSA_BITS):
        return f"not an RSA public key of at least {MIN_RSA_BITS} bits"
    if algorithm == ES256 and not (isinstance(key, EllipticCurvePublicKey) and isinstance(key.curve, SECP256R1)):
        return "not an EC P-256 public key"
    return None


def read_jwks_file(path: Path) -> KeySet:
    """JWT_JWKS_FILE's keys, read once at start."""
    try:
        document = path.read_bytes()
    except OSError as error:
        raise JwksError(f"cannot read {path}: {error.strerror or error}") from None
    return parse_jwks(document)


def max_age(cache_control: str | None) -> int | None:
    """The ``max-age`` of a Cache-Control value, if it has one."""
    match = _MAX_AGE.search(cache_control or "")
    return int(match.group(1)) if match else None


class SigningKeys(Protocol):
    """The asymmetric keys tokens may be signed with, by kid."""

    async def key(self, kid: str) -> PyJWK | None:
        """The key named ``kid``, or None when there is none (after a refresh, when one is allowed)."""
        ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...


class StaticKeys:
    """JWT_JWKS_FILE: the keys read at start, for good."""

    def __init__(self, keys: KeySet) -> None:
        self.keys = keys.keys

    async def key(self, kid: str) -> PyJWK | None:
        return self.keys.get(kid)

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None


class FetchedKeys:
    """JWT_JWKS_URL: the keys fetched from the issuer, cached and refreshed (see the module's docstring)."""

    def __init__(
        self,
        url: str,
        *,
        cache_seconds: float,
        min_refresh_seconds: float,
        fetch_timeout_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        parse: Callable[[bytes], KeySet] = parse_jwks,
    ) -> None:
        self.url = url
        # Which keys of the document are kept: token keys here; fal's webhook keys (Ed25519) in server/webhook_fal.py.
        self.parse = parse
        self.cache_seconds = cache_seconds
        self.min_refresh_seconds = min_refresh_seconds
        self.fetch_timeout_seconds = fetch_timeout_seconds
        self.clock = clock
        self.keys: Mapping[str, PyJWK] = {}
        # Monotonic times: until when the keys are fresh, and when the latest fetch began (whatever its outcome).
        self.fresh_until = -math.inf
        self.last_attempt = -math.inf
        self._client: httpx.AsyncClient | None = None
        self._fetch: asyncio.Task[None] | None = None

    @classmethod
    def of(cls, config: JwksConfig, *, clock: Callable[[], float] = time.monotonic) -> FetchedKeys:
        if config.url is None:
            raise ValueError("FetchedKeys needs JwksConfig.url")
        return cls(
            config.url,
            cache_seconds=config.cache_seconds,
            min_refresh_seconds=config.min_refresh_seconds,
            fetch_timeout_seconds=config.fetch_timeout_seconds,
            clock=clock,
        )

    async def start(self) -> None:
        """Fetch once before serving; a failure is logged and tokens are refused until a fetch succeeds."""
        await self.refresh()

    async def close(self) -> None:
        if self._fetch is not None:
            self._fetch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._fetch
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def key(self, kid: str) -> PyJWK | None:
        now = self.clock()
        key = self.keys.get(kid)
        if key is not None:
            if now >= self.fresh_until and self._may_fetch(now):
                self._begin_fetch()  # in the background: this token goes on with the key we have
            return key
        if self._fetch is None and now - self.last_attempt < self.min_refresh_seconds:
            return None  # fetched a moment ago: a kid unknown then is unknown now
        await self.refresh()
        return self.keys.get(kid)

    async def current(self) -> Mapping[str, PyJWK]:
        """Every key we have, for a signature that names none: fetched first when there are none yet (at most
        every ``min_refresh_seconds``), and fetched again in the background once they are stale."""
        now = self.clock()
        if not self.keys:
            await self.refresh_if_allowed()
        elif now >= self.fresh_until and self._may_fetch(now):
            self._begin_fetch()
        return self.keys

    async def refresh_if_allowed(self) -> bool:
        """Fetch again (or join the fetch under way) unless one began less than ``min_refresh_seconds`` ago;
        True when a fetch ran, whatever its outcome. A signature no key verifies asks this: a rotation."""
        if self._fetch is None and not self._may_fetch(self.clock()):
            return False
        await self.refresh()
        return True

    async def refresh(self) -> None:
        """Fetch now, or join the fetch under way."""
        task = self._fetch or self._begin_fetch()
        await asyncio.shield(task)  # a request cancelled while it waits leaves the fetch to the others

    def _may_fetch(self, now: float) -> bool:
        return self._fetch is None and now - self.last_attempt >= self.min_refresh_seconds

    def _begin_fetch(self) -> asyncio.Task[None]:
        self.last_attempt = self.clock()
        task = asyncio.get_running_loop().create_task(self._fetch_keys(), name="jwks fetch")
        self._fetch = task
        task.add_done_callback(self._fetch_done)
        return task

    def _fetch_done(self, task: asyncio.Task[None]) -> None:
        if self._fetch is task:
            self._fetch = None

    async def _fetch_keys(self) -> None:
        """One fetch; on any failure the keys we have stay, and the next attempt waits for the minimum interval."""
        try:
            async with asyncio.timeout(self.fetch_timeout_seconds):
                document, cache_control = await self._get()
            found = self.parse(document)
        except (httpx.HTTPError, JwksError, TimeoutError) as error:
            reason = "timed out" if isinstance(error, TimeoutError) else str(error) or type(error).__name__
            logger.warning(
                "JWKS fetch from %s failed (%s); keeping %d cached key(s)", self.url, reason, len(self.keys)
            )
            return
        except Exception:  # a fault of ours: logged whole, and still never a failed request
            logger.exception("JWKS fetch from %s failed; keeping %d cached key(s)", self.url, len(self.keys))
            return
        ttl = max_age(cache_control)
        ttl_seconds = self.cache_seconds if ttl is None else min(max(ttl, self.min_refresh_seconds), MAX_CACHE_SECONDS)
        self.fresh_until = self.clock() + ttl_seconds
        if found.keys.keys() != self.keys.keys():
            logger.info(
                "JWKS from %s: key ids %s (were %s)", self.url, sorted(found.keys), sorted(self.keys) or "none"
            )
        for reason in found.skipped:
            logger.debug("JWKS from %s: left out %s", self.url, reason)
        self.keys = found.keys

    async def _get(self) -> tuple[bytes, str | None]:
        if self._client is None:
            # No redirects: the keys come from the URL configured, over the scheme configured.
            self._client = httpx.AsyncClient(follow_redirects=False, headers={"accept": "application/json"})
        async with self._client.stream("GET", self.url) as response:
            if response.status_code != 200:
                raise JwksError(f"the JWKS URL answered HTTP {response.status_code}")
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > MAX_JWKS_BYTES:
                    raise JwksError(f"the JWKS is larger than {MAX_JWKS_BYTES} bytes")
            return bytes(body), response.headers.get("cache-control")


def signing_keys(config: JwksConfig | None) -> SigningKeys | None:
    """The keys a JwksConfig names: fetched from its URL, or those of its file; None without a JWKS."""
    if config is None:
        return None
    if config.url is not None:
        return FetchedKeys.of(config)
    if config.keys is not None:
        return StaticKeys(config.keys)
    return None
