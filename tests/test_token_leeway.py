"""One rule for an expired bearer token over HTTP and over websockets: accepted until exp plus 30 s.

Both over real connections to uvicorn (``live_server``): HTTP POSTs and
websockets of both protocols.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import pytest
import websockets
from websockets.typing import Subprotocol

from tests.conftest import token_for
from tests.realtime_support import LEGACY_WS, PROTOCOLS, TRANSPORT_WS, GraphQLSocket, Rejected, data_of

VIEWER = "query { viewer { id } }"


@pytest.fixture
async def http(live_server: str) -> AsyncIterator[httpx.AsyncClient]:
    base = live_server.replace("ws://", "http://").removesuffix("/graphql")
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        yield client


def expired_since(user: uuid.UUID, seconds: int) -> str:
    """A token whose exp lies ``seconds`` in the past."""
    return token_for(user, ttl=timedelta(seconds=-seconds))


async def test_http_accepts_a_token_10_seconds_past_exp(http: httpx.AsyncClient, alice: uuid.UUID) -> None:
    response = await http.post(
        "/graphql", json={"query": VIEWER}, headers={"Authorization": f"Bearer {expired_since(alice, 10)}"}
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"data": {"viewer": {"id": str(alice)}}}


async def test_http_refuses_a_token_40_seconds_past_exp(http: httpx.AsyncClient, alice: uuid.UUID) -> None:
    response = await http.post(
        "/graphql", json={"query": VIEWER}, headers={"Authorization": f"Bearer {expired_since(alice, 40)}"}
    )
    assert response.status_code == 401, response.text
    assert response.json()["errors"][0]["message"] == "Unauthenticated: token has expired"


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_websocket_accepts_a_token_10_seconds_past_exp_and_stays_open(
    live_server: str, alice: uuid.UUID, protocol: str
) -> None:
    # given a token whose exp passed 10 s ago (20 s of leeway left)
    token = expired_since(alice, 10)
    # when a client opens a socket with it
    async with GraphQLSocket.open(live_server, protocol=protocol, token=token) as socket:
        # then it is acknowledged and not closed at once: a second later it still answers as alice
        await asyncio.sleep(1)
        if protocol == TRANSPORT_WS:
            operation = await socket.subscribe(VIEWER)
            result = await socket.next_result()
            assert result["id"] == operation
            assert data_of(result, "viewer") == {"id": str(alice)}
        else:  # legacy graphql-ws carries subscriptions only: one that runs and sends nothing yet
            await socket.subscribe("subscription { portraitJobs { id } }")
            with pytest.raises(TimeoutError):
                await socket.receive(timeout=0.5)
        assert socket.connection.close_code is None


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_websocket_refuses_a_token_40_seconds_past_exp(
    live_server: str, alice: uuid.UUID, protocol: str
) -> None:
    with pytest.raises(Rejected) as rejected:
        async with GraphQLSocket.open(live_server, protocol=protocol, token=expired_since(alice, 40)):
            pass
    if protocol == TRANSPORT_WS:
        assert rejected.value.code == 4403
    else:
        assert rejected.value.payload == {"message": "Unauthenticated: token has expired", "code": "UNAUTHENTICATED"}


async def test_a_websocket_upgrade_header_follows_the_same_rule(live_server: str, alice: uuid.UUID) -> None:
    # given tokens 10 s and 40 s past exp, sent on the upgrade request (as HTTP sends them)
    accepted = {"Authorization": f"Bearer {expired_since(alice, 10)}"}
    refused = {"Authorization": f"Bearer {expired_since(alice, 40)}"}
    # then the first opens a socket, the second is refused at the handshake
    async with GraphQLSocket.open(live_server, headers=accepted) as socket:
        await socket.subscribe(VIEWER)
        assert data_of(await socket.next_result(), "viewer") == {"id": str(alice)}
    with pytest.raises(websockets.exceptions.InvalidStatus) as handshake:
        async with GraphQLSocket.open(live_server, headers=refused):
            pass
    assert handshake.value.response.status_code == 403


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_lone_surrogate_token_is_refused_as_a_malformed_message(live_server: str, protocol: str) -> None:
    # given a connection_init whose JSON carries lone surrogate escapes in the token
    init = json.dumps({"type": "connection_init", "payload": {"Authorization": "Bearer \ud800.\udfff.x"}})
    async with websockets.connect(live_server, subprotocols=[Subprotocol(protocol)]) as raw:
        await raw.send(init)
        # then the message is refused before the token is read, as any message that is not valid Unicode:
        # graphql-transport-ws closes with 4400; legacy graphql-ws ignores JSON it cannot read (no ack)
        if protocol == LEGACY_WS:
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(raw.recv(), timeout=1)
            return
        await asyncio.wait_for(raw.wait_closed(), timeout=10)
        assert (raw.close_code, raw.close_reason) == (4400, "WebSocket message must be valid JSON")
