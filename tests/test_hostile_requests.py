"""Hostile requests, generated from the schema, against a real `portraits serve` over HTTP and websockets.

One server process for the module (``portraits serve`` with its default
limits, on the test database, one worker with small images), attacked by
"mallory" while "alice" owns real rows: a character, a completed portrait
with its workspace and library images, a draft job. Hypothesis draws the
requests (tests/hostile_strategies.py, and hypothesis-graphql's valid and
invalid operations); every answer must be:

- no 5xx, and an answer at all within ``ANSWER_SECONDS``;
- a JSON body shaped as GraphQL: ``{"data": ...}`` and/or
  ``{"errors": [{"message", "extensions": {"code"}}]}``, never the masked
  ``INTERNAL_SERVER_ERROR``;
- free of stack traces, SQL, file-system paths, and of alice's data (her
  ids and texts), unless the request itself carried that text;
- with nothing logged as a crash (``ERROR`` or a traceback) by the server.

Websockets (graphql-transport-ws, after a valid ``connection_init``): each
script of messages is judged by the README's rules (``expected_of``): a
message the protocol does not allow must close the socket with its code
(4400, 4409, 4429; 1007 for a text frame that is not UTF-8, 1009 past 2 MiB),
well-formed ones must not close it, never 1011, every reply is GraphQL-shaped,
and nothing is logged as a crash. Afterwards the server answers ``/healthz``
and queries, alice's rows are intact, and its resident memory grew by at most
``RSS_GROWTH_BOUND``.

Seeds are fixed (``derandomize``): CI sends the same 1,100 HTTP requests
and at least 200 websocket messages each run. ``HOSTILE_EXAMPLES=20000``
sends that many HTTP requests (and a fifth as many websocket scripts) with
fresh random seeds instead; a failure prints the example to reproduce it.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import queue
import re
import time
import uuid
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from urllib.parse import unquote_to_bytes

import graphql
import httpx
import hypothesis_graphql
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect
from websockets.sync.connection import Connection
from websockets.typing import Subprotocol

from graph.schema import MAX_DOCUMENT_CHARS, MAX_TOKENS
from tests.conftest import token_for
from tests.hostile_strategies import (
    EDGE_DATES,
    SCHEMA,
    KnownIds,
    Operation,
    RawRequest,
    bad_ids,
    json_value_node,
    json_values,
    operations,
    query_strings,
    raw_bodies,
    texts,
)
from tests.server_process import READY, Server
from tests.support import TEST_JWT_SECRET, rss_bytes

EXAMPLES = int(os.environ.get("HOSTILE_EXAMPLES") or 0)
LONG_RUN = EXAMPLES > 0
HTTP_REQUESTS = max(EXAMPLES, 1_100)
WS_SCRIPTS = max(EXAMPLES // 5, 120)
# Each HTTP test's share of HTTP_REQUESTS.
SHARES = {"valid": 0.2, "invalid": 0.15, "schema": 0.3, "bodies": 0.2, "get": 0.15}
# Generous: an answer that takes longer is a stall, not slowness.
ANSWER_SECONDS = 30.0
# Growth of the server's resident memory over the whole module. Measured (CI's seeds): 98 -> 138 MiB, 40 MiB, with
# the 2 MiB body cap, 100,000-character documents and the parse and validation caches keeping only documents of at
# most 10,000 characters (256 each: a few MiB); 49 MiB while they kept 100,000-character ones (256 of those alone
# held 50 MiB). HOSTILE_EXAMPLES=3000 grew it 121 MiB, then 32 MiB once the document cache was bounded by characters
# (graph/document_cache.py), the GC pacer checked growth every minute and gave freed heap back (server/gc_pacer.py).
RSS_GROWTH_BOUND = 64 * 1024 * 1024
TRANSPORT_WS = Subprotocol("graphql-transport-ws")
# Close codes graphql-transport-ws gives a client's mistakes (README, "Malformed messages"): an invalid message, a
# subscribe reusing the id of a running operation, a second connection_init. (4403, no valid token, and 4408, no
# connection_init in time, cannot happen here: every socket is initialised with mallory's token first.)
INVALID_MESSAGE = 4400
DUPLICATE_ID = 4409
SECOND_INIT = 4429
# The WebSocket protocol's own close codes (RFC 6455, 7.4.1), from the websocket layer before graphql-transport-ws
# sees the message: a text frame that is not UTF-8, a message over the size limit (2 MiB).
INVALID_UTF8 = 1007
TOO_BIG = 1009
MAX_MESSAGE_BYTES = 2 * 1024 * 1024
MAX_OPERATION_ID = 128

LEAK_MARKERS = (
    "Traceback",
    'File "',
    "SELECT ",
    "INSERT ",
    "UPDATE ",
    "DELETE FROM",
    "asyncpg",
    "psycopg",
    "site-packages",
    '.py"',
    ".py:",
    "/home/",
    "/work/",
    "/tmp/",
    "/usr/lib/",
)
CRASH_LINE = re.compile(r"Traceback \(most recent call last\)|^(ERROR|CRITICAL):|^\S+ \S+ (ERROR|CRITICAL) ")


def hostile_settings(examples: int) -> settings:
    return settings(
        max_examples=examples,
        deadline=None,
        database=None,  # no example folder left in the work tree; a failure prints its reproduction
        derandomize=not LONG_RUN,
        print_blob=True,
        phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],  # no "explain": noise here
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.filter_too_much,
            HealthCheck.large_base_example,
        ],
    )


def share(name: str) -> int:
    return round(HTTP_REQUESTS * SHARES[name])


@dataclass
class Target:
    """The server under attack, the attacker's client, and what was sent and seen so far."""

    server: Server
    http: httpx.Client
    mallory: str  # the attacker's token
    alice: str
    ids: KnownIds
    secrets: tuple[str, ...]  # alice's ids and texts: never in an answer to mallory
    alice_character: dict[str, Any]
    baseline_rss: int = 0
    http_sent: int = 0
    ws_sent: int = 0
    ws_endings: Counter[str] = field(default_factory=Counter)  # how each websocket script ended: "answered" or a code
    completed: set[str] = field(default_factory=set)
    stalled: str | None = None
    log: list[str] = field(default_factory=list)
    unread_log: bool = False  # an example failed before reading what the server logged for it

    @property
    def ws_url(self) -> str:
        return self.server.url.replace("http://", "ws://") + "/graphql"

    def rss(self) -> int:
        return rss_bytes(self.server.process.pid)

    def new_log_lines(self) -> list[str]:
        """What the server logged since the last call, up to a probe request made now.

        The probe's access-log line comes after every line logged for the requests answered before it, so
        what a request made the server log is read with that request, not with the next one.
        """
        probe = uuid.uuid4().hex
        try:
            # (a connection of its own: the attacker's may be one the server has just dropped)
            httpx.get(f"{self.server.url}/healthz", params={"probe": probe}, timeout=ANSWER_SECONDS)
        except httpx.TimeoutException:
            self.stalled = self.stalled or "a request before a /healthz probe"
            raise AssertionError(f"/healthz did not answer within {ANSWER_SECONDS} s") from None
        lines: list[str] = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                line = self.server.lines.get(timeout=0.2)
            except queue.Empty:
                continue
            if probe in line:
                break
            lines.append(line)
        self.log += lines
        return lines

    def begin(self) -> None:
        """Before an example: fail at once after a stall; set aside what an earlier failed example made the server log.

        (What it logged stays in ``log`` for the last test.)
        """
        assert self.stalled is None, f"the server stalled earlier (no answer in {ANSWER_SECONDS} s) on {self.stalled}"
        if self.unread_log:
            self.new_log_lines()
        self.unread_log = True

    def assert_no_crash_logged(self, where: str) -> None:
        lines = self.new_log_lines()
        self.unread_log = False
        first = next((number for number, line in enumerate(lines) if CRASH_LINE.search(line)), None)
        assert first is None, f"the server logged a crash for {where}:\n" + "\n".join(lines[first:first + 90])

    def graphql(self, token: str, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        """A well-formed request by a well-behaved client (setup and checks)."""
        response = self.http.post(
            "/graphql", json={"query": query, "variables": variables or {}},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        assert "errors" not in body, body
        return body["data"]


def describe(request: httpx.Request) -> str:
    body = request.content
    shown = body if len(body) <= 600 else body[:600] + b"...(%d bytes)" % len(body)
    target = str(request.url)
    target = target if len(target) <= 600 else target[:600] + f"...({len(target)} characters)"
    headers = {name: value[:80] for name, value in request.headers.items() if name in ("content-type", "authorization")}
    return f"{request.method} {target} {headers} {shown!r}"


def sent_text(request: httpx.Request) -> str:
    """What the client itself said, in the forms a server may echo it: raw, percent-decoded, JSON-decoded."""
    raw = request.content.decode("utf-8", "replace")
    query = unquote_to_bytes(request.url.query).decode("utf-8", "replace")
    decoded = ""
    with contextlib.suppress(ValueError, RecursionError):
        decoded = json.dumps(json.loads(request.content), ensure_ascii=False)
    headers = " ".join(request.headers.values())
    # (escapes as JSON and GraphQL strings read them; Python warns of those it does not know, such as "\o")
    with warnings.catch_warnings(action="ignore", category=DeprecationWarning):
        unescaped = raw.encode().decode("unicode_escape", "replace")
    return "\n".join((raw, query, decoded, headers, unescaped))


def leaks(text: str, sent: str, secrets: tuple[str, ...]) -> list[str]:
    return [marker for marker in (*LEAK_MARKERS, *secrets) if marker in text and marker not in sent]


def assert_graphql_shaped(body: Any, where: str) -> None:
    """``{"data": ...}`` and/or ``{"errors": [{"message", "extensions": {"code"}}]}``, and no masked crash."""
    assert isinstance(body, dict), f"not a JSON object: {body!r:.300} for {where}"
    assert set(body) <= {"data", "errors", "extensions"}, f"not GraphQL-shaped: {body!r:.300} for {where}"
    assert "data" in body or "errors" in body, f"neither data nor errors: {body!r:.300} for {where}"
    assert body.get("data") is None or isinstance(body["data"], dict), f"data not an object: {body!r:.300}"
    if "errors" not in body:
        assert body.get("data") is not None, f"null data without errors for {where}"
        return
    errors = body["errors"]
    assert isinstance(errors, list) and errors, f"errors not a non-empty list: {body!r:.300} for {where}"
    for error in errors:
        assert isinstance(error, dict) and isinstance(error.get("message"), str), f"bad error {error!r:.300}"
        extensions = error.get("extensions")
        assert isinstance(extensions, dict) and isinstance(extensions.get("code"), str), (
            f"error without extensions.code: {error!r:.300} for {where}"
        )
        assert extensions["code"] != "INTERNAL_SERVER_ERROR", f"a masked crash: {error!r:.300} for {where}"


def exchange(target: Target, request: httpx.Request) -> httpx.Response:
    """Send ``request`` and check the answer against the module's rules; the answer, for more checks."""
    target.begin()
    where = describe(request)
    target.http_sent += 1
    try:
        response = target.http.send(request)
    except httpx.TimeoutException:
        target.stalled = where
        raise AssertionError(f"no answer within {ANSWER_SECONDS} s to {where}") from None
    except httpx.TransportError as error:
        raise AssertionError(f"no HTTP answer ({error!r}) to {where}") from None
    text = response.content.decode("utf-8", "replace")
    assert response.status_code < 500, f"{response.status_code} {text[:300]!r} for {where}"
    content_type = response.headers.get("content-type", "")
    assert content_type.startswith(("application/json", "application/graphql-response+json")), (
        f"{response.status_code} with content type {content_type!r}: {text[:300]!r} for {where}"
    )
    try:
        body = json.loads(response.content)
    except ValueError:
        raise AssertionError(f"{response.status_code} body is not JSON: {text[:300]!r} for {where}") from None
    assert_graphql_shaped(body, where)
    found = leaks(text, sent_text(request), target.secrets)
    assert not found, f"{found} in {text[:500]!r} for {where}"
    target.assert_no_crash_logged(where)
    return response


# -- the server and the victim's rows ---------------------------------------------------------

VICTIM_CHARACTER = """
mutation($input: CreateCharacterInput!) { createCharacter(input: $input) { id name description } }
"""
PORTRAIT = "mutation($id: ID!) { generateCharacterPortrait(input: {characterId: $id, seed: 7}) { id } }"
DRAFT = (
    "mutation($name: String!) { generateCharacterPortrait(input: {draft: {name: $name, description: $name}}) { id } }"
)
JOB = "query($id: ID!) { job(id: $id) { status workspaceAsset { id path } libraryAsset { id path } } }"
CHARACTERS = "{ characters(first: 5) { edges { cursor node { id name description imageUrl } } } }"


def wait_until_done(target: Target, token: str, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while True:
        job: dict[str, Any] = target.graphql(token, JOB, {"id": job_id})["job"]
        if job["status"] in ("COMPLETED", "FAILED", "CANCELED"):
            assert job["status"] == "COMPLETED", job
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.05)


@pytest.fixture(scope="module")
def target(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    alice_id, mallory_id = uuid.uuid4(), uuid.uuid4()
    server = Server(
        tmp_path_factory.mktemp("hostile"),
        DATABASE_URL=database_url,
        JWT_SECRET=TEST_JWT_SECRET,
        WORKERS="1",
        IMAGE_SIZE="64",
        THUMBNAIL_MAX_SIDE="16",
        LOG_LEVEL="info",
    )
    try:
        server.wait_for(READY)
        with httpx.Client(base_url=server.url, timeout=ANSWER_SECONDS) as http:
            alice_token = token_for(alice_id, ttl=timedelta(days=1))
            mallory_token = token_for(mallory_id, ttl=timedelta(days=1))
            setup = Target(server, http, mallory_token, alice_token, KnownIds((), (), ()), (), {})
            secret = uuid.uuid4().hex
            character = setup.graphql(alice_token, VICTIM_CHARACTER, {"input": {
                "name": f"Alice {secret[:8]}", "description": f"Secret {secret}", "appearanceTags": ["red hair"],
            }})["createCharacter"]
            job_id = setup.graphql(alice_token, PORTRAIT, {"id": character["id"]})["generateCharacterPortrait"]["id"]
            job = wait_until_done(setup, alice_token, job_id)
            draft = setup.graphql(alice_token, DRAFT, {"name": f"Draft {secret[:8]}"})["generateCharacterPortrait"]
            wait_until_done(setup, alice_token, draft["id"])
            own = setup.graphql(mallory_token, VICTIM_CHARACTER, {"input": {"name": "M", "description": "M"}})
            own_character = own["createCharacter"]["id"]
            alice_list = setup.graphql(alice_token, CHARACTERS)["characters"]["edges"]
            mallory_list = setup.graphql(mallory_token, CHARACTERS)["characters"]["edges"]
            foreign = (
                character["id"], job_id, draft["id"], job["workspaceAsset"]["id"], job["libraryAsset"]["id"],
            )
            ids = KnownIds(
                foreign=foreign,
                own=(own_character,),
                cursors=tuple(edge["cursor"] for edge in (*alice_list, *mallory_list)),
            )
            target = Target(
                server, http, mallory_token, alice_token, ids,
                secrets=(*foreign, str(alice_id), secret, secret[:8]),
                alice_character=alice_list[0]["node"],
            )
            target.new_log_lines()
            for _ in range(20):  # warm up: the first requests fill caches and pools
                target.graphql(mallory_token, "{ viewer { id } characters { edges { node { id } } } }")
            target.baseline_rss = target.rss()
            yield target
    finally:
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait()


# -- the attacker's headers ------------------------------------------------------------------------


def authorizations(target: Target) -> st.SearchStrategy[dict[str, str]]:
    """Mostly mallory's own token; else none, a broken one, an expired one, or a header of another scheme."""
    expired = token_for(uuid.uuid4(), ttl=timedelta(minutes=-5))
    broken = st.sampled_from((
        "Bearer x.y.z", "Bearer", "Basic dXNlcjpwYXNz", "bearer " + target.mallory, "Bearer " + target.mallory + "x",
        "Bearer " + expired, "Bearer " + "a" * 8_000,
    ))
    return st.one_of(
        st.just({"Authorization": f"Bearer {target.mallory}"}),
        st.just({"Authorization": f"Bearer {target.mallory}"}),
        st.just({}),
        broken.map(lambda value: {"Authorization": value}),
    )


def post(target: Target, operation: Operation, headers: dict[str, str]) -> httpx.Response:
    body = json.dumps(operation.payload()).encode()
    request = target.http.build_request(
        "POST", "/graphql", content=body, headers={**headers, "Content-Type": "application/json"}
    )
    return exchange(target, request)


def custom_scalars(ids: KnownIds) -> dict[str, st.SearchStrategy[graphql.ValueNode]]:
    """hypothesis-graphql's values for our scalars: real and bad ids, any JSON, edge dates."""
    return {
        "ID": bad_ids(ids).map(lambda value: graphql.StringValueNode(value=value)),
        "JSON": json_values().map(json_value_node),
        "DateTime": st.sampled_from(EDGE_DATES).map(lambda value: graphql.StringValueNode(value=value)),
    }


def run_http(target: Target, name: str, strategy: st.SearchStrategy[Any], send: Callable[[Any], object]) -> None:
    """Draw ``share(name)`` examples and ``send`` each; then check that many requests really went out."""
    before = target.http_sent

    @hostile_settings(share(name))
    @given(strategy)
    def attack(example: Any) -> None:
        send(example)

    attack()
    assert target.http_sent - before >= share(name)
    target.completed.add(name)


# -- HTTP --------------------------------------------------------------------------------------


def test_valid_operations_from_the_schema_are_answered_as_graphql(target: Target) -> None:
    # given every query and mutation of the schema, with valid arguments of any value (hypothesis-graphql)
    strategy = st.tuples(
        hypothesis_graphql.from_schema(SCHEMA, custom_scalars=custom_scalars(target.ids)),
        authorizations(target),
    )
    # when mallory (or an anonymous or badly authenticated client) sends them, then each answer follows the rules
    run_http(target, "valid", strategy, lambda drawn: post(target, Operation(drawn[0]), drawn[1]))


def test_operations_with_one_schema_violation_are_answered_as_graphql(target: Target) -> None:
    # given operations with one violation each: a wrong argument type, a missing argument, an unknown enum value
    strategy = st.tuples(
        hypothesis_graphql.from_schema(
            SCHEMA, custom_scalars=custom_scalars(target.ids), mode=hypothesis_graphql.Mode.NEGATIVE
        ),
        authorizations(target),
    )
    run_http(target, "invalid", strategy, lambda drawn: post(target, Operation(drawn[0]), drawn[1]))


def test_hostile_documents_built_from_the_schema_are_answered_as_graphql(target: Target) -> None:
    # given documents built from the schema: wrong, huge and empty values, bad ids and cursors, deep and wide
    # selections, aliases, fragments spreading each other, directives, unknown names, JSON variables of any shape
    strategy = st.tuples(operations(target.ids), authorizations(target))
    run_http(target, "schema", strategy, lambda drawn: post(target, drawn[0], drawn[1]))


def send_raw(target: Target, raw: RawRequest, headers: dict[str, str]) -> None:
    all_headers = dict(headers)
    if raw.content_type is not None:
        all_headers["Content-Type"] = raw.content_type
    if raw.method == "GET":
        all_headers["Accept"] = "application/graphql-response+json, application/json"
    url = httpx.URL(target.server.url + "/graphql", query=raw.query_string)
    request = target.http.build_request(raw.method, url, content=raw.body or None, headers=all_headers)
    if raw.content_type is None:
        request.headers.pop("Content-Type", None)
    exchange(target, request)


def test_raw_bodies_and_content_types_are_answered_as_graphql(target: Target) -> None:
    # given POST bodies of raw bytes, JSON that is no operation, batches, cut or corrupted operations,
    # invalid UTF-8, lone surrogates, huge numbers and deep nesting, under any content type
    strategy = st.tuples(raw_bodies(target.ids), authorizations(target))
    run_http(target, "bodies", strategy, lambda drawn: send_raw(target, drawn[0], drawn[1]))


def test_get_requests_with_random_query_strings_are_answered_as_graphql(target: Target) -> None:
    # given GET requests: operations of every kind, bad variables, repeated keys, broken percent-encoding
    strategy = st.tuples(query_strings(target.ids), authorizations(target))
    run_http(target, "get", strategy, lambda drawn: send_raw(target, drawn[0], drawn[1]))


# -- websockets ------------------------------------------------------------------------------------

LONG_RUNNING = "subscription { portraitJobs { id status } }"


def frames(ids: KnownIds) -> st.SearchStrategy[str | bytes]:
    """One client message after connection_init: malformed in every way graphql-transport-ws allows, or not."""
    message_ids = st.one_of(
        st.sampled_from(("1", "2", "a")), st.text(max_size=10), json_values(2),
        st.integers(10_000, 200_000).map(lambda length: "i" * length),
    )
    payloads = st.one_of(
        json_values(4),
        st.fixed_dictionaries({"query": json_values(2)}),
        st.fixed_dictionaries({"query": st.just(LONG_RUNNING)}, optional={"variables": json_values(3),
                                                                         "operationName": json_values(2),
                                                                         "extensions": json_values(3)}),
        operations(ids).map(Operation.payload),
    )
    as_json = st.one_of(
        st.fixed_dictionaries({"type": st.just("subscribe"), "id": message_ids, "payload": payloads}),
        st.fixed_dictionaries({"type": st.just("subscribe")}, optional={"id": message_ids, "payload": payloads}),
        st.fixed_dictionaries({"type": st.just("complete")}, optional={"id": message_ids}),
        st.fixed_dictionaries({"type": st.sampled_from(("ping", "pong"))}, optional={"payload": json_values(3)}),
        st.fixed_dictionaries({"type": st.sampled_from(("connection_init", "connection_ack", "next", "error",
                                                        "start", "stop", "data", "ka", "connection_terminate"))},
                              optional={"id": message_ids, "payload": json_values(3)}),
        st.fixed_dictionaries({"type": json_values(2)}, optional={"id": message_ids, "payload": json_values(2)}),
        json_values(6),
    )
    return st.one_of(
        as_json.map(json.dumps),
        st.text(max_size=40),
        texts(),
        st.binary(max_size=40),
        st.sampled_from(("", "{", "}", "null", "[]", '{"type": "subscribe"', '{"type":"subscribe","id":"1"}')),
    )


def scripts(ids: KnownIds) -> st.SearchStrategy[list[str | bytes]]:
    """A few messages, sometimes two subscribes under one id while the first still runs."""
    duplicate = st.integers(0, 3).map(
        lambda _: [json.dumps({"type": "subscribe", "id": "dup", "payload": {"query": LONG_RUNNING}})] * 2
    )
    return st.one_of(st.lists(frames(ids), min_size=1, max_size=4), duplicate)


def assert_transport_message(raw: str | bytes, where: str, secrets: tuple[str, ...], sent: str) -> dict[str, Any]:
    assert isinstance(raw, str), f"a binary frame {raw!r:.100} after {where}"
    found = leaks(raw, sent, secrets)
    assert not found, f"{found} in {raw[:500]!r} after {where}"
    message = json.loads(raw)
    assert isinstance(message, dict), f"{raw[:300]!r} after {where}"
    kind = message.get("type")
    assert kind in ("next", "error", "complete", "ping", "pong"), f"{raw[:300]!r} after {where}"
    if kind == "next":
        assert_graphql_shaped(message.get("payload"), where)
    if kind == "error":
        errors = message.get("payload")
        assert isinstance(errors, list) and errors, f"{raw[:300]!r} after {where}"
        assert_graphql_shaped({"errors": errors}, where)
    return message


def open_socket(target: Target) -> ClientConnection:
    socket = connect(
        target.ws_url, subprotocols=[TRANSPORT_WS], open_timeout=10, close_timeout=5, max_size=None, proxy=None
    )
    socket.send(json.dumps({"type": "connection_init", "payload": {"Authorization": f"Bearer {target.mallory}"}}))
    acknowledged = json.loads(socket.recv(timeout=10))
    assert acknowledged == {"type": "connection_ack"} or acknowledged.get("type") == "connection_ack", acknowledged
    return socket


@dataclass
class Expected:
    """What a script may and must make the server do: the close codes its frames allow, and whether one must close.

    Worked out from the README's rules, not from the server's code: a frame the protocol does not allow must close
    the socket with its code; a frame the rules leave open (an integer between 2**63 and 2**64, say) may.
    """

    sent: int  # how many of the script's frames are sent (followed by the end marker when all are)
    codes: set[int | None] = field(default_factory=set)  # None: the connection ended without a close frame
    must_close: bool = False
    running: set[str] = field(default_factory=set)  # ids of subscriptions that run until completed
    subscribed: set[str] = field(default_factory=set)

    def close(self, code: int | None, *, must: bool = True) -> None:
        self.codes.add(code)
        self.must_close = self.must_close or must


def expected_of(script: list[str | bytes]) -> Expected:
    expected = Expected(sent=len(script))
    for number, frame in enumerate(script):
        if layer_closes(frame):
            # The websocket layer closes the connection at once (uvicorn reads on only for a close the app sent):
            # a frame sent after it would be answered with a TCP reset, which may overtake the close frame. So
            # it is the last frame sent, and it may close the socket even after one the app closes it for, when
            # both were read at once.
            expected.sent = number + 1
            if frame_bytes(frame) > MAX_MESSAGE_BYTES:
                expected.close(TOO_BIG)
                # (the server stops reading in the middle of the frame: the unread rest makes its TCP stack reset
                # the connection, which may overtake the close frame)
                expected.close(None)
            else:
                expected.close(INVALID_UTF8)
            break
        if not expected.must_close:  # (else the socket is closing: what follows is not read)
            expect_frame(expected, frame)
    return expected


def frame_bytes(frame: str | bytes) -> int:
    return len(frame.encode("utf-8", "surrogatepass") if isinstance(frame, str) else frame)


def layer_closes(frame: str | bytes) -> bool:
    """A frame the websocket layer closes the connection for (1007 or 1009), before the app sees it."""
    return frame_bytes(frame) > MAX_MESSAGE_BYTES or not_utf8(frame)


def expect_frame(expected: Expected, frame: str | bytes) -> None:
    if isinstance(frame, bytes):
        expected.close(INVALID_MESSAGE)  # "WebSocket message type must be text"
        return
    try:
        message = json.loads(frame)
    except (ValueError, RecursionError):
        expected.close(INVALID_MESSAGE)  # not JSON (Python's decoder is the more lenient one)
        return
    strictness = strict_json_trouble(message, frame)
    if strictness is not None:
        expected.close(INVALID_MESSAGE, must=strictness == "must")
        if strictness == "must":
            return
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        expected.close(INVALID_MESSAGE)
        return
    kind = message["type"]
    if kind == "connection_init":
        # a malformed one is an invalid message first, as graphql-ws's own server reads it (then a second init)
        valid_payload = isinstance(message.get("payload"), dict | None)
        expected.close(SECOND_INIT if valid_payload else INVALID_MESSAGE)
    elif kind in ("ping", "pong"):
        if not isinstance(message.get("payload"), dict | None):
            expected.close(INVALID_MESSAGE, must=False)  # (the README does not name ping payloads)
    elif kind == "complete":
        if not well_formed_id(message.get("id")):
            expected.close(INVALID_MESSAGE)
        else:
            expected.running.discard(message["id"])
    elif kind == "subscribe":
        expect_subscribe(expected, message)
    else:
        expected.close(INVALID_MESSAGE)  # a type graphql-transport-ws does not have, or one only servers send


def expect_subscribe(expected: Expected, message: dict[str, Any]) -> None:
    payload = message.get("payload")
    if (
        not well_formed_id(message.get("id"))
        or not isinstance(payload, dict)
        or not isinstance(payload.get("query"), str)
        or not isinstance(payload.get("variables"), dict | None)
        or not isinstance(payload.get("extensions"), dict | None)
    ):
        expected.close(INVALID_MESSAGE)
        return
    if not isinstance(payload.get("operationName"), str | None):
        expected.close(INVALID_MESSAGE, must=False)  # (the README does not name it)
        return
    expect_document(expected, payload["query"], payload.get("operationName"))
    operation_id = message["id"]
    if operation_id in expected.running:
        expected.close(DUPLICATE_ID)
    elif operation_id in expected.subscribed:
        expected.close(DUPLICATE_ID, must=False)  # if the first is still being answered
    expected.subscribed.add(operation_id)
    if payload == {"query": LONG_RUNNING}:
        expected.running.add(operation_id)


def expect_document(expected: Expected, query: str, operation_name: str | None) -> None:
    """A document that does not parse, or holds no operation of that name, may close the socket (4400), as
    graphql-ws's server does (ours answers a syntax error with an error for the id); one over the length limit gets
    an error and the socket goes on.
    """
    if len(query) > MAX_DOCUMENT_CHARS:
        return
    try:
        document = graphql.parse(query, max_tokens=MAX_TOKENS)
    except (graphql.GraphQLError, RecursionError):
        expected.close(INVALID_MESSAGE, must=False)
        return
    names = [
        definition.name.value if definition.name else None
        for definition in document.definitions
        if isinstance(definition, graphql.OperationDefinitionNode)
    ]
    if not names or (operation_name is not None and operation_name not in names):
        expected.close(INVALID_MESSAGE, must=False)


def well_formed_id(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_OPERATION_ID


def strict_json_trouble(value: Any, text: str) -> str | None:
    """How the README's JSON bounds judge what Python's lenient decoder read: "must" refuse, "may", or None."""
    if text.count("[") + text.count("{") > 20_000:
        return "must"
    verdicts = set()
    pending: list[tuple[Any, int]] = [(value, 0)]
    while pending:
        item, depth = pending.pop()
        if depth > 1_000:
            verdicts.add("may")  # (orjson's bound is 1024 levels)
        if isinstance(item, dict):
            pending += [(key, depth + 1) for key in item] + [(child, depth + 1) for child in item.values()]
        elif isinstance(item, list):
            pending += [(child, depth + 1) for child in item]
        elif isinstance(item, str) and not_utf8(item):
            verdicts.add("must")  # a lone surrogate
        elif isinstance(item, float) and not math.isfinite(item):
            verdicts.add("must")
        elif isinstance(item, int) and not isinstance(item, bool) and item not in range(-(2**63), 2**63):
            verdicts.add("may" if item in range(2**63, 2**64) else "must")  # (unsigned 64 bits: the README is vague)
    return "must" if "must" in verdicts else "may" if verdicts else None


def not_utf8(frame: str | bytes) -> bool:
    """A text frame that is not UTF-8: a str holding a lone surrogate."""
    if isinstance(frame, bytes):
        return False
    try:
        frame.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def send_frame(socket: Connection, frame: str | bytes) -> None:
    """A str as a text frame, a lone surrogate in it sent as its raw (invalid UTF-8) bytes; bytes as a binary frame.

    (The client would refuse to encode the surrogate; a hostile client sends the bytes anyway.)
    """
    if isinstance(frame, str) and not_utf8(frame):
        socket.send(frame.encode("utf-8", "surrogatepass"), text=True)
    else:
        socket.send(frame)


def play(target: Target, script: list[str | bytes]) -> None:
    """Send ``script`` on a fresh socket, then a query whose answer marks the end; check all that came back.

    The socket must be closed with one of the codes the script allows (``expected_of``) and must not be closed
    without one; a script that must close it must not reach the end marker.
    """
    target.begin()
    shown = [frame if len(frame) <= 300 else frame[:300] for frame in script]
    where = f"websocket messages {shown!r}"
    sent = "\n".join(frame if isinstance(frame, str) else frame.decode("utf-8", "replace") for frame in script)
    end = f"end-{uuid.uuid4().hex}"
    expected = expected_of(script)
    with open_socket(target) as socket:
        try:
            for frame in script[: expected.sent]:
                target.ws_sent += 1
                send_frame(socket, frame)
            if expected.sent == len(script):
                socket.send(json.dumps({"type": "subscribe", "id": end, "payload": {"query": "{ viewer { id } }"}}))
            deadline = time.monotonic() + ANSWER_SECONDS
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    target.stalled = where
                    raise AssertionError(f"no end of the answers within {ANSWER_SECONDS} s to {where}")
                try:
                    raw = socket.recv(timeout=remaining)
                except TimeoutError:
                    continue
                message = assert_transport_message(raw, where, target.secrets, sent)
                if message.get("id") == end and message["type"] in ("complete", "error"):
                    break
            assert not expected.must_close, f"not closed ({sorted(expected.codes, key=str)} expected) after {where}"
            target.ws_endings["answered"] += 1
        except ConnectionClosed as closed:
            code = closed.rcvd.code if closed.rcvd else None
            reason = closed.rcvd.reason if closed.rcvd else ""
            allowed = sorted(expected.codes, key=str)
            assert code in expected.codes, f"closed with {code} {reason!r} ({allowed} allowed) after {where}"
            target.ws_endings[str(code)] += 1
            found = leaks(reason, sent, target.secrets)
            assert not found, f"{found} in the close reason {reason!r} after {where}"
    target.assert_no_crash_logged(where)


def test_malformed_websocket_messages_get_the_protocols_own_answers(target: Target) -> None:
    # given an authenticated graphql-transport-ws socket per example
    before = target.ws_sent

    # when mallory sends malformed messages: not JSON, binary, wrong types, unknown message types, subscribes with
    # bad payloads or ids, duplicate and huge ids, a second connection_init, pings and pongs of any payload
    @hostile_settings(WS_SCRIPTS)
    @given(scripts(target.ids))
    def attack(script: list[str | bytes]) -> None:
        play(target, script)

    # then each gets an error, a complete or a protocol close code (never 1011), and no crash is logged
    attack()
    assert target.ws_sent - before >= WS_SCRIPTS
    target.completed.add("websocket messages")


def test_subscriptions_built_from_the_schema_are_answered_as_graphql(target: Target) -> None:
    # given subscription documents built from the schema (bad ids among the arguments), and queries and mutations
    before = target.ws_sent

    @hostile_settings(WS_SCRIPTS // 2)
    @given(operations(target.ids, roots=("subscription", "subscription", "query", "mutation")))
    def attack(operation: Operation) -> None:
        play(target, [json.dumps({"type": "subscribe", "id": "s", "payload": operation.payload()})])

    attack()
    assert target.ws_sent - before >= WS_SCRIPTS // 2
    target.completed.add("websocket operations")


# -- afterwards ------------------------------------------------------------------------------------


def test_afterwards_the_server_is_healthy_kept_alices_rows_and_its_memory(target: Target) -> None:
    # (after every test above: they share the module's server)
    assert target.stalled is None, f"the server stalled on {target.stalled}"
    assert target.server.process.poll() is None, "the server process died"

    # then it answers its health check and a plain query, and alice's character is as it was
    assert target.http.get("/healthz").status_code == 200
    viewer = target.graphql(target.mallory, "{ viewer { id } }")["viewer"]
    assert viewer["id"]
    edges = target.graphql(target.alice, CHARACTERS)["characters"]["edges"]
    assert target.alice_character in [edge["node"] for edge in edges]

    # and its resident memory grew within the bound, with nothing logged as a crash
    time.sleep(0.5)
    growth = target.rss() - target.baseline_rss
    print(f"server RSS {target.baseline_rss / 2**20:.1f} MiB -> {target.rss() / 2**20:.1f} MiB; "
          f"{target.http_sent} HTTP requests, {target.ws_sent} websocket messages; sockets: {dict(target.ws_endings)}")
    assert growth <= RSS_GROWTH_BOUND, f"RSS grew by {growth / 2**20:.1f} MiB"
    target.assert_no_crash_logged("the whole run")
    everything = "\n".join(target.log)
    assert "Traceback" not in everything

    # and, when every generating test above ran, the counts the issue asks for were reached
    if {"valid", "invalid", "schema", "bodies", "get"} <= target.completed:
        assert target.http_sent >= 1_000
    if {"websocket messages", "websocket operations"} <= target.completed:
        assert target.ws_sent >= 200
