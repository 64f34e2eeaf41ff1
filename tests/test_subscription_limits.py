"""The per-user cap on live subscriptions, and sockets that close while events are in flight.

Real app under a real uvicorn, real websockets, real PostgreSQL NOTIFY: every
change of a user's row is rendered once per subscription of that user, so the
cap bounds what one mutation costs (issue 13: 20 sockets x 100 subscriptions
rendered 2,000 payloads per update).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import replace

import asyncpg
import pytest

from server.app import create_app
from server.cli import uvicorn_config
from server.settings import Settings
from tests.conftest import token_for
from tests.realtime_support import (
    CHARACTER_IMAGE_UPDATED,
    PROTOCOLS,
    GraphQLSocket,
    error_codes_of,
    errors_of,
    insert_character,
    set_image,
)
from tests.support import free_port, serve_uvicorn

CAP = 3


@asynccontextmanager
async def serving(settings: Settings, max_per_user: int) -> AsyncIterator[str]:
    """The app on a real uvicorn with a per-user subscription cap of ``max_per_user``; its websocket URL."""
    limits = replace(settings.subscription_limits, max_per_user=max_per_user)
    app = create_app(replace(settings, subscription_limits=limits))
    config = uvicorn_config(app, host="127.0.0.1", port=free_port(), log_level="warning")
    async with serve_uvicorn(config) as served:
        yield served.url("/graphql")


async def outcomes(
    pool: asyncpg.Pool, character: uuid.UUID, operations: dict[str, tuple[GraphQLSocket, str]]
) -> dict[str, str]:
    """Change the character's image, then what each operation got first: "next" (it is live) or its error code."""
    await set_image(pool, character, f"https://example.com/{uuid.uuid4()}.png")
    got: dict[str, str] = {}
    for socket in {socket for socket, _ in operations.values()}:
        names = {operation: name for name, (its_socket, operation) in operations.items() if its_socket is socket}
        first: dict[str, str] = {}
        while len(first) < len(names):
            message = await socket.next_result()
            if message.get("id") in names and message["id"] not in first:
                first[message["id"]] = "next" if message["type"] == "next" else ",".join(error_codes_of(message))
        got.update((names[operation], outcome) for operation, outcome in first.items())
    return got


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_the_subscription_after_a_users_cap_is_rate_limited_until_one_ends(
    settings: Settings, pool: asyncpg.Pool, alice: uuid.UUID, bob: uuid.UUID, protocol: str
) -> None:
    character = await insert_character(pool, alice)
    bobs_character = await insert_character(pool, bob)
    async with (
        serving(settings, CAP) as url,
        GraphQLSocket.open(url, protocol=protocol, token=token_for(alice)) as first,
        GraphQLSocket.open(url, protocol=protocol, token=token_for(alice)) as second,
        GraphQLSocket.open(url, protocol=protocol, token=token_for(bob)) as bobs,
    ):
        # given alice at her cap, over two sockets
        live = {"a": (first, await first.subscribe(CHARACTER_IMAGE_UPDATED)),
                "b": (first, await first.subscribe(CHARACTER_IMAGE_UPDATED)),
                "c": (second, await second.subscribe(CHARACTER_IMAGE_UPDATED))}
        await asyncio.sleep(0.2)

        # when she starts one more
        over = await second.subscribe(CHARACTER_IMAGE_UPDATED)
        [refusal] = await second.results_until_complete(over)

        # then it ends at once with RATE_LIMITED and the limit, and her others stay live
        assert error_codes_of(refusal) == ["RATE_LIMITED"]
        assert errors_of(refusal)[0]["extensions"]["limit"] == CAP
        assert await outcomes(pool, character, live) == {"a": "next", "b": "next", "c": "next"}
        # and the cap is hers alone: bob subscribes as usual
        bobs_operation = await bobs.subscribe(CHARACTER_IMAGE_UPDATED)
        await asyncio.sleep(0.2)
        assert await outcomes(pool, bobs_character, {"bob": (bobs, bobs_operation)}) == {"bob": "next"}

        # when one of hers ends, a new one is accepted in its place
        await first.stop(live.pop("a")[1])
        live["d"] = (second, await second.subscribe(CHARACTER_IMAGE_UPDATED))
        await asyncio.sleep(0.2)
        assert await outcomes(pool, character, live) == {"b": "next", "c": "next", "d": "next"}


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_an_operation_past_the_sockets_cap_is_rate_limited_with_its_code(
    settings: Settings, pool: asyncpg.Pool, alice: uuid.UUID, protocol: str
) -> None:
    """Given a socket running as many operations as one socket may (strawberry's max_subscriptions_per_connection),
    when it starts one more,
    then that one gets RATE_LIMITED with the limit (strawberry's own refusal has no code), and once one of the others
    is stopped a new one starts."""
    per_socket = 100
    character = await insert_character(pool, alice)
    async with (
        serving(settings, max_per_user=per_socket + 10) as url,
        GraphQLSocket.open(url, protocol=protocol, token=token_for(alice)) as socket,
    ):
        running = [await socket.subscribe(CHARACTER_IMAGE_UPDATED) for _ in range(per_socket)]
        await asyncio.sleep(0.2)

        over = await socket.subscribe(CHARACTER_IMAGE_UPDATED)
        [refusal] = await socket.results_until_complete(over)

        assert error_codes_of(refusal) == ["RATE_LIMITED"], refusal
        [error] = errors_of(refusal)
        assert error["extensions"]["limit"] == per_socket and "at once on this websocket" in error["message"]
        await socket.stop(running[0])
        await asyncio.sleep(0.2)
        again = await socket.subscribe(CHARACTER_IMAGE_UPDATED)
        await set_image(pool, character, f"https://example.com/{uuid.uuid4()}.png")
        while (message := await socket.next_result())["id"] != again:
            pass
        assert message["type"] in ("next", "data"), message


async def test_subscriptions_of_sockets_closed_abruptly_are_released(
    settings: Settings, pool: asyncpg.Pool, alice: uuid.UUID
) -> None:
    character = await insert_character(pool, alice)
    async with serving(settings, CAP) as url:
        # given alice at her cap, her sockets then cut without a close handshake
        async with AsyncExitStack() as stack:
            sockets = [await stack.enter_async_context(GraphQLSocket.open(url, token=token_for(alice)))
                       for _ in range(CAP + 1)]
            for socket in sockets[:CAP]:
                await socket.subscribe(CHARACTER_IMAGE_UPDATED)
            await asyncio.sleep(0.2)
            [refusal] = await sockets[CAP].results_until_complete(await sockets[CAP].subscribe(CHARACTER_IMAGE_UPDATED))
            assert error_codes_of(refusal) == ["RATE_LIMITED"]
            for socket in sockets:
                socket.connection.transport.abort()

        # when she opens a new socket
        async with GraphQLSocket.open(url, token=token_for(alice)) as socket:
            # then, once the server has seen the sockets go, her full cap of subscriptions is live again
            deadline = asyncio.get_running_loop().time() + 10
            live: dict[str, tuple[GraphQLSocket, str]] = {}
            while len(live) < CAP:
                assert asyncio.get_running_loop().time() < deadline, f"only {len(live)} accepted"
                operation = await socket.subscribe(CHARACTER_IMAGE_UPDATED)
                await asyncio.sleep(0.1)
                got = await outcomes(pool, character, {**live, "new": (socket, operation)})
                if got.pop("new") == "next":
                    live[operation] = (socket, operation)
                assert set(got.values()) <= {"next"}, got


async def test_sockets_closed_abruptly_while_events_are_in_flight_log_no_error(
    live_server: str, pool: asyncpg.Pool, alice: uuid.UUID, caplog: pytest.LogCaptureFixture
) -> None:
    # given many subscribers of alice's characters, on several sockets
    for _ in range(20):
        await insert_character(pool, alice)
    async with AsyncExitStack() as stack:
        sockets = [await stack.enter_async_context(GraphQLSocket.open(live_server, token=token_for(alice)))
                   for _ in range(5)]
        for socket in sockets:
            for _ in range(15):
                await socket.subscribe(CHARACTER_IMAGE_UPDATED)
        await asyncio.sleep(0.3)

        with caplog.at_level(logging.DEBUG):
            # when all her characters change at once (1,500 payloads to send) and, as the first arrives, every socket
            # is cut
            await pool.execute("UPDATE characters SET image_url = 'https://example.com/new.png' WHERE user_id = $1",
                               alice)
            await sockets[0].next_result()
            for socket in sockets:
                socket.connection.transport.abort()
            await asyncio.sleep(1.0)

    # then the server saw clients leaving, not crashes: nothing logged at ERROR
    assert [record for record in caplog.records if record.levelno >= logging.ERROR] == []
