"""fal's webhook signature: Ed25519 over the request id, user id, timestamp and the body's SHA-256, keys from a JWKS.

fal signs every webhook call (its docs, "Verifying Your Webhook") with
headers ``X-Fal-Webhook-Request-Id``, ``-User-Id``, ``-Timestamp`` (Unix
seconds) and ``-Signature`` (hex). The signed message is those three values
and the hex SHA-256 of the raw body, joined by newlines. The public keys are
Ed25519 (OKP) JWKs at fal's JWKS URL (``FAL_WEBHOOK_JWKS_URL``); a call names
no key, so each key is tried. The keys are fetched with the token JWKS's
fetcher (server/jwks.py: cached, refreshed when stale), and fetched again when
no key verifies a signature (a rotation), at most every
``FAL_WEBHOOK_JWKS_MIN_REFRESH_SECONDS``, so forged calls cannot make us
hammer fal. Ed25519 is cryptography's, through pyjwt's JWK parsing.

fal signs every customer's webhooks with the same keys: a valid signature
says "fal sent this", not "this is our request". That is why a webhook only
wakes the worker that runs the request (server/webhooks.py), which then asks
fal with our key.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from jwt import PyJWK, PyJWTError

from server.jwks import MAX_CACHE_SECONDS, FetchedKeys, JwksError, KeySet, jwks_entries
from server.webhook_delivery import Delivery, WebhookRefused, check_timestamp

DEFAULT_JWKS_URL = "https://rest.alpha.fal.ai/.well-known/jwks.json"
REQUEST_ID = "x-fal-webhook-request-id"
USER_ID = "x-fal-webhook-user-id"
TIMESTAMP = "x-fal-webhook-timestamp"
SIGNATURE = "x-fal-webhook-signature"
SIGNATURE_BYTES = 64
# A header value longer than this is refused before any work (a request id is a UUID).
MAX_HEADER_CHARS = 256


def parse_ed25519_jwks(document: bytes) -> KeySet:
    """The Ed25519 public keys (kty OKP, crv Ed25519) of a JWKS, by kid (or position when a key has none)."""
    entries = jwks_entries(document)
    keys: dict[str, PyJWK] = {}
    skipped: list[str] = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            skipped.append(f"entry {index}: not an object")
            continue
        kid = entry.get("kid")
        name = kid if isinstance(kid, str) and kid else f"#{index}"
        if entry.get("kty") != "OKP" or entry.get("crv") != "Ed25519" or "d" in entry:
            skipped.append(f"{name}: not an Ed25519 public key")
            continue
        try:
            jwk = PyJWK(entry, algorithm="EdDSA")
        except PyJWTError as error:
            skipped.append(f"{name}: not a key pyjwt can use ({type(error).__name__})")
            continue
        if not isinstance(jwk.key, Ed25519PublicKey):
            skipped.append(f"{name}: not an Ed25519 public key")
            continue
        keys[name] = jwk
    if not keys:
        raise JwksError("the JWKS has no Ed25519 public key" + "".join(f"; {s}" for s in skipped))
    return KeySet(keys, tuple(skipped))


def fal_keys(url: str, *, min_refresh_seconds: float, fetch_timeout_seconds: float = 5.0) -> FetchedKeys:
    """fal's webhook keys, fetched from ``url``; kept a day (fal's advice) unless its Cache-Control says less."""
    return FetchedKeys(
        url,
        cache_seconds=MAX_CACHE_SECONDS,
        min_refresh_seconds=min_refresh_seconds,
        fetch_timeout_seconds=fetch_timeout_seconds,
        parse=parse_ed25519_jwks,
    )


def signed_message(request_id: str, user_id: str, timestamp: str, body: bytes) -> bytes:
    """What fal signs: the three header values and the body's hex SHA-256, one per line."""
    return "\n".join((request_id, user_id, timestamp, hashlib.sha256(body).hexdigest())).encode()


class FalWebhookVerifier:
    def __init__(
        self, keys: FetchedKeys, *, tolerance_seconds: float, clock: Callable[[], float] = time.time
    ) -> None:
        self.keys = keys
        self.tolerance_seconds = tolerance_seconds
        self.clock = clock

    async def verify(self, headers: Mapping[str, str], body: bytes) -> Delivery:
        """The call's request id when fal signed it within the tolerance; ``WebhookRefused`` otherwise."""
        request_id, user_id, timestamp, signature_hex = (
            headers.get(name, "") for name in (REQUEST_ID, USER_ID, TIMESTAMP, SIGNATURE)
        )
        if not (request_id and user_id and timestamp and signature_hex):
            raise WebhookRefused("a X-Fal-Webhook-* header is missing")
        if max(len(request_id), len(user_id), len(timestamp)) > MAX_HEADER_CHARS:
            raise WebhookRefused("a X-Fal-Webhook-* header is too long")
        check_timestamp(timestamp, now=self.clock(), tolerance=self.tolerance_seconds)
        try:
            signature = bytes.fromhex(signature_hex)
        except ValueError:
            raise WebhookRefused("the signature is not hex") from None
        if len(signature) != SIGNATURE_BYTES:
            raise WebhookRefused(f"the signature is not {SIGNATURE_BYTES} bytes")
        message = signed_message(request_id, user_id, timestamp, body)
        if not _verifies(await self.keys.current(), signature, message) and not (
            await self.keys.refresh_if_allowed() and _verifies(self.keys.keys, signature, message)
        ):
            raise WebhookRefused("no key of fal's JWKS verifies the signature")
        return Delivery(request_id=request_id, key=f"fal:{request_id}:{timestamp}:{signature_hex.lower()}")


def _verifies(keys: Mapping[str, PyJWK], signature: bytes, message: bytes) -> bool:
    for jwk in keys.values():
        key = jwk.key
        if not isinstance(key, Ed25519PublicKey):
            continue
        try:
            key.verify(signature, message)
        except InvalidSignature:
            continue
        return True
    return False
