"""Supabase-style object tokens: an HS256 JWT ``{url: "bucket/path", iat, exp}``.

Hand-rolled rather than pyjwt because a page of 100 images is signed per
request: a keyed HMAC copied from a prepared state costs ~1 us, pyjwt ~20 us.
Verification is strict: fixed header, constant-time compare, integer times,
no ``iat`` in the future beyond the clock-skew leeway.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

import orjson

# A token issued (by another server process, whose clock may run ahead) up to this many seconds in the future
# is accepted; later ones are refused. Bearer tokens (server/auth.py) use this same leeway for their exp and iat.
LEEWAY_SECONDS = 30

_HEADER = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').rstrip(b"=")
_PREFIX = _HEADER + b"."


class InvalidToken(Exception):
    """The token cannot be trusted; ``error`` is the Supabase error name clients see."""

    def __init__(self, message: str, *, error: str = "InvalidJWT") -> None:
        super().__init__(message)
        self.error = error


def derive_key(secret: str) -> bytes:
    """A key of its own for object URLs, so an object token is never an auth token nor the reverse."""
    return hmac.new(secret.encode(), b"portraits object url signing v1", hashlib.sha256).digest()


class ObjectTokens:
    def __init__(self, key: bytes) -> None:
        self._mac = hmac.new(key, digestmod=hashlib.sha256)

    def _signature(self, signing_input: bytes) -> bytes:
        mac = self._mac.copy()
        mac.update(signing_input)
        return mac.digest()

    def encode(self, key: str, *, issued_at: int, expires_at: int) -> str:
        payload = _b64(orjson.dumps({"url": key, "iat": issued_at, "exp": expires_at}))
        signing_input = _PREFIX + payload
        return (signing_input + b"." + _b64(self._signature(signing_input))).decode("ascii")

    def verify(self, token: str, *, key: str, now: float) -> int:
        """The token's expiry when it is valid for ``key`` at ``now``; InvalidToken otherwise."""
        if not token:
            raise InvalidToken("jwt must be provided")
        try:
            raw = token.encode("ascii")
        except UnicodeEncodeError:
            raise InvalidToken("jwt malformed") from None
        parts = raw.split(b".")
        if len(parts) != 3:
            raise InvalidToken("jwt malformed")
        header, payload, signature = parts
        if header != _HEADER:
            raise InvalidToken("invalid algorithm")
        try:
            given = _unb64(signature)
        except (binascii.Error, ValueError):
            raise InvalidToken("jwt malformed") from None
        if _b64(given) != signature:  # unused trailing bits flipped: same bytes, other token
            raise InvalidToken("invalid signature")
        if not hmac.compare_digest(given, self._signature(header + b"." + payload)):
            raise InvalidToken("invalid signature")
        try:
            claims = orjson.loads(_unb64(payload))
        except (binascii.Error, ValueError):
            raise InvalidToken("jwt malformed") from None
        if not isinstance(claims, dict):
            raise InvalidToken("jwt malformed")
        issued_at, expires_at = claims.get("iat"), claims.get("exp")
        if type(issued_at) is not int or type(expires_at) is not int:
            raise InvalidToken("jwt malformed")
        if issued_at > now + LEEWAY_SECONDS:
            raise InvalidToken("jwt issued in the future")
        if expires_at <= now:
            raise InvalidToken("jwt expired")
        if claims.get("url") != key:
            raise InvalidToken("The url do not match the signature", error="InvalidSignature")
        return expires_at


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def _unb64(data: bytes) -> bytes:
    # validate=True: a character outside the alphabet is tampering, not noise to skip.
    return base64.b64decode(data + b"=" * (-len(data) % 4), altchars=b"-_", validate=True)
