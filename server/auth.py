"""Bearer tokens as Supabase (and others) issue them: JWTs with ``sub`` = user id.

HS256 tokens are verified with ``JWT_SECRET``; RS256 and ES256 tokens with
the issuer's public key their ``kid`` names, from a JWKS (server/jwks.py).
The algorithm decides which of the two, and each key verifies only the one
algorithm it is for, so a token cannot pick how it is checked (an HS256
token is never checked against a public key). Verified once per request by
Starlette's ``AuthenticationMiddleware`` on the GraphQL route, and once per
websocket (server/app.py). A request without a token, or with a valid token
that names no user (Supabase's ``anon`` key: role ``anon``, or no ``sub``),
runs anonymously (only public fields answer); a request with a bad token is
refused as a whole with HTTP 401 and a GraphQL-shaped body, so a client
learns at once that its token must be refreshed (see the README,
"Authentication").
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import jwt
from starlette.authentication import AuthCredentials, AuthenticationBackend, AuthenticationError, BaseUser
from starlette.requests import HTTPConnection
from starlette.responses import Response

from observability.log_context import bind_user
from resolvers.viewer import Viewer
from server.json import json_response
from server.jwks import KEY_TYPES, JwksConfig, SigningKeys
from server.media_types import GRAPHQL_RESPONSE_JSON, response_media_type
from server.request_errors import request_extensions, response_content_type
from server.token_cache import Verified, VerifiedTokens
from storage.objects.tokens import LEEWAY_SECONDS  # one clock-skew rule for bearer and object tokens

ALGORITHM = "HS256"
AUDIENCE = "authenticated"
ROLE = "authenticated"
# Supabase's anon key, and any token of this role, is an anonymous caller.
ANON_ROLE = "anon"
# Supabase's access tokens are about 1 KB; a longer one is refused before it is decoded.
MAX_TOKEN_LENGTH = 8192


class TokenError(AuthenticationError):
    """Why a token was refused; the message is safe to show."""


@dataclass(frozen=True, slots=True)
class TokenSettings:
    """What a token must say besides its signature (README: Authentication)."""

    # JWT_AUDIENCE: a user's token must name it in ``aud``.
    audience: str = AUDIENCE
    # JWT_ISSUER: when set, a user's token must have exactly this ``iss``.
    issuer: str | None = None
    # JWT_JWKS_URL / JWT_JWKS_FILE: where RS256 and ES256 keys come from; None: HS256 only.
    jwks: JwksConfig | None = None


def issue_token(secret: str, user_id: UUID, *, ttl: timedelta, now: datetime | None = None) -> str:
    """A Supabase-shaped access token, for development and tests (`portraits token`)."""
    issued = now or datetime.now(UTC)
    claims = {
        "sub": str(user_id),
        "role": ROLE,
        "aud": AUDIENCE,
        "iat": int(issued.timestamp()),
        "exp": int((issued + ttl).timestamp()),
    }
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


class TokenVerifier:
    """Checks bearer tokens: the key their algorithm and ``kid`` name, expiry, audience, issuer, role.

    ``secret`` verifies HS256 tokens (None: they are refused); ``keys``
    RS256 and ES256 ones (None: they are refused). Tokens accepted are kept
    in ``verified`` (server/token_cache.py), so a client's next request with
    the same token checks only its expiry and its key.
    """

    def __init__(
        self,
        secret: str | None,
        settings: TokenSettings,
        keys: SigningKeys | None = None,
        *,
        verified: VerifiedTokens | None = None,
    ) -> None:
        self.secret = secret
        self.settings = settings
        self.keys = keys
        self.verified = VerifiedTokens() if verified is None else verified

    async def __aenter__(self) -> TokenVerifier:
        """Fetch the JWKS, if there is one to fetch, before the app serves (server/app.py's lifespan)."""
        if self.keys is not None:
            await self.keys.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self.keys is not None:
            await self.keys.close()

    async def verify(self, token: str) -> Viewer | None:
        """The viewer a token names, None for a valid token naming no user, or ``TokenError`` saying what is wrong.

        A JWT is base64url text of a bounded size; anything longer or not ASCII (a
        lone surrogate from a websocket's JSON, say) is refused before it is decoded.
        """
        if len(token) > MAX_TOKEN_LENGTH or not token.isascii():
            raise TokenError("token is malformed")
        cached = self.verified.get(token)
        if cached is not None:
            if cached.kid is None or await self._key_unchanged(cached):
                if self.verified.expired(cached):
                    self.verified.discard(token)
                    raise TokenError("token has expired")  # what the whole check says: nothing else changed
                return cached.viewer
            self.verified.discard(token)  # the key set changed since: checked again below against the new one
        verified = await self._verify(token)
        self.verified.put(token, verified)
        return verified.viewer

    async def _key_unchanged(self, cached: Verified) -> bool:
        """Whether the key set still hands, for the entry's kid, the key object that verified it."""
        assert self.keys is not None and cached.kid is not None  # an entry has a kid only when JWKS keys verified it
        return await self.keys.key(cached.kid) is cached.key

    async def _verify(self, token: str) -> Verified:
        """The whole check: signature, claims and what they name; only its successes are cached."""
        try:
            # Read unverified only for its algorithm and key, and whether it names a user; the claims used are
            # verified below. One unverified decode gives both header and claims (two cost as much as the check).
            unverified = jwt.decode_complete(token, options={"verify_signature": False})
        except jwt.InvalidTokenError:
            raise TokenError("token is malformed") from None
        header, anonymous = unverified["header"], _names_no_user(unverified["payload"])
        algorithm = header.get("alg")
        key = await self._key(algorithm, header.get("kid"))
        settings = self.settings
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[str(algorithm)],
                # A token naming no user grants nothing a request without one does not: Supabase's anon key has
                # no aud and its iss is "supabase", so neither is asked of it; its signature and expiry are.
                audience=None if anonymous else settings.audience,
                issuer=None if anonymous else settings.issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp"], "verify_aud": not anonymous},
            )
        except jwt.ExpiredSignatureError:
            raise TokenError("token has expired") from None
        except jwt.InvalidSignatureError:
            raise TokenError("token signature is invalid") from None
        except jwt.InvalidAudienceError:
            raise TokenError(f"token audience must be '{settings.audience}'") from None
        except jwt.InvalidIssuerError:
            raise TokenError(f"token issuer must be '{settings.issuer}'") from None
        except jwt.MissingRequiredClaimError as error:
            raise TokenError(f"token has no '{error.claim}' claim") from None
        except jwt.InvalidTokenError:
            raise TokenError("token is malformed") from None
        if _names_no_user(claims):
            return _anonymous(claims, header.get("kid"), key)
        if claims.get("role", ROLE) != ROLE:  # issuers other than Supabase may set no role
            raise TokenError("token role must be 'authenticated' (or 'anon')")
        try:
            user_id = UUID(str(claims["sub"]))
        except ValueError:
            raise TokenError("token subject is not a user id") from None
        # One rule for HTTP and websockets: a token is accepted until exp plus the leeway, and a socket
        # opened with it is closed then (server/websocket.py close_at_expiry), not at exp itself.
        expiry = claims["exp"]
        if not isinstance(expiry, int | float) or isinstance(expiry, bool):  # pyjwt's int() also reads "1700000000"
            raise TokenError("token expiry is not a number")
        try:
            accepted_until = datetime.fromtimestamp(expiry, UTC) + timedelta(seconds=LEEWAY_SECONDS)
        except (OverflowError, OSError, ValueError):  # a signed exp past year 9999: no issuer of ours makes one
            raise TokenError("token expiry is out of range") from None
        viewer = Viewer(user_id=user_id, expires_at=accepted_until)
        return Verified(viewer, int(expiry) + LEEWAY_SECONDS, *_key_of(header.get("kid"), key))

    async def _key(self, algorithm: object, kid: object) -> jwt.PyJWK | str:
        """The one key that may verify a token of ``algorithm``: never the token's choice beyond that."""
        if algorithm == ALGORITHM:
            if self.secret is None:
                raise TokenError("token algorithm HS256 is not accepted")
            return self.secret
        if not isinstance(algorithm, str) or algorithm not in KEY_TYPES:
            raise TokenError("token is malformed")  # none, HS512, ...: as any token we cannot read
        if self.keys is None:
            raise TokenError(f"token algorithm {algorithm} is not accepted")
        if not isinstance(kid, str) or not kid:
            raise TokenError("token has no 'kid' header")
        key = await self.keys.key(kid)
        if key is None:
            raise TokenError("token signing key is unknown")
        if key.algorithm_name != algorithm:  # an ES256 token naming an RSA key, say
            raise TokenError(f"token algorithm {algorithm} does not match its key")
        return key


def _key_of(kid: object, key: jwt.PyJWK | str) -> tuple[str | None, jwt.PyJWK | None]:
    """What a cache entry must find unchanged to be used: a JWKS key by kid; nothing for HS256's fixed secret."""
    return (kid, key) if isinstance(key, jwt.PyJWK) and isinstance(kid, str) else (None, None)


def _anonymous(claims: Mapping[str, Any], kid: object, key: jwt.PyJWK | str) -> Verified:
    """A valid token naming no user; kept only until its exp like any other (never, when exp is no number)."""
    expiry = claims["exp"]
    numeric = isinstance(expiry, int | float) and not isinstance(expiry, bool)
    return Verified(None, int(expiry) + LEEWAY_SECONDS if numeric else -math.inf, *_key_of(kid, key))


def _names_no_user(claims: Mapping[str, Any]) -> bool:
    """An anonymous caller's token: Supabase's ``anon`` role, or no subject at all (its service key, say)."""
    return claims.get("role") == ANON_ROLE or claims.get("sub") is None


class AuthenticatedUser(BaseUser):
    """Starlette's view of a verified viewer."""

    def __init__(self, viewer: Viewer) -> None:
        self.viewer = viewer

    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def display_name(self) -> str:
        return str(self.viewer.user_id)

    @property
    def identity(self) -> str:
        return str(self.viewer.user_id)


def bearer_token(value: str) -> str:
    """The token of an ``Authorization`` value, which must be ``Bearer <token>``."""
    scheme, _, token = value.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise TokenError("Authorization must be 'Bearer <token>'")
    return token


class BearerTokenBackend(AuthenticationBackend):
    def __init__(self, verifier: TokenVerifier) -> None:
        self.verifier = verifier

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, BaseUser] | None:
        header = conn.headers.get("authorization")
        if header is None:
            return None
        viewer = await self.verifier.verify(bearer_token(header))
        if viewer is None:  # a valid token naming no user: as a request without one
            return None
        bind_user(viewer.user_id)  # the request's (or socket's) log lines carry its user from here on
        return AuthCredentials([ROLE]), AuthenticatedUser(viewer)


def authorization_param(params: Mapping[str, object] | None) -> str | None:
    """The ``Authorization`` a websocket client put in its connection_init payload, if any.

    Top level as graphql-ws clients send it (``{"Authorization": "Bearer ..."}``),
    any capitalisation, or under ``headers`` as Apollo's clients do.
    """
    if not params:
        return None
    for holder in (params, params.get("headers")):
        if isinstance(holder, Mapping):
            for key, value in holder.items():
                if isinstance(key, str) and key.lower() == "authorization":
                    if not isinstance(value, str):
                        raise TokenError("Authorization must be 'Bearer <token>'")
                    return value
    return None


def viewer_of(conn: HTTPConnection) -> Viewer | None:
    """The verified viewer of a request, None when it came without a token."""
    user = conn.scope.get("user")
    return user.viewer if isinstance(user, AuthenticatedUser) else None


def unauthenticated_response(conn: HTTPConnection, error: AuthenticationError) -> Response:
    """HTTP 401 with a GraphQL error body a client's error handling already understands.

    In application/graphql-response+json (server/media_types.py) it has no ``data`` entry: there a null one
    would say the operation ran.
    """
    media_type = response_media_type(conn.headers.get("accept"))
    body = {
        "data": None,
        "errors": [{"message": f"Unauthenticated: {error}", "extensions": request_extensions("UNAUTHENTICATED")}],
    }
    if media_type == GRAPHQL_RESPONSE_JSON:
        del body["data"]
    response = json_response(
        body,
        status_code=401,
        headers={"WWW-Authenticate": f'Bearer error="invalid_token", error_description="{error}"'},
    )
    if media_type is not None:
        response.headers["content-type"] = response_content_type(media_type)
    response.headers.add_vary_header("Accept")
    return response
