"""Webhook signers the tests make: fal's Ed25519 (keys of the tests' own, published as a JWKS) and Standard Webhooks.

    fal = FalSigner.new("k1")              # fal.public_jwk goes in a JwksServer; fal.headers(request_id, body)
    replicate = replicate_signer()         # a fresh whsec_ secret; replicate.headers(message_id, body)
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from standardwebhooks import Webhook


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class FalSigner:
    """What fal signs webhooks with: an Ed25519 key (its public half in fal's JWKS) and the account's user id."""

    kid: str
    private: Ed25519PrivateKey = field(repr=False)
    user_id: str = "fake-fal-user"

    @classmethod
    def new(cls, kid: str, user_id: str = "fake-fal-user") -> FalSigner:
        return cls(kid, Ed25519PrivateKey.generate(), user_id)

    @property
    def public_jwk(self) -> dict[str, Any]:
        """As fal publishes it: kty OKP, crv Ed25519, x (base64url), kid."""
        raw = self.private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return {"kty": "OKP", "crv": "Ed25519", "x": _b64url(raw), "kid": self.kid, "use": "sig", "alg": "EdDSA"}

    def headers(self, request_id: str, body: bytes, *, timestamp: int | None = None) -> dict[str, str]:
        """fal's four headers: the signature is hex Ed25519 over request id, user id, timestamp, sha256(body)."""
        stamp = str(int(time.time()) if timestamp is None else timestamp)
        message = "\n".join((request_id, self.user_id, stamp, hashlib.sha256(body).hexdigest())).encode()
        return {
            "x-fal-webhook-request-id": request_id,
            "x-fal-webhook-user-id": self.user_id,
            "x-fal-webhook-timestamp": stamp,
            "x-fal-webhook-signature": self.private.sign(message).hex(),
        }


@dataclass
class StandardSigner:
    """A Standard Webhooks sender (Replicate's webhooks), signing with the spec's reference implementation."""

    secret: str = field(repr=False)

    def headers(self, message_id: str, body: bytes, *, timestamp: int | None = None) -> dict[str, str]:
        stamp = int(time.time()) if timestamp is None else timestamp
        signature = Webhook(self.secret).sign(message_id, datetime.fromtimestamp(stamp, UTC), body.decode())
        return {"webhook-id": message_id, "webhook-timestamp": str(stamp), "webhook-signature": signature}


def replicate_signer() -> StandardSigner:
    """A fresh ``whsec_`` secret, as Replicate hands one out (24 random bytes, base64)."""
    return StandardSigner("whsec_" + base64.b64encode(secrets.token_bytes(24)).decode())


def fal_body(request_id: str, *, image_url: str = "http://127.0.0.1:9/never-served.png") -> bytes:
    """A fal completion call's body. Its image URL is never served: a worker that trusted it would fail."""
    return orjson.dumps(
        {
            "request_id": request_id,
            "gateway_request_id": request_id,
            "status": "OK",
            "payload": {"images": [{"url": image_url, "content_type": "image/png"}], "seed": 1},
        }
    )
