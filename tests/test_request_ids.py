"""Request ids: taken when well-formed, made when not, echoed on every response, in errors and in log lines."""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import asyncpg
import httpx
import orjson
import pytest

from server.log_format import ContextIds, JsonFormatter
from server.log_redaction import Redactor
from server.request_ids import MAX_LENGTH
from tests.conftest import GraphQL, token_for
from tests.generation_support import create_character, generate_portrait
from tests.realtime_support import GraphQLSocket, errors_of

MADE = re.compile(r"[0-9a-f]{32}")  # uuid4().hex
UNKNOWN_FIELD = "{ nope }"


async def post(
    client: httpx.AsyncClient, query: str, headers: Sequence[tuple[str, str | bytes]] = ()
) -> httpx.Response:
    raw = [(name.encode(), value if isinstance(value, bytes) else value.encode()) for name, value in headers]
    return await client.post("/graphql", json={"query": query}, headers=raw)


def error_request_ids(response: httpx.Response) -> list[str]:
    return [error["extensions"]["requestId"] for error in response.json()["errors"]]


@pytest.mark.parametrize(
    "sent", ["a", "trace-42", "A.b_c:d-e", "x" * MAX_LENGTH, str(uuid.UUID(int=7)), "00-4bf92f3577b34da6-01"]
)
async def test_a_well_formed_request_id_is_kept_echoed_and_in_the_errors(client: httpx.AsyncClient, sent: str) -> None:
    response = await post(client, UNKNOWN_FIELD, [("X-Request-ID", sent)])

    assert response.status_code == 200
    assert response.headers["x-request-id"] == sent
    assert error_request_ids(response) == [sent]


@pytest.mark.parametrize(
    "sent",
    ["", "x" * (MAX_LENGTH + 1), "has space", "semi;colon", "slash/", "quote\"", "comma,list", b"caf\xc3\xa9", b"\x01"],
    ids=["empty", "too-long", "space", "semicolon", "slash", "quote", "comma", "non-ascii", "control"],
)
async def test_a_malformed_request_id_is_replaced_by_a_new_one(client: httpx.AsyncClient, sent: str | bytes) -> None:
    response = await post(client, UNKNOWN_FIELD, [("X-Request-ID", sent)])

    made = response.headers["x-request-id"]
    assert MADE.fullmatch(made), made
    assert error_request_ids(response) == [made]


async def test_two_request_ids_are_replaced_by_one_new_one(client: httpx.AsyncClient) -> None:
    response = await post(client, UNKNOWN_FIELD, [("X-Request-ID", "first"), ("X-Request-ID", "second")])

    assert MADE.fullmatch(response.headers["x-request-id"])
    assert response.headers.get_list("x-request-id") == [response.headers["x-request-id"]]


async def test_each_request_without_one_gets_its_own(client: httpx.AsyncClient) -> None:
    made = [(await client.get("/healthz")).headers["x-request-id"] for _ in range(3)]

    assert all(MADE.fullmatch(each) for each in made)
    assert len(set(made)) == 3


async def test_refusals_carry_the_id_too(client: httpx.AsyncClient) -> None:
    sent = [("X-Request-ID", "refused-1")]
    # a bad token (the authentication middleware's 401)
    unauthenticated = await post(client, "{ viewer { id } }", [*sent, ("Authorization", "Bearer not-a-token")])
    # a body over the cap (the request limits' 413, before any route)
    too_large = await client.post(
        "/graphql", content=b"{" + b" " * (3 * 1024 * 1024), headers=[*sent, ("content-type", "application/json")]
    )
    # a method the view does not serve (strawberry's refusal, answered by our view)
    wrong_method = await client.put("/graphql", content=b"{}", headers=sent)

    for response, status in ((unauthenticated, 401), (too_large, 413), (wrong_method, 405)):
        assert response.status_code == status, response.text
        assert response.headers["x-request-id"] == "refused-1"
        assert error_request_ids(response) == ["refused-1"]
    # and a signed object's refusal (not GraphQL: no extensions) still echoes it
    object_refusal = await client.get("/storage/v1/object/sign/user-library/x/y.png?token=bad", headers=sent)
    assert object_refusal.status_code == 400 and object_refusal.headers["x-request-id"] == "refused-1"


class Lines(logging.Handler):
    """Records of one logger, stamped with their context's ids as our handlers stamp them, formatted as JSON."""

    def __init__(self) -> None:
        super().__init__()
        self.addFilter(ContextIds())
        self.setFormatter(JsonFormatter(Redactor()))
        self.lines: list[dict[str, object]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(orjson.loads(self.format(record)))


@contextmanager
def logged_lines(name: str) -> Iterator[list[dict[str, object]]]:
    logger = logging.getLogger(name)
    lines = Lines()
    logger.addHandler(lines)
    try:
        yield lines.lines
    finally:
        logger.removeHandler(lines)


async def test_a_requests_log_lines_carry_its_id_and_user(
    client: httpx.AsyncClient, pool: asyncpg.Pool, alice: uuid.UUID
) -> None:
    # given a database whose characters table has gone missing, so listing them is an unexpected error (logged)
    await pool.execute("ALTER TABLE characters RENAME TO characters_away")
    try:
        with logged_lines("graph.errors") as lines:
            # when alice lists her characters with a request id of her own
            headers = [("X-Request-ID", "alice-list"), ("Authorization", f"Bearer {token_for(alice)}")]
            response = await post(client, "{ characters { edges { node { id } } } }", headers)
    finally:
        await pool.execute("ALTER TABLE characters_away RENAME TO characters")

    # then the masked error she gets and the line logged for it share the id, and the line names her
    assert error_request_ids(response) == ["alice-list"]
    [line] = lines
    assert (line["request_id"], line["user_id"], line["level"]) == ("alice-list", str(alice), "ERROR")
    assert "characters_away" in str(line["exception"]) or "characters" in str(line["exception"])


async def test_a_websockets_operations_log_and_answer_with_the_sockets_id(
    live_server: str, graphql: GraphQL, pool: asyncpg.Pool, alice: uuid.UUID
) -> None:
    # given a queued job whose character's stored image path is invalid (signing it logs a warning)
    character = await create_character(graphql, alice)
    job = await generate_portrait(graphql, alice, characterId=character["id"])
    await pool.execute("UPDATE characters SET image_url = $1 WHERE id = $2", "a\\b.png", uuid.UUID(character["id"]))
    headers = {"X-Request-ID": "alice-socket"}
    with logged_lines("resolvers.images") as lines:
        async with GraphQLSocket.open(live_server, token=token_for(alice), headers=headers) as socket:
            # when a subscription of the socket signs that image (its first answer: the job as it is)
            watched = await socket.subscribe(
                "subscription($id: ID!) { jobUpdated(id: $id) { status character { signedImageUrl { url } } } }",
                {"id": job["id"]},
            )
            first = await socket.next_result()
            # and another operation of the socket fails (an id that is nobody's)
            missing = await socket.subscribe(
                "subscription($id: ID!) { jobUpdated(id: $id) { status } }", {"id": str(uuid.uuid4())}
            )
            while (refused := await socket.next_result())["id"] != missing:
                pass

    # then the operation's log line carries the socket's id and its user
    assert first["id"] == watched and first["payload"]["data"]["jobUpdated"]["character"]["signedImageUrl"] is None
    [line] = lines
    assert (line["request_id"], line["user_id"], line["level"]) == ("alice-socket", str(alice), "WARNING")
    # and the other operation's error carries the socket's id
    [error] = errors_of(refused)
    assert error["extensions"]["code"] == "NOT_FOUND" and error["extensions"]["requestId"] == "alice-socket"
