"""Websocket messages are decoded as strictly as HTTP requests (the view's ``decode_json``): 4400, never 1011."""

from __future__ import annotations

import asyncio
import logging
import uuid

import pytest

from tests.conftest import token_for
from tests.realtime_support import TRANSPORT_WS, GraphQLSocket

SUBSCRIBE = '{"id": "1", "type": "subscribe", "payload": {"query": "subscription { portraitJobs { id } }"'
MESSAGES = {
    "a lone surrogate in variables": SUBSCRIBE + ', "variables": {"a": "\\ud800"}}}',
    "a lone surrogate in the query": '{"id": "1", "type": "subscribe", "payload": {"query": "\\udc00"}}',
    "variables nested 1100 levels": SUBSCRIBE + ', "variables": {"a": ' + "[" * 1100 + "]" * 1100 + "}}}",
    "an integer of 5000 digits": SUBSCRIBE + ', "variables": {"a": ' + "9" * 5000 + "}}}",
    "1e999": SUBSCRIBE + ', "variables": {"a": 1e999}}}',
    "an integer past 64 bits": SUBSCRIBE + ', "variables": {"a": 18446744073709551616}}}',
    "20001 arrays and objects": SUBSCRIBE + ', "variables": {"a": [' + ",".join(["[]"] * 20_001) + "]}}}",
}


@pytest.mark.parametrize("message", MESSAGES.values(), ids=MESSAGES.keys())
async def test_a_message_that_is_not_json_closes_the_socket_with_4400(
    live_server: str, alice: uuid.UUID, message: str, caplog: pytest.LogCaptureFixture
) -> None:
    # given an initialised graphql-transport-ws socket
    with caplog.at_level(logging.WARNING):
        async with GraphQLSocket.open(live_server, protocol=TRANSPORT_WS, token=token_for(alice)) as socket:
            # when it sends a message strict JSON refuses
            await socket.connection.send(message)
            await asyncio.wait_for(socket.connection.wait_closed(), 10)

            # then the socket is closed by the protocol's own code for an invalid message, not as a crash (1011)
            assert socket.connection.close_code == 4400
            assert socket.connection.close_reason == "WebSocket message must be valid JSON"

    # and nothing was logged as a crash
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]
