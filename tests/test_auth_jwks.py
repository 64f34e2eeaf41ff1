"""Tokens as Supabase issues them with asymmetric keys: RS256 and ES256 verified with a JWKS fetched over real HTTP.

The app is configured as for a Supabase project (JWT_JWKS_URL, JWT_ISSUER, and JWT_SECRET for its legacy HS256
keys) and served by uvicorn; the JWKS by a second server (tests/jwks_support.py) with keys the tests make.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from asgi_lifespan import LifespanManager

from server.app import create_app
from server.cli import uvicorn_config
from server.settings import Settings
from tests.jwks_support import (
    SUPABASE_ISSUER,
    JwksServer,
    SigningKey,
    anon_key_claims,
    hs256_with,
    user_claims,
)
from tests.realtime_support import PROTOCOLS, TRANSPORT_WS, GraphQLSocket, Rejected, data_of
from tests.support import TEST_JWT_SECRET, free_port, only_error, request_id_checked, serve_uvicorn

RSA_KEY = SigningKey.rsa("rsa-2026-01")
EC_KEY = SigningKey.ec("ec-2026-01")
OTHER_RSA = SigningKey.rsa("rsa-2026-01")  # same kid, a key the issuer never published
VIEWER = "{ viewer { id } }"
PUBLIC_AND_USER = "{ imageModels { modelKey } viewer { id } }"


def supabase_environ(settings: Settings, data_dir: Path, jwks_url: str, **extra: str) -> dict[str, str]:
    return {
        "DATABASE_URL": settings.database_url or "",
        "JWT_SECRET": TEST_JWT_SECRET,
        "JWT_JWKS_URL": jwks_url,
        "JWT_ISSUER": SUPABASE_ISSUER,
        "PORTRAITS_DATA_DIR": str(data_dir),
        "PUBLIC_URL": "http://testserver",
        "WORKERS": "0",
        **extra,
    }


@pytest.fixture(scope="module")
async def issuer() -> AsyncIterator[JwksServer]:
    async with JwksServer.running([RSA_KEY.public_jwk, EC_KEY.public_jwk]) as server:
        yield server


@pytest.fixture(scope="module")
async def supabase_app(
    settings: Settings, issuer: JwksServer, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[str]:
    """The app configured for a Supabase project, under uvicorn: its base URL."""
    configured = Settings.from_environ(supabase_environ(settings, tmp_path_factory.mktemp("data"), issuer.url))
    config = uvicorn_config(create_app(configured), host="127.0.0.1", port=free_port(), log_level="warning")
    async with serve_uvicorn(config) as served:
        yield served.url("", scheme="http")


@pytest.fixture
async def http(supabase_app: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=supabase_app, timeout=30) as client:
        yield client


async def post(http: httpx.AsyncClient, query: str, token: str, *, status: int = 200) -> dict[str, Any]:
    response = await http.post("/graphql", json={"query": query}, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == status, response.text
    body: dict[str, Any] = request_id_checked(response.json(), response.headers)
    return body


@pytest.mark.parametrize("key", [RSA_KEY, EC_KEY], ids=["RS256", "ES256"])
async def test_a_token_signed_with_a_published_key_names_its_user(http: httpx.AsyncClient, key: SigningKey) -> None:
    """An access token signed with a key of the JWKS, naming it by kid, is the user's."""
    # given a Supabase-shaped access token signed with one of the issuer's keys
    user = uuid.uuid4()
    # when it is sent, then the viewer is its subject
    assert await post(http, VIEWER, key.sign(user_claims(user))) == {"data": {"viewer": {"id": str(user)}}}


async def test_hs256_tokens_of_jwt_secret_still_work_beside_the_jwks(http: httpx.AsyncClient) -> None:
    """Supabase's legacy secret keeps verifying HS256 tokens (issued before the switch to asymmetric keys)."""
    user = uuid.uuid4()
    token = jwt.encode(user_claims(user), TEST_JWT_SECRET, algorithm="HS256")
    assert await post(http, VIEWER, token) == {"data": {"viewer": {"id": str(user)}}}


BAD_TOKENS: Mapping[str, tuple[Any, str]] = {
    "wrong issuer": (
        lambda: EC_KEY.sign(user_claims(iss="https://another.supabase.co/auth/v1")),
        f"token issuer must be '{SUPABASE_ISSUER}'",
    ),
    "no issuer": (lambda: EC_KEY.sign(user_claims(iss=None)), "token has no 'iss' claim"),
    "wrong audience": (lambda: EC_KEY.sign(user_claims(aud="anon")), "token audience must be 'authenticated'"),
    "no audience": (lambda: RSA_KEY.sign(user_claims(aud=None)), "token has no 'aud' claim"),
    "kid not in the JWKS": (lambda: EC_KEY.sign(user_claims(), kid="ec-unknown"), "token signing key is unknown"),
    "no kid": (
        lambda: jwt.encode(user_claims(), RSA_KEY.private, algorithm="RS256"),
        "token has no 'kid' header",
    ),
    "ES256 token naming the RSA key": (
        lambda: EC_KEY.sign(user_claims(), kid=RSA_KEY.kid),
        "token algorithm ES256 does not match its key",
    ),
    "signed by a key the issuer never published": (
        lambda: OTHER_RSA.sign(user_claims()),
        "token signature is invalid",
    ),
    # alg confusion: HS256 "signed" with the published RSA public key as the HMAC secret
    "HS256 keyed with the RSA public key (PEM)": (
        lambda: hs256_with(RSA_KEY.public_pem, user_claims(), {"kid": RSA_KEY.kid}),
        "token signature is invalid",
    ),
    "alg none naming a published key": (
        lambda: jwt.encode(user_claims(), "", algorithm="none", headers={"kid": RSA_KEY.kid}),
        "token is malformed",
    ),
    "RS512 with a published RS256 key": (
        lambda: RSA_KEY.sign(user_claims(), algorithm="RS512"),
        "token is malformed",
    ),
    "expired 40 s ago": (lambda: EC_KEY.sign(user_claims(ttl=timedelta(seconds=-40))), "token has expired"),
    "anon role, signed by an unpublished key": (
        lambda: OTHER_RSA.sign(anon_key_claims()),
        "token signature is invalid",
    ),
}


@pytest.mark.parametrize("make,reason", BAD_TOKENS.values(), ids=list(BAD_TOKENS))
async def test_a_bad_token_is_refused_with_401_and_its_reason(http: httpx.AsyncClient, make: Any, reason: str) -> None:
    """Every way an asymmetric token can be wrong refuses the whole request, in the documented shape."""
    # given a wrong token, when it asks even for a public field
    response = await http.post(
        "/graphql", json={"query": "{ imageModels { modelKey } }"}, headers={"Authorization": f"Bearer {make()}"}
    )
    # then 401, WWW-Authenticate, no data, UNAUTHENTICATED with the reason
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"].startswith('Bearer error="invalid_token"')
    body = request_id_checked(response.json(), response.headers)
    assert body["data"] is None
    assert only_error(body) == {"message": f"Unauthenticated: {reason}", "extensions": {"code": "UNAUTHENTICATED"}}


async def test_an_es256_token_10_seconds_past_exp_keeps_its_leeway(http: httpx.AsyncClient) -> None:
    """The 30 s clock-skew leeway applies to every algorithm alike."""
    user = uuid.uuid4()
    token = EC_KEY.sign(user_claims(user, ttl=timedelta(seconds=-10)))
    assert await post(http, VIEWER, token) == {"data": {"viewer": {"id": str(user)}}}


ANONYMOUS = {
    # HS256 with the project's JWT secret, as Supabase signs it: no aud, iss "supabase" (not JWT_ISSUER)
    "Supabase anon key": lambda: jwt.encode(anon_key_claims(), TEST_JWT_SECRET, algorithm="HS256"),
    "ES256 anon role": lambda: EC_KEY.sign(user_claims(role="anon", sub=None)),
    "RS256 without sub": lambda: RSA_KEY.sign(user_claims(sub=None)),
}


@pytest.mark.parametrize("make", ANONYMOUS.values(), ids=list(ANONYMOUS))
async def test_an_anonymous_token_reads_public_fields_only(http: httpx.AsyncClient, make: Any) -> None:
    """A valid token naming no user is an anonymous caller: public fields answer, user fields UNAUTHENTICATED."""
    # when the anon key asks for a public field and a user's field
    body = await post(http, PUBLIC_AND_USER, make())
    # then HTTP 200: the models are listed, viewer is null with UNAUTHENTICATED
    assert body["data"]["imageModels"], body
    assert body["data"]["viewer"] is None
    error = only_error(body)
    assert (error["path"], error["extensions"]) == (["viewer"], {"code": "UNAUTHENTICATED"})


def ws_url(base: str) -> str:
    return base.replace("http://", "ws://") + "/graphql"


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("key", [RSA_KEY, EC_KEY], ids=["RS256", "ES256"])
async def test_a_websocket_opens_with_an_asymmetric_token(supabase_app: str, key: SigningKey, protocol: str) -> None:
    """connection_init's token, verified with the JWKS, opens the socket as its user."""
    user = uuid.uuid4()
    async with GraphQLSocket.open(ws_url(supabase_app), protocol=protocol, token=key.sign(user_claims(user))) as socket:
        if protocol == TRANSPORT_WS:
            await socket.subscribe(VIEWER)
            assert data_of(await socket.next_result(), "viewer") == {"id": str(user)}
        assert socket.connection.close_code is None


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("make", ANONYMOUS.values(), ids=list(ANONYMOUS))
async def test_a_websocket_with_an_anonymous_token_is_refused_as_without_one(
    supabase_app: str, make: Any, protocol: str
) -> None:
    """No subscription is public: a socket needs a user, so an anon token is refused as a missing one."""
    with pytest.raises(Rejected) as rejected:
        async with GraphQLSocket.open(ws_url(supabase_app), protocol=protocol, token=make()):
            pass
    if protocol == TRANSPORT_WS:
        assert rejected.value.code == 4403
    else:
        assert rejected.value.payload["code"] == "UNAUTHENTICATED"
        assert rejected.value.payload["message"].startswith("Unauthenticated: token names no user")


async def test_an_anonymous_token_on_the_upgrade_request_is_refused_too(supabase_app: str) -> None:
    """In the upgrade's Authorization header the anon key counts as no token: connection_init then refuses."""
    headers = {"Authorization": f"Bearer {jwt.encode(anon_key_claims(), TEST_JWT_SECRET, algorithm='HS256')}"}
    with pytest.raises(Rejected) as rejected:
        async with GraphQLSocket.open(ws_url(supabase_app), headers=headers):
            pass
    assert rejected.value.code == 4403


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_websocket_refuses_an_es256_token_40_seconds_past_exp(supabase_app: str, protocol: str) -> None:
    """The websocket leeway rule holds for asymmetric tokens too."""
    token = EC_KEY.sign(user_claims(ttl=timedelta(seconds=-40)))
    with pytest.raises(Rejected) as rejected:
        async with GraphQLSocket.open(ws_url(supabase_app), protocol=protocol, token=token):
            pass
    if protocol == TRANSPORT_WS:
        assert rejected.value.code == 4403
    else:
        assert rejected.value.payload == {"message": "Unauthenticated: token has expired", "code": "UNAUTHENTICATED"}


@asynccontextmanager
async def app_for(settings: Settings, data_dir: Path, issuer: JwksServer, **extra: str) -> AsyncIterator[Any]:
    """A fresh app of its own (its own key cache) on ``issuer``, over its ASGI interface: a POST function."""
    configured = Settings.from_environ(supabase_environ(settings, data_dir, issuer.url, **extra))
    async with LifespanManager(create_app(configured)) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:

            async def status_of(token: str) -> tuple[int, dict[str, Any]]:
                response = await client.post(
                    "/graphql", json={"query": VIEWER}, headers={"Authorization": f"Bearer {token}"}
                )
                return response.status_code, response.json()

            yield status_of


async def test_a_rotated_key_is_fetched_once_and_accepted(settings: Settings, tmp_path: Path) -> None:
    """Key rotation end to end: a token with a kid the issuer has just published makes one refetch, then passes."""
    server = JwksServer.running([RSA_KEY.public_jwk])
    async with server as issuer, app_for(settings, tmp_path, issuer, JWT_JWKS_MIN_REFRESH_SECONDS="0.2") as status_of:
        assert issuer.requests == 1  # fetched at start
        # given the issuer publishes a new key after the refetch interval
        await asyncio.sleep(0.3)
        issuer.keys = [RSA_KEY.public_jwk, EC_KEY.public_jwk]
        user = uuid.uuid4()
        # when tokens signed with it arrive
        for _ in range(5):
            status, body = await status_of(EC_KEY.sign(user_claims(user)))
            # then they are accepted, after one fetch only
            assert (status, body["data"]) == (200, {"viewer": {"id": str(user)}})
        assert issuer.requests == 2


async def test_random_kids_do_not_make_the_app_hammer_the_issuer(settings: Settings, tmp_path: Path) -> None:
    """Tokens with made-up kids are refused without a fetch each: the start's fetch covers the interval (30 s)."""
    async with JwksServer.running([RSA_KEY.public_jwk]) as issuer, app_for(settings, tmp_path, issuer) as status_of:
        results = await asyncio.gather(
            *(status_of(RSA_KEY.sign(user_claims(), kid=uuid.uuid4().hex)) for _ in range(40))
        )
        assert {status for status, _ in results} == {401}
        assert {body["errors"][0]["message"] for _, body in results} == {
            "Unauthenticated: token signing key is unknown"
        }
        assert issuer.requests == 1


async def test_an_issuer_outage_keeps_known_keys_and_refuses_new_kids_with_401(
    settings: Settings, tmp_path: Path
) -> None:
    """The JWKS URL goes down: tokens of cached keys still pass; an unknown kid gets 401, never a 500."""
    async with JwksServer.running([RSA_KEY.public_jwk]) as issuer, app_for(
        settings, tmp_path, issuer, JWT_JWKS_MIN_REFRESH_SECONDS="0.1", JWT_JWKS_CACHE_SECONDS="1"
    ) as status_of:
        # given the issuer is down, past the cache lifetime and the refetch interval
        await issuer.stop()
        await asyncio.sleep(1.1)
        user = uuid.uuid4()
        # when a token of a cached key arrives, then it passes (and the background refetch fails quietly)
        status, body = await status_of(RSA_KEY.sign(user_claims(user)))
        assert (status, body["data"]) == (200, {"viewer": {"id": str(user)}})
        await asyncio.sleep(0.2)
        # when a token of a key never fetched arrives, then 401 with the documented shape
        status, body = await status_of(EC_KEY.sign(user_claims(user)))
        assert status == 401
        assert body["errors"][0]["message"] == "Unauthenticated: token signing key is unknown"
        # and cached keys still work after those failed fetches
        status, body = await status_of(RSA_KEY.sign(user_claims(user)))
        assert status == 200


async def test_the_app_starts_while_the_issuer_is_down(settings: Settings, tmp_path: Path) -> None:
    """A JWKS URL that fails at start does not stop the start: asymmetric tokens get 401, HS256 ones still pass."""
    server = JwksServer.running([RSA_KEY.public_jwk], status=503)
    async with server as issuer, app_for(settings, tmp_path, issuer) as status_of:
        status, body = await status_of(RSA_KEY.sign(user_claims()))
        assert (status, body["errors"][0]["message"]) == (401, "Unauthenticated: token signing key is unknown")
        user = uuid.uuid4()
        status, body = await status_of(jwt.encode(user_claims(user), TEST_JWT_SECRET, algorithm="HS256"))
        assert (status, body["data"]) == (200, {"viewer": {"id": str(user)}})
