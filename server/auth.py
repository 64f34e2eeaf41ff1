"""Bearer tokens as Supabase issues them: HS256 JWTs with ``sub`` = user id.

Verified once per request by Starlette's ``AuthenticationMiddleware`` on the
GraphQL route. A request without a token runs anonymously (only public
fields answer); a request with a bad token is refused as a whole with HTTP
401 and a GraphQL-shaped body, so a client learns at once that its token
must be refreshed (see the README, "Authentication").
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from uuid import UUID

import jwt
from starlette.authentication import AuthCredentials, AuthenticationBackend, AuthenticationError, BaseUser
from starlette.requests import HTTPConnection
from starlette.responses import Response

from observability.log_context import bind_user
from resolvers.viewer import Viewer
from server.json import json_response
from server.media_types import GRAPHQL_RESPONSE_JSON, response_media_type
from server.request_errors import request_extensions, response_content_type
from storage.objects.tokens import LEEWAY_SECONDS  # one clock-skew rule for bearer and object tokens

ALGORITHM = "HS256"
AUDIENCE = "authenticated"
ROLE = "authenticated"
# Supabase's access tokens are about 1 KB; a longer one is refused before it is decoded.
MAX_TOKEN_LENGTH = 8192


class TokenError(AuthenticationError):
    """Why a token was refused; the message is safe to show."""


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


def verify_token(secret: str, token: str) -> Viewer:
    """The viewer a token names, or ``TokenError`` saying what is wrong with it.

    A JWT is base64url text of a bounded size; anything longer or not ASCII (a
    lone surrogate from a websocket's JSON, say) is refused before it is decoded.
    """
    if len(token) > MAX_TOKEN_LENGTH or not token.isascii():
        raise TokenError("token is malformed")
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            audience=AUDIENCE,
            leeway=LEEWAY_SECONDS,
            options={"require": ["exp", "sub", "aud"]},
        )
    except jwt.ExpiredSignatureError:
        raise TokenError("token has expired") from None
    except jwt.InvalidSignatureError:
        raise TokenError("token signature is invalid") from None
    except jwt.InvalidAudienceError:
        raise TokenError("token audience must be 'authenticated'") from None
    except jwt.MissingRequiredClaimError as error:
        raise TokenError(f"token has no '{error.claim}' claim") from None
    except jwt.InvalidTokenError:
        raise TokenError("token is malformed") from None
    if claims.get("role") != ROLE:
        raise TokenError("token role must be 'authenticated'")
    try:
        user_id = UUID(str(claims["sub"]))
    except ValueError:
        raise TokenError("token subject is not a user id") from None
    # One rule for HTTP and websockets: a token is accepted until exp plus the leeway, and a socket
    # opened with it is closed then (server/websocket.py close_at_expiry), not at exp itself.
    try:
        accepted_until = datetime.fromtimestamp(claims["exp"], UTC) + timedelta(seconds=LEEWAY_SECONDS)
    except (OverflowError, OSError, ValueError):  # a signed exp past year 9999: no issuer of ours makes one
        raise TokenError("token expiry is out of range") from None
    return Viewer(user_id=user_id, expires_at=accepted_until)


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
    def __init__(self, secret: str) -> None:
        self.secret = secret

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, BaseUser] | None:
        header = conn.headers.get("authorization")
        if header is None:
            return None
        viewer = verify_token(self.secret, bearer_token(header))
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
    return response
