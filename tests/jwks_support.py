"""Signing keys the tests make (RSA 2048 and EC P-256, with cryptography), and a JWKS served over real HTTP.

    keys = SigningKey.rsa("k1"), SigningKey.ec("k2")
    async with JwksServer.running([key.public_jwk for key in keys]) as issuer:
        ...  # JWT_JWKS_URL=issuer.url; issuer.requests counts fetches; issuer.keys / status / cache_control change it
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import orjson
import uvicorn
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.support import ServedUvicorn, free_port, serve_uvicorn

SUPABASE_ISSUER = "https://abcdefghijklmnopqrst.supabase.co/auth/v1"


@dataclass(frozen=True)
class SigningKey:
    """A private key of the tests' issuer, its ``kid`` and the JWK of its public half."""

    kid: str
    algorithm: str
    private: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

    @classmethod
    def rsa(cls, kid: str, bits: int = 2048) -> SigningKey:
        return cls(kid, "RS256", rsa.generate_private_key(public_exponent=65537, key_size=bits))

    @classmethod
    def ec(cls, kid: str, curve: ec.EllipticCurve | None = None) -> SigningKey:
        return cls(kid, "ES256", ec.generate_private_key(curve or ec.SECP256R1()))

    @property
    def public_jwk(self) -> dict[str, Any]:
        """The public key as an issuer publishes it: kty, its parameters, kid, alg, use."""
        public = self.private.public_key()
        jwk = (
            RSAAlgorithm.to_jwk(public, as_dict=True)
            if isinstance(public, rsa.RSAPublicKey)
            else ECAlgorithm.to_jwk(public, as_dict=True)
        )
        return {**jwk, "kid": self.kid, "alg": self.algorithm, "use": "sig"}

    @property
    def public_pem(self) -> bytes:
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def sign(self, claims: dict[str, Any], *, kid: str | None = None, algorithm: str | None = None) -> str:
        """A token of these claims signed with this key; ``kid``/``algorithm`` say otherwise in the header."""
        return jwt.encode(
            claims, self.private, algorithm=algorithm or self.algorithm, headers={"kid": kid or self.kid}
        )


def user_claims(
    user: uuid.UUID | None = None, *, ttl: timedelta = timedelta(hours=1), **overrides: object
) -> dict[str, Any]:
    """Claims of a Supabase access token (None overrides drop a claim)."""
    now = datetime.now(UTC)
    claims: dict[str, Any] = {
        "sub": str(user or uuid.uuid4()),
        "role": "authenticated",
        "aud": "authenticated",
        "iss": SUPABASE_ISSUER,
        "iat": int(now.timestamp()),
        "exp": int((now + ttl).timestamp()),
    }
    claims.update(overrides)
    return {key: value for key, value in claims.items() if value is not None}


def anon_key_claims(**overrides: object) -> dict[str, Any]:
    """The claims of a Supabase project's anon key: no sub, no aud, iss 'supabase', a far exp."""
    claims: dict[str, Any] = {
        "iss": "supabase",
        "ref": "abcdefghijklmnopqrst",
        "role": "anon",
        "iat": int(datetime.now(UTC).timestamp()),
        "exp": int((datetime.now(UTC) + timedelta(days=3650)).timestamp()),
    }
    claims.update(overrides)
    return {key: value for key, value in claims.items() if value is not None}


def hs256_with(secret: bytes, claims: dict[str, Any], headers: dict[str, Any]) -> str:
    """An HS256 token made by hand (pyjwt refuses a PEM public key as an HMAC secret, as it should)."""

    def segment(data: bytes) -> bytes:
        return base64.urlsafe_b64encode(data).rstrip(b"=")

    signing_input = segment(orjson.dumps({"alg": "HS256", "typ": "JWT", **headers})) + b"." + segment(
        orjson.dumps(claims)
    )
    signature = hmac.new(secret, signing_input, hashlib.sha256).digest()
    return (signing_input + b"." + segment(signature)).decode()


@dataclass
class JwksServer:
    """A JWKS endpoint over real HTTP (Starlette under uvicorn, in the test's event loop), changeable live."""

    keys: list[dict[str, Any]]
    status: int = 200
    cache_control: str | None = None
    # Seconds each answer waits before it is sent (a slow issuer).
    delay: float = 0.0
    body: bytes | None = None  # sent instead of the keys when set (garbage, or too much)
    requests: int = 0
    served: ServedUvicorn | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        assert self.served is not None
        return self.served.url("/auth/v1/.well-known/jwks.json", scheme="http")

    async def jwks(self, request: Request) -> Response:
        self.requests += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        headers = {"cache-control": self.cache_control} if self.cache_control else {}
        body = self.body if self.body is not None else orjson.dumps({"keys": self.keys})
        return Response(body, status_code=self.status, media_type="application/json", headers=headers)

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/auth/v1/.well-known/jwks.json", self.jwks)])

    @classmethod
    @asynccontextmanager
    async def running(cls, keys: list[dict[str, Any]], **options: Any) -> AsyncIterator[JwksServer]:
        server = cls(keys, **options)
        config = uvicorn.Config(server.app(), host="127.0.0.1", port=free_port(), log_level="warning", lifespan="off")
        async with serve_uvicorn(config) as served:
            server.served = served
            yield server

    async def stop(self) -> None:
        """The issuer goes down: its port refuses connections from now on."""
        assert self.served is not None
        await self.served.stop()
