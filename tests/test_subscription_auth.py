"""Who may open a subscription socket, and for how long: the bearer token decides."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import timedelta

import jwt
import pytest
import websockets
from websockets.exceptions import InvalidStatus
from websockets.typing import Subprotocol

from tests.conftest import token_for
from tests.generation_support import GraphQL, create_character, generate_portrait
from tests.realtime_support import JOB_UPDATED, PROTOCOLS, TRANSPORT_WS, GraphQLSocket, Rejected, data_of
from tests.support import TEST_JWT_SECRET


def assert_unauthenticated(rejection: Rejected, protocol: str) -> None:
    if protocol == TRANSPORT_WS:
        assert rejection.code == 4403, rejection  # graphql-transport-ws: Forbidden
    else:
        assert rejection.payload["code"] == "UNAUTHENTICATED", rejection  # graphql-ws: connection_error
        assert rejection.payload["message"].startswith("Unauthenticated: "), rejection


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize(
    "params",
    [
        pytest.param({}, id="no token"),
        pytest.param({"Authorization": "Bearer not-a-jwt"}, id="malformed token"),
        pytest.param({"Authorization": "Basic dXNlcjpwYXNz"}, id="not bearer"),
        pytest.param({"Authorization": 42}, id="not a string"),
        pytest.param({"Authorization": "Bearer " + "a" * 100_000}, id="token too long"),
        pytest.param({"Authorization": "Bearer " + jwt.encode({
            "sub": str(uuid.uuid4()), "role": "authenticated", "aud": "authenticated", "exp": 10**30,
        }, TEST_JWT_SECRET, algorithm="HS256")}, id="signed exp past year 9999"),
    ],
)
async def test_a_socket_without_a_valid_token_is_rejected(live_server: str, protocol: str, params: dict) -> None:
    # when a client opens a socket with no usable token in connection_init
    with pytest.raises(Rejected) as rejected:
        async with GraphQLSocket.open(live_server, protocol=protocol, params=params):
            pass
    # then the server refuses it
    assert_unauthenticated(rejected.value, protocol)


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_an_expired_or_foreign_signed_token_is_rejected(
    live_server: str, alice: uuid.UUID, protocol: str
) -> None:
    expired = token_for(alice, ttl=timedelta(minutes=-5))
    forged = token_for(alice)[:-4] + "AAAA"
    for token in (expired, forged):
        with pytest.raises(Rejected) as rejected:
            async with GraphQLSocket.open(live_server, protocol=protocol, token=token):
                pass
        assert_unauthenticated(rejected.value, protocol)


async def test_the_upgrade_requests_authorization_header_is_enough(
    live_server: str, graphql: GraphQL, alice: uuid.UUID
) -> None:
    # given alice's job
    character = await create_character(graphql, alice)
    job = await generate_portrait(graphql, alice, characterId=character["id"])
    # when her client authenticates by the upgrade request's header only
    headers = {"Authorization": f"Bearer {token_for(alice)}"}
    async with GraphQLSocket.open(live_server, headers=headers) as socket:
        await socket.subscribe(JOB_UPDATED, {"id": job["id"]})
        first = data_of(await socket.next_result(), "jobUpdated")
    # then the subscription runs as alice
    assert first["id"] == job["id"]


async def test_a_bad_upgrade_header_refuses_the_handshake(live_server: str) -> None:
    with pytest.raises(InvalidStatus) as refused:
        async with GraphQLSocket.open(live_server, headers={"Authorization": "Bearer nonsense"}):
            pass
    assert refused.value.response.status_code == 403


async def test_a_websocket_elsewhere_than_graphql_is_refused(live_server: str) -> None:
    # (GraphQL sockets take a shortcut past Starlette; every other path still goes through its router)
    with pytest.raises(InvalidStatus) as refused:
        async with websockets.connect(live_server.replace("/graphql", "/healthz")):
            pass
    assert refused.value.response.status_code == 403


async def test_the_connection_init_token_wins_over_the_header(
    live_server: str, alice: uuid.UUID, bob: uuid.UUID
) -> None:
    # given a valid header for bob but a bad token in connection_init
    headers = {"Authorization": f"Bearer {token_for(bob)}"}
    with pytest.raises(Rejected) as rejected:
        async with GraphQLSocket.open(live_server, headers=headers, params={"Authorization": "Bearer broken"}):
            pass
    # then the connection is refused: a client's explicit credentials are never silently replaced
    assert rejected.value.code == 4403


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_the_socket_is_closed_when_its_token_expires(
    live_server: str, graphql: GraphQL, alice: uuid.UUID, protocol: str
) -> None:
    # given a socket opened with a token that expired 27 seconds ago (still within the 30 s leeway
    # HTTP allows, so it stops being accepted in 2-3 seconds), running a subscription
    character = await create_character(graphql, alice)
    job = await generate_portrait(graphql, alice, characterId=character["id"])
    token = token_for(alice, ttl=timedelta(seconds=-27))
    async with GraphQLSocket.open(live_server, protocol=protocol, token=token) as socket:
        await socket.subscribe(JOB_UPDATED, {"id": job["id"]})
        assert data_of(await socket.next_result(), "jobUpdated")["status"] == "QUEUED"
        opened = time.monotonic()

        # when the token's leeway runs out, then the server closes the socket with 4403 (graphql-ws reconnects after
        # it, reading the token again; 4401 would end its subscriptions for good)
        with pytest.raises(Rejected) as closed:
            await socket.receive(timeout=10)
    assert closed.value.code == 4403
    assert "expired" in closed.value.reason
    assert time.monotonic() - opened < 5


async def test_a_subscribe_before_connection_init_is_refused(live_server: str) -> None:
    async with websockets.connect(live_server, subprotocols=[Subprotocol(TRANSPORT_WS)]) as raw:
        await raw.send('{"id":"1","type":"subscribe","payload":{"query":"subscription { portraitJobs { id } }"}}')
        await asyncio.wait_for(raw.wait_closed(), timeout=10)
    assert raw.close_code == 4401

