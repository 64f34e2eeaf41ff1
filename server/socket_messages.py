"""What a well-formed client message is, for each GraphQL websocket protocol we speak.

Strawberry's protocol handlers index into a message as its protocol
describes it: a JSON array, a subscribe whose payload is a string or an
operation id that is a number raised ``TypeError`` inside them, which ended
the socket with 1011 and logged a crash. Messages are checked here first
(``server/websocket.py``: ``TextWebSocketAdapter``), so a malformed one gets
the protocol's own answer (graphql-transport-ws closes with 4400) and only
well-formed messages reach strawberry.

The message was decoded strictly (server/graphql_request.py: valid Unicode,
bounded nesting and size), so only its shape is checked here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from server.graphql_request import json_type

# graphql-transport-ws (PROTOCOL.md of graphql-ws): "Invalid message received".
INVALID_MESSAGE_CODE = 4400
# Clients make ids of a UUID or a counter; this bounds what every reply of the socket echoes.
MAX_OPERATION_ID_LENGTH = 128

_OPTIONAL_OBJECTS = ("variables", "extensions")


@dataclass(frozen=True, slots=True)
class SocketProtocol:
    """What one protocol's client messages are: the types whose payload is an optional object, and the two
    that name an operation (start one, stop one)."""

    optional_payloads: frozenset[str]
    start: str
    stop: str


TRANSPORT_WS = SocketProtocol(frozenset({"connection_init", "ping", "pong"}), start="subscribe", stop="complete")
LEGACY_WS = SocketProtocol(frozenset({"connection_init"}), start="start", stop="stop")


class MalformedMessage(ValueError):
    """A client message its protocol does not allow; the message says what is wrong, for the client."""


def check_message(message: object, protocol: SocketProtocol) -> Mapping[str, object]:
    """``message`` as strawberry reads it under ``protocol``, or ``MalformedMessage``.

    Unknown types pass: strawberry answers them itself (graphql-transport-ws closes with 4400, naming the type;
    legacy graphql-ws ignores them).
    """
    checked = _object_with_type(message)
    kind = checked["type"]
    if kind in protocol.optional_payloads:
        _optional_object(checked, "payload")
        if "payload" in checked and checked["payload"] is None:
            # graphql-ws's PROTOCOL.md allows ``payload: null``; strawberry takes only an object or no payload, and
            # closed a first connection_init with null as invalid (and a second one with 4400 instead of 4429).
            return {key: value for key, value in checked.items() if key != "payload"}
    elif kind == protocol.start:
        _operation_id(checked)
        _operation_payload(checked)
    elif kind == protocol.stop:
        _operation_id(checked)
    return checked


def operation_query(message: Mapping[str, object], protocol: SocketProtocol) -> str | None:
    """The document of a checked message that starts an operation under ``protocol``; ``None`` for any other."""
    if message["type"] != protocol.start:
        return None
    payload = message["payload"]
    assert isinstance(payload, dict)  # check_message made sure
    query: str = payload["query"]
    return query


def _object_with_type(message: object) -> Mapping[str, object]:
    if not isinstance(message, dict):
        raise MalformedMessage(f"a message must be a JSON object, not {json_type(message)}")
    if not isinstance(message.get("type"), str):
        raise MalformedMessage("a message must have a string 'type'")
    return message


def _operation_id(message: Mapping[str, object]) -> None:
    operation_id = message.get("id")
    if not isinstance(operation_id, str) or not operation_id:
        raise MalformedMessage(f"a '{message['type']}' message needs a non-empty string 'id'")
    if len(operation_id) > MAX_OPERATION_ID_LENGTH:
        raise MalformedMessage(f"an operation 'id' may have at most {MAX_OPERATION_ID_LENGTH} characters")


def _operation_payload(message: Mapping[str, object]) -> None:
    payload = message.get("payload")
    if not isinstance(payload, dict):
        raise MalformedMessage(f"a '{message['type']}' message needs an object 'payload'")
    if not isinstance(payload.get("query"), str):
        raise MalformedMessage("the payload needs a string 'query'")
    if not isinstance(payload.get("operationName"), str | None):
        raise MalformedMessage("the payload's 'operationName' must be a string or null")
    for name in _OPTIONAL_OBJECTS:
        _optional_object(payload, name)


def _optional_object(holder: Mapping[str, object], name: str) -> None:
    if not isinstance(holder.get(name), dict | None):
        raise MalformedMessage(f"'{name}' must be an object or null")

