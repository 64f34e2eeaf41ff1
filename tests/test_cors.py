"""CORS for browser apps on other origins: the setting, preflights, answers' headers, and websocket origins.

The session's app runs in development with CORS_ALLOWED_ORIGINS unset, so the dev tools' origins are allowed
(``http://localhost:5173``, Vite's) and any other (``https://evil.example``) is not.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import websockets
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.types import Message
from websockets.exceptions import InvalidStatus
from websockets.typing import Origin, Subprotocol

from server.cors import ALLOWED_HEADERS, DEV_ORIGINS, MAX_AGE_SECONDS, CrossOrigin, cors_description
from server.settings import Settings, SettingsError
from server.uvicorn_logs import UVICORN_LOGGER, demote_client_faults
from server.websocket import ORIGIN_REFUSED_CODE, refuse_origin
from storage.objects.local import SIGN_ROUTE
from storage.objects.paths import Bucket
from storage.objects.store import ObjectStore
from tests.conftest import token_for
from tests.realtime_support import TRANSPORT_WS, GraphQLSocket
from tests.support import TEST_JWT_SECRET

ALLOWED = "http://localhost:5173"
REFUSED = "https://evil.example"
QUERY = {"query": "{ __typename }"}
# What Apollo Client with client awareness, and a request id, make a browser ask for.
CLIENT_HEADERS = "authorization, content-type, apollographql-client-name, apollographql-client-version, x-request-id"


def preflight(origin: str, *, method: str = "POST", headers: str = CLIENT_HEADERS) -> dict[str, str]:
    return {"Origin": origin, "Access-Control-Request-Method": method, "Access-Control-Request-Headers": headers}


# --- the setting


def origins(tmp_path: Path, **environ: str) -> tuple[str, ...]:
    base = {"PORTRAITS_DATA_DIR": str(tmp_path), "JWT_SECRET": TEST_JWT_SECRET}
    return Settings.from_environ({**base, **environ}).cors_allowed_origins


def test_development_allows_the_dev_servers_of_common_tools_and_production_none(tmp_path: Path) -> None:
    """Unset, the setting is the dev tools' origins in development (`make run`) and empty in production."""
    # given no CORS_ALLOWED_ORIGINS / when settings are read / then
    development = origins(tmp_path)
    assert {"http://localhost:5173", "http://127.0.0.1:5173", "http://localhost:3000", "http://localhost:4200",
            "http://127.0.0.1:8080"} <= set(development)
    assert development == DEV_ORIGINS
    assert origins(tmp_path, PORTRAITS_ENV="production", DATABASE_URL="postgresql://db/portraits") == ()
    # and set but empty, development allows none either
    assert origins(tmp_path, CORS_ALLOWED_ORIGINS="") == ()


def test_origins_are_read_as_browsers_send_them(tmp_path: Path) -> None:
    """Spaces and empty entries are dropped; scheme and host lower-cased; a default port dropped; duplicates once."""
    # given a list written by hand / when read / then
    raw = " https://App.Example.com:443 , http://localhost:5173,,https://app.example.com, capacitor://localhost "
    assert origins(tmp_path, CORS_ALLOWED_ORIGINS=raw) == (
        "https://app.example.com", "http://localhost:5173", "capacitor://localhost"
    )
    assert origins(tmp_path, CORS_ALLOWED_ORIGINS="http://[::1]:3000") == ("http://[::1]:3000",)
    assert origins(tmp_path, CORS_ALLOWED_ORIGINS="*") == ("*",)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("https://app.example.com/", "has a path"),
        ("https://app.example.com/app", "has a path"),
        ("https://app.example.com?x=1", "has a path or query"),
        ("app.example.com", "is not an origin; write scheme://host"),
        ("localhost:5173", "is not an origin"),
        ("https://", "is not an origin"),
        ("https://user@app.example.com", "holds a user name"),
        ("https://app.example.com:99999", "invalid port"),
        ("https://*.example.com", "wildcards are not supported"),
        ("*, https://app.example.com", "must stand alone"),
        ("null", "'null' is not allowed"),
    ],
)
def test_a_malformed_origin_stops_the_start_saying_what_to_write(tmp_path: Path, raw: str, message: str) -> None:
    """Each entry is checked at start; the error names the setting and the entry."""
    # given a bad entry / when settings are read / then they refuse it
    with pytest.raises(SettingsError, match=message) as refused:
        origins(tmp_path, CORS_ALLOWED_ORIGINS=raw)
    assert "CORS_ALLOWED_ORIGINS" in str(refused.value)


def test_the_start_banner_says_which_origins_may_call() -> None:
    """`serve` prints the allowed origins, the dev defaults in short, and says how to allow any when none are."""
    # given each kind of setting / when described / then
    assert cors_description(DEV_ORIGINS) == (
        "dev servers' origins: http://localhost and http://127.0.0.1 on ports 3000, 4173, 4200, 5173, 8080"
    )
    assert "set CORS_ALLOWED_ORIGINS" in cors_description(())
    assert cors_description(("https://a.example", "https://b.example")) == "https://a.example, https://b.example"


# --- HTTP


async def test_a_preflight_from_an_allowed_origin_gets_what_graphql_clients_send(client: httpx.AsyncClient) -> None:
    """The preflight names the origin, the methods, every client header, no credentials, and a cache time."""
    # when an allowed origin's page asks before a POST with a token and Apollo's headers
    response = await client.options("/graphql", headers=preflight(ALLOWED))

    # then it may send them, without credentials, and the answer may be cached
    assert response.status_code == 200, response.text
    assert response.headers["access-control-allow-origin"] == ALLOWED
    assert {"GET", "POST"} <= {m.strip() for m in response.headers["access-control-allow-methods"].split(",")}
    allowed = {h.strip().lower() for h in response.headers["access-control-allow-headers"].split(",")}
    assert set(ALLOWED_HEADERS) <= allowed and {"authorization", "content-type", "x-request-id"} <= allowed
    assert "access-control-allow-credentials" not in response.headers
    assert response.headers["access-control-max-age"] == str(MAX_AGE_SECONDS)
    assert "Origin" in response.headers["vary"]


async def test_a_preflight_from_another_origin_is_refused_saying_why(client: httpx.AsyncClient) -> None:
    """A 403 whose GraphQL-shaped body says the origin is not in CORS_ALLOWED_ORIGINS; no CORS headers."""
    # when a page on an origin not on the list asks
    response = await client.options("/graphql", headers=preflight(REFUSED))

    # then it is refused, clearly
    assert response.status_code == 403
    assert "access-control-allow-origin" not in response.headers
    error = response.json()["errors"][0]
    assert error["message"] == f"Origin {REFUSED} is not in CORS_ALLOWED_ORIGINS"
    assert error["extensions"]["code"] == "FORBIDDEN"
    assert error["extensions"]["requestId"] == response.headers["x-request-id"]


async def test_a_preflight_asking_for_a_header_clients_do_not_send_is_refused(client: httpx.AsyncClient) -> None:
    """Only the listed headers pass: an allowed origin asking for another one gets a failed preflight (not 2xx)."""
    # when / then
    response = await client.options("/graphql", headers=preflight(ALLOWED, headers="x-secret-admin"))
    assert response.status_code == 400
    assert response.text == "Disallowed CORS headers"


async def test_an_allowed_origins_answer_carries_cors_headers_and_exposes_the_request_id(
    client: httpx.AsyncClient,
) -> None:
    """A POST from an allowed origin is answered with its origin, no credentials, and X-Request-ID readable."""
    # when
    response = await client.post("/graphql", json=QUERY, headers={"Origin": ALLOWED})

    # then
    assert response.status_code == 200 and response.json() == {"data": {"__typename": "Query"}}
    assert response.headers["access-control-allow-origin"] == ALLOWED
    assert response.headers["access-control-expose-headers"] == "X-Request-ID"
    assert "access-control-allow-credentials" not in response.headers
    assert "Origin" in response.headers["vary"]


async def test_another_origins_answer_carries_no_cors_headers(client: httpx.AsyncClient) -> None:
    """The server answers (it cannot tell a browser from curl), but the browser keeps the answer from the page."""
    # when
    response = await client.post("/graphql", json=QUERY, headers={"Origin": REFUSED})

    # then
    assert response.status_code == 200
    assert "access-control-allow-origin" not in response.headers


async def test_a_refusal_of_the_request_limits_is_readable_by_an_allowed_page(client: httpx.AsyncClient) -> None:
    """A body over the cap is refused 413 outside GraphQL, and the refusal still carries the CORS headers."""
    # given a body announced over the 2 MiB cap
    headers = {"Origin": ALLOWED, "Content-Type": "application/json", "Content-Length": str(64 * 1024 * 1024)}

    # when it is sent
    response = await client.post("/graphql", content=b"{}", headers=headers)

    # then the page can read why
    assert response.status_code == 413
    assert response.headers["access-control-allow-origin"] == ALLOWED
    assert response.json()["errors"][0]["extensions"]["code"] == "PAYLOAD_TOO_LARGE"


async def test_other_routes_have_no_cors(client: httpx.AsyncClient) -> None:
    """Only /graphql and signed objects are for browser apps: /healthz gets neither headers nor a preflight answer."""
    # when
    preflighted = await client.options("/healthz", headers=preflight(ALLOWED, method="GET"))
    plain = await client.get("/healthz", headers={"Origin": ALLOWED})

    # then
    assert preflighted.status_code == 405
    assert "access-control-allow-origin" not in plain.headers


async def test_a_signed_image_may_be_embedded_and_fetched_by_an_allowed_page(
    client: httpx.AsyncClient, local_store: ObjectStore
) -> None:
    """Cross-Origin-Resource-Policy lets <img> on any origin load it; an allowed page's fetch reads it too."""
    # given a stored image and its signed URL
    path = f"{uuid.uuid4()}/job_char.png"
    await local_store.put(Bucket.USER_LIBRARY, path, b"\x89PNG\r\n\x1a\n" + bytes(64))
    now = int(time.time())
    url = local_store.sign(Bucket.USER_LIBRARY, path, issued_at=now, expires_at=now + 600)
    assert SIGN_ROUTE in url

    # when a page on an allowed origin loads it, after a preflight for a header
    asked = await client.options(url, headers=preflight(ALLOWED, method="GET", headers="x-request-id"))
    loaded = await client.get(url, headers={"Origin": ALLOWED})
    embedded = await client.get(url, headers={"Origin": REFUSED})

    # then
    assert asked.status_code == 200 and asked.headers["access-control-allow-origin"] == ALLOWED
    assert loaded.status_code == 200 and loaded.headers["access-control-allow-origin"] == ALLOWED
    assert loaded.headers["cross-origin-resource-policy"] == "cross-origin"
    assert embedded.status_code == 200 and embedded.headers["cross-origin-resource-policy"] == "cross-origin"
    assert "access-control-allow-origin" not in embedded.headers


async def test_any_origin_when_the_setting_is_a_star_still_without_credentials() -> None:
    """CORS_ALLOWED_ORIGINS=* answers every origin with `*`, which browsers never combine with credentials."""

    # given the middleware as create_app puts it, allowing any origin, before a plain route
    async def hello(request: Request) -> PlainTextResponse:
        return PlainTextResponse("hello")

    app = CrossOrigin(Starlette(routes=[Route("/graphql", hello)]), origins=("*",), paths=("/graphql",))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as http:
        # when any origin asks, then reads
        asked = await http.options("/graphql", headers=preflight(REFUSED))
        read = await http.get("/graphql", headers={"Origin": REFUSED})

    # then
    assert asked.status_code == 200 and asked.headers["access-control-allow-origin"] == "*"
    assert read.text == "hello" and read.headers["access-control-allow-origin"] == "*"
    assert "access-control-allow-credentials" not in {**asked.headers, **read.headers}


# --- websockets


async def open_socket(url: str, origin: str | None) -> websockets.ClientConnection:
    return await websockets.connect(
        url,
        subprotocols=[Subprotocol(TRANSPORT_WS)],
        origin=None if origin is None else Origin(origin),
        open_timeout=10,
    )


@pytest.mark.parametrize(
    "origin",
    [pytest.param(ALLOWED, id="allowed"), pytest.param(None, id="absent")],
)
async def test_a_websocket_from_an_allowed_origin_or_none_is_accepted(live_server: str, origin: str | None) -> None:
    """A page on an allowed origin, or a client that sends no Origin (not a browser), subscribes as before."""
    # when a socket opens and initialises
    connection = await open_socket(live_server, origin)
    try:
        socket = GraphQLSocket(connection, TRANSPORT_WS)
        token = token_for(uuid.uuid4())
        await socket.send({"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}})

        # then it is acknowledged
        assert (await socket.receive())["type"] == "connection_ack"
    finally:
        await connection.close()


async def test_a_websocket_from_the_servers_own_origin_is_accepted(live_server: str) -> None:
    """GraphiQL's page, served by the server itself, sends the server's own origin (its Host)."""
    # given the server's own origin, as a browser on its page sends it
    own = live_server.replace("ws://", "http://").removesuffix("/graphql")

    # when / then
    connection = await open_socket(live_server, own)
    await connection.close()
    assert connection.response is not None and connection.response.status_code == 101


async def test_a_websocket_from_another_origin_is_refused_with_403_and_the_reason(live_server: str) -> None:
    """The upgrade is answered HTTP 403 with a FORBIDDEN body naming the setting; nothing of GraphQL runs."""
    # when a page on an origin not on the list opens a socket
    with pytest.raises(InvalidStatus) as refused:
        await open_socket(live_server, REFUSED)

    # then
    response = refused.value.response
    assert response.status_code == 403
    error = orjson.loads(response.body)["errors"][0]
    assert error["message"] == f"Origin {REFUSED} is not in CORS_ALLOWED_ORIGINS"
    assert error["extensions"]["code"] == "FORBIDDEN"


async def test_a_refused_websocket_origin_is_logged_as_a_refusal_not_an_error(
    live_server: str, caplog: pytest.LogCaptureFixture
) -> None:
    """uvicorn logs the 403; its false "returned without completing handshake" ERROR after a denial is dropped."""
    # given uvicorn's logger as `portraits serve` sets it up
    demote_client_faults()
    with caplog.at_level(logging.INFO, logger=UVICORN_LOGGER):
        # when an upgrade is refused for its origin
        with pytest.raises(InvalidStatus):
            await open_socket(live_server, REFUSED)
        for _ in range(100):  # the server's task logs once the app returns, in this same event loop
            if any('"WebSocket /graphql" 403' in record.getMessage() for record in caplog.records):
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)

    # then the refusal is an INFO line and nothing is logged as an error
    logged = [(record.levelno, record.getMessage()) for record in caplog.records if record.name == UVICORN_LOGGER]
    assert any(level == logging.INFO and '"WebSocket /graphql" 403' in message for level, message in logged), logged
    assert [message for level, message in logged if level >= logging.ERROR] == []


async def test_a_server_without_the_denial_extension_closes_a_refused_origin_with_4403_and_the_reason() -> None:
    """An ASGI server that cannot answer an upgrade with a response gets it accepted, then closed with the reason."""
    # given a websocket scope as a server without websocket.http.response gives it (no "extensions")
    scope: dict[str, Any] = {"type": "websocket", "path": "/graphql", "subprotocols": [TRANSPORT_WS], "headers": []}
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "websocket.connect"}

    async def send(message: Message) -> None:
        sent.append(message)

    reason = f"Origin {REFUSED} is not in CORS_ALLOWED_ORIGINS"

    # when the origin is refused
    await refuse_origin(scope, receive, send, reason)

    # then the client's protocol is accepted (so it reads the close) and the close says why
    assert sent == [
        {"type": "websocket.accept", "subprotocol": TRANSPORT_WS},
        {"type": "websocket.close", "code": ORIGIN_REFUSED_CODE, "reason": reason},
    ]
