"""Malformed client messages over a real websocket: the protocol's own answer (4400), never 1011 or a crash log.

Each case opens a socket to the app on a real uvicorn (``live_server``),
initialises it with a good token, sends one malformed text frame and reads
what the server does. The server's log must hold no traceback for any of
them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid

import pytest
import websockets
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from graph.schema import MAX_DOCUMENT_CHARS
from server.socket_messages import MAX_OPERATION_ID_LENGTH
from tests.conftest import token_for
from tests.realtime_support import LEGACY_WS, TRANSPORT_WS, GraphQLSocket, Rejected

SUBSCRIBE = '{"type":"subscribe","id":"a","payload":{"query":"subscription { portraitJobs { id } }"'
START = '{"type":"start","id":"a","payload":{"query":"subscription { portraitJobs { id } }"'

TRANSPORT_CASES = {
    "an array": "[]",
    "a number": "1",
    "null": "null",
    "a string": '"subscribe"',
    "no type": "{}",
    "a numeric type": '{"type": 5}',
    "subscribe without id": '{"type":"subscribe","payload":{"query":"{ viewer { id } }"}}',
    "a numeric id": '{"type":"subscribe","id":5,"payload":{"query":"{ viewer { id } }"}}',
    "an empty id": '{"type":"subscribe","id":"","payload":{"query":"{ viewer { id } }"}}',
    "a huge id": '{"type":"subscribe","id":"' + "x" * 100_000 + '","payload":{"query":"{ viewer { id } }"}}',
    "a string payload": '{"type":"subscribe","id":"a","payload":"query"}',
    "no query": '{"type":"subscribe","id":"a","payload":{}}',
    "a numeric query": '{"type":"subscribe","id":"a","payload":{"query":5}}',
    "array variables": SUBSCRIBE + ',"variables":[]}}',
    "string variables": SUBSCRIBE + ',"variables":"x"}}',
    "numeric extensions": SUBSCRIBE + ',"extensions":5}}',
    "numeric operationName": SUBSCRIBE + ',"operationName":5}}',
    "complete without id": '{"type":"complete"}',
    "complete with a numeric id": '{"type":"complete","id":5}',
    "a numeric ping payload": '{"type":"ping","payload":5}',
}

UNDECODABLE = {
    "not JSON": "not json",
    "a lone surrogate in a variable": SUBSCRIBE + ',"variables":{"a":"\\ud800"}}}',
    "a lone surrogate in a key": SUBSCRIBE + ',"variables":{"\\udfff":1}}}',
    "a lone surrogate in the id": '{"type":"subscribe","id":"\\ud800","payload":{"query":"{ viewer { id } }"}}',
    "arrays nested past the decoder": "[" * 100_000 + "]" * 100_000,
    "objects nested past the decoder": '{"a":' * 50_000 + "1" + "}" * 50_000,
}


@pytest.fixture
def token() -> str:
    return token_for(uuid.uuid4())


async def close_after(live_server: str, token: str, frame: str, *, protocol: str = TRANSPORT_WS) -> Rejected:
    async with GraphQLSocket.open(live_server, token=token, protocol=protocol) as socket:
        await socket.connection.send(frame)
        with pytest.raises(Rejected) as closed:
            await socket.receive(timeout=5)
        return closed.value


@pytest.mark.parametrize("frame", TRANSPORT_CASES.values(), ids=TRANSPORT_CASES.keys())
async def test_a_malformed_message_closes_the_socket_with_4400_and_says_why(
    live_server: str, token: str, frame: str, caplog: pytest.LogCaptureFixture
) -> None:
    # given an initialised graphql-transport-ws socket
    # when it sends a message its protocol does not allow
    with caplog.at_level(logging.INFO):
        rejected = await close_after(live_server, token, frame)
    # then the server closes it with 4400 and a reason, and logs no crash
    assert rejected.code == 4400, rejected
    assert rejected.reason.startswith("Invalid message: "), rejected.reason
    assert "Traceback" not in caplog.text
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]


# The other protocol's operation message: its type is unknown here, and its payload never checked.
FOREIGN_OPERATIONS = [
    (TRANSPORT_WS, '{"type":"start","id":"1","payload":{}}'),
    (TRANSPORT_WS, '{"type":"start","id":"1","payload":{"query":5}}'),
    (LEGACY_WS, '{"type":"subscribe","id":"1","payload":{}}'),
    (LEGACY_WS, '{"type":"subscribe","id":"1","payload":{"query":5}}'),
]


@pytest.mark.parametrize(("protocol", "frame"), FOREIGN_OPERATIONS)
async def test_the_other_protocols_operation_message_is_not_taken_for_one(
    live_server: str, token: str, protocol: str, frame: str, caplog: pytest.LogCaptureFixture
) -> None:
    # given an initialised socket, when it sends the other protocol's way of starting an operation, malformed
    async with GraphQLSocket.open(live_server, token=token, protocol=protocol) as socket:
        with caplog.at_level(logging.INFO):
            await socket.connection.send(frame)
            if protocol == TRANSPORT_WS:
                # then graphql-transport-ws closes with 4400 naming the unknown type
                with pytest.raises(Rejected) as closed:
                    await socket.receive(timeout=5)
                assert (closed.value.code, closed.value.reason) == (4400, "Unknown message type: start")
            else:
                # then legacy graphql-ws ignores it, and the socket still serves a subscription
                operation = await socket.subscribe("subscription { portraitJobs { id } }")
                await socket.stop(operation)
    # and nothing crashed
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]


@pytest.mark.parametrize("frame", UNDECODABLE.values(), ids=UNDECODABLE.keys())
async def test_a_message_that_does_not_decode_closes_the_socket_with_4400(
    live_server: str, token: str, frame: str, caplog: pytest.LogCaptureFixture
) -> None:
    # given an initialised socket, when it sends text that is not JSON the decoder can read
    with caplog.at_level(logging.INFO):
        rejected = await close_after(live_server, token, frame)
    # then it is closed as strawberry closes non-JSON, with no crash logged
    assert (rejected.code, rejected.reason) == (4400, "WebSocket message must be valid JSON")
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]


async def test_a_malformed_legacy_start_closes_the_socket_with_4400(live_server: str, token: str) -> None:
    # given a legacy graphql-ws socket, when a start message carries array variables
    rejected = await close_after(live_server, token, START + ',"variables":[]}}', protocol=LEGACY_WS)
    # then it is closed with 4400 and the reason
    assert rejected.code == 4400
    assert rejected.reason == "Invalid message: 'variables' must be an object or null"


async def test_a_well_formed_subscription_still_runs_after_the_checks(live_server: str, token: str) -> None:
    # given an initialised socket, when it sends a well-formed query with null optional fields
    async with GraphQLSocket.open(live_server, token=token) as socket:
        await socket.send({
            "type": "subscribe", "id": "q" * MAX_OPERATION_ID_LENGTH,
            "payload": {"query": "{ viewer { id } }", "variables": None, "operationName": None, "extensions": None},
        })
        # then it is answered
        message = await socket.receive()
    assert message["type"] == "next" and message["id"] == "q" * MAX_OPERATION_ID_LENGTH
    assert message["payload"]["data"]["viewer"]["id"]


async def test_a_null_connection_init_payload_is_no_payload(live_server: str, token: str) -> None:
    # given a graphql-transport-ws socket authenticated on its upgrade request
    async with websockets.connect(
        live_server, subprotocols=[Subprotocol(TRANSPORT_WS)], additional_headers={"Authorization": f"Bearer {token}"}
    ) as connection:
        # when its connection_init carries "payload": null, as the protocol allows
        await connection.send('{"type": "connection_init", "payload": null}')
        # then it is acknowledged
        assert json.loads(await asyncio.wait_for(connection.recv(), timeout=5))["type"] == "connection_ack"
        # and a second one, null or not, is the protocol's "too many initialisation requests"
        await connection.send('{"type": "connection_init", "payload": null}')
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(connection.recv(), timeout=5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4429


@pytest.mark.parametrize("protocol", [TRANSPORT_WS, LEGACY_WS])
async def test_an_over_long_query_gets_an_error_for_its_operation_and_the_socket_goes_on(
    live_server: str, token: str, protocol: str
) -> None:
    # given an initialised socket, opened with a request id of the client's
    headers = {"X-Request-ID": f"socket-{protocol}"}
    async with GraphQLSocket.open(live_server, token=token, protocol=protocol, headers=headers) as socket:
        # when an operation's document is past the character limit
        long_query = "subscription { portraitJobs { id } }" + " " * MAX_DOCUMENT_CHARS
        kind = "subscribe" if protocol == TRANSPORT_WS else "start"
        await socket.send({"type": kind, "id": "long", "payload": {"query": long_query}})
        refused = await socket.receive()
        # then that operation gets the refusal, naming the measure, and the socket serves the next one
        assert (refused["type"], refused["id"]) == ("error", "long")
        errors = refused["payload"] if protocol == TRANSPORT_WS else [refused["payload"]]
        assert errors[0]["extensions"] == {
            "code": "GRAPHQL_VALIDATION_FAILED", "measure": "characters", "limit": MAX_DOCUMENT_CHARS,
            "value": len(long_query), "requestId": f"socket-{protocol}",
        }
        await socket.send({"type": kind, "id": "next", "payload": {"query": "query { viewer { id } }"}})
        answer = await socket.receive()
        assert answer["id"] == "next" and answer["type"] in ("next", "data", "error"), answer


LONG_REASONS = {
    "an unknown type of 1,000 characters": '{"type":"' + "\u00e9" * 1_000 + '"}',
    "a subscribe reusing a running id of 128 characters": "twice",
}


@pytest.mark.parametrize("frame", LONG_REASONS.values(), ids=LONG_REASONS.keys())
async def test_a_close_whose_reason_quotes_the_client_at_length_still_sends_its_code(
    live_server: str, token: str, frame: str, caplog: pytest.LogCaptureFixture
) -> None:
    # given an initialised socket, when the client sends what strawberry closes the socket for with a reason that
    # quotes it (and would be longer than the 123 bytes a close frame carries)
    with caplog.at_level(logging.INFO):
        async with GraphQLSocket.open(live_server, token=token) as socket:
            if frame == "twice":
                subscribe = {"type": "subscribe", "id": "d" * MAX_OPERATION_ID_LENGTH,
                             "payload": {"query": "subscription { portraitJobs { id } }"}}
                await socket.send(subscribe)
                await socket.send(subscribe)
            else:
                await socket.connection.send(frame)
            with pytest.raises(Rejected) as closed:
                await socket.receive(timeout=5)
    # then the socket is closed with the protocol's code and the reason cut to fit, and no crash is logged
    assert closed.value.code in (4400, 4409), closed.value
    assert 0 < len(closed.value.reason.encode()) <= 123 and closed.value.reason.endswith("..."), closed.value
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]
