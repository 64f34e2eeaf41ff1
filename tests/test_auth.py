"""Every way a bearer token can be wrong, and what an anonymous request may do."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import jwt
import pytest

from server.auth import issue_token
from tests.conftest import GraphQL
from tests.support import TEST_JWT_SECRET, only_error

NOW = datetime.now(UTC)


def claims(**overrides: object) -> dict[str, object]:
    base: dict[str, object] = {
        "sub": str(uuid.uuid4()),
        "role": "authenticated",
        "aud": "authenticated",
        "iat": int(NOW.timestamp()),
        "exp": int((NOW + timedelta(hours=1)).timestamp()),
    }
    base.update(overrides)
    return {key: value for key, value in base.items() if value is not None}


def signed(payload: dict[str, object], secret: str = TEST_JWT_SECRET, algorithm: str = "HS256") -> str:
    return jwt.encode(payload, secret, algorithm=algorithm)


BAD_HEADERS = {
    "scheme is not Bearer": ("Basic dXNlcjpwYXNz", "Authorization must be 'Bearer <token>'"),
    "Bearer without a token": ("Bearer", "Authorization must be 'Bearer <token>'"),
    "garbage token": ("Bearer not.a.jwt", "token is malformed"),
    "wrong secret": (
        f"Bearer {signed(claims(), secret='another-secret-entirely-another-secret')}",
        "token signature is invalid",
    ),
    "expired": (f"Bearer {signed(claims(exp=int((NOW - timedelta(minutes=5)).timestamp())))}", "token has expired"),
    "wrong audience": (f"Bearer {signed(claims(aud='anon'))}", "token audience must be 'authenticated'"),
    "another role": (f"Bearer {signed(claims(role='service_role'))}", "token role must be 'authenticated' (or 'anon')"),
    "anon role, wrong secret": (
        f"Bearer {signed(claims(role='anon'), secret='another-secret-entirely-another-secret')}",
        "token signature is invalid",
    ),
    "anon role, expired": (
        f"Bearer {signed(claims(role='anon', exp=int((NOW - timedelta(minutes=5)).timestamp())))}",
        "token has expired",
    ),
    "no expiry": (f"Bearer {signed(claims(exp=None))}", "token has no 'exp' claim"),
    "subject not a uuid": (f"Bearer {signed(claims(sub='alice'))}", "token subject is not a user id"),
    "alg none": (f"Bearer {jwt.encode(claims(), '', algorithm='none')}", "token is malformed"),
    "HS512 instead of HS256": (f"Bearer {signed(claims(), algorithm='HS512')}", "token is malformed"),
    "token too long": (f"Bearer {signed(claims(pad='x' * 9000))}", "token is malformed"),
    # signed with the secret, but expiring past what a date can hold (no issuer of ours makes one)
    "exp of 31 digits": (f"Bearer {signed(claims(exp=10**30))}", "token expiry is out of range"),
    "exp of 1e308": (f"Bearer {signed(claims(exp=1e308))}", "token expiry is out of range"),
    "exp at the end of year 9999": (f"Bearer {signed(claims(exp=253402300799))}", "token expiry is out of range"),
    # pyjwt checks exp with int(), which reads a numeric string: a NumericDate is a JSON number (RFC 7519)
    "exp as a numeric string": (
        f"Bearer {signed(claims(exp=str(int((NOW + timedelta(hours=1)).timestamp()))))}",
        "token expiry is not a number",
    ),
}


@pytest.mark.parametrize("header,reason", BAD_HEADERS.values(), ids=list(BAD_HEADERS))
async def test_a_bad_token_refuses_the_whole_request_with_401(graphql: GraphQL, header: str, reason: str) -> None:
    # given a request whose token is wrong, even for a public field
    # when it is sent
    body = await graphql("{ imageModels { modelKey } }", headers={"Authorization": header}, status=401)

    # then nothing runs and the error says why, with the stable code
    assert body["data"] is None
    error = only_error(body)
    assert error["extensions"] == {"code": "UNAUTHENTICATED"}
    assert error["message"] == f"Unauthenticated: {reason}"


async def test_401_carries_www_authenticate(client) -> None:
    response = await client.post("/graphql", json={"query": "{ viewer { id } }"}, headers={"Authorization": "Bearer x"})

    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith('Bearer error="invalid_token"')


@pytest.mark.parametrize(
    "query",
    [
        "{ viewer { id } }",
        "{ characters { edges { node { id } } } }",
        '{ character(id: "00000000-0000-0000-0000-000000000000") { id } }',
        'mutation { createCharacter(input: {name: "A", description: "B"}) { id } }',
        'mutation { updateCharacter(id: "00000000-0000-0000-0000-000000000000", input: {}) { id } }',
        'mutation { deleteCharacter(id: "00000000-0000-0000-0000-000000000000") }',
    ],
)
async def test_without_a_token_user_fields_are_unauthenticated(graphql: GraphQL, query: str) -> None:
    body = await graphql(query)

    assert only_error(body)["extensions"] == {"code": "UNAUTHENTICATED"}
    assert list(body["data"].values()) == [None]


async def test_without_a_token_public_fields_still_answer(graphql: GraphQL) -> None:
    body = await graphql("{ imageModels { modelKey } viewer { id } }")

    assert "local/portrait-v1" in [model["modelKey"] for model in body["data"]["imageModels"]]
    assert body["data"]["viewer"] is None
    assert only_error(body)["path"] == ["viewer"]


ANONYMOUS_TOKENS = {
    "Supabase's anon key (no sub, no aud, iss 'supabase')": {
        "iss": "supabase", "ref": "abcdefghijklmnopqrst", "role": "anon", "iat": int(NOW.timestamp()),
        "exp": int((NOW + timedelta(days=3650)).timestamp()),
    },
    "anon role with a sub": claims(role="anon"),
    "no sub": claims(sub=None),
    "service role, no sub": claims(sub=None, role="service_role", aud=None),
}


@pytest.mark.parametrize("payload", ANONYMOUS_TOKENS.values(), ids=list(ANONYMOUS_TOKENS))
async def test_a_valid_token_naming_no_user_is_an_anonymous_caller(graphql: GraphQL, payload: dict) -> None:
    """A token whose role is anon, or that has no sub, runs as a request without a token: not a 401."""
    # given a validly signed token that names no user
    headers = {"Authorization": f"Bearer {signed(payload)}"}

    # when it asks for a public field and a user's field
    body = await graphql("{ imageModels { modelKey } viewer { id } }", headers=headers)

    # then the public field answers and the user's field is UNAUTHENTICATED, as without a token
    assert "local/portrait-v1" in [model["modelKey"] for model in body["data"]["imageModels"]]
    assert body["data"]["viewer"] is None
    error = only_error(body)
    assert (error["path"], error["extensions"]) == (["viewer"], {"code": "UNAUTHENTICATED"})


async def test_a_token_without_a_role_names_its_user(graphql: GraphQL) -> None:
    """Issuers other than Supabase set no role claim: the subject is the viewer all the same."""
    user = uuid.uuid4()
    token = signed(claims(sub=str(user), role=None))

    body = await graphql("{ viewer { id } }", headers={"Authorization": f"Bearer {token}"})

    assert body == {"data": {"viewer": {"id": str(user)}}}


async def test_a_token_within_clock_skew_leeway_is_accepted(graphql: GraphQL) -> None:
    user = uuid.uuid4()
    # (the time is taken here, not at import: the suite may reach this test longer than the leeway after that)
    token = signed(claims(sub=str(user), exp=int((datetime.now(UTC) - timedelta(seconds=5)).timestamp())))

    body = await graphql("{ viewer { id } }", headers={"Authorization": f"Bearer {token}"})

    assert body == {"data": {"viewer": {"id": str(user)}}}


async def test_issued_tokens_have_supabase_claims() -> None:
    user = uuid.uuid4()
    token = issue_token(TEST_JWT_SECRET, user, ttl=timedelta(minutes=10))

    decoded = jwt.decode(token, TEST_JWT_SECRET, algorithms=["HS256"], audience="authenticated")

    assert decoded["sub"] == str(user)
    assert decoded["role"] == "authenticated"
    assert decoded["exp"] - decoded["iat"] == 600
