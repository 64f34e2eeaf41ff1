"""Subscriptions end to end: real websockets to a running server, real generations, real PostgreSQL NOTIFY."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
import pytest

from tests.conftest import StartGeneration, token_for
from tests.generation_support import GraphQL, create_character, generate_portrait, wait_for_job
from tests.realtime_support import (
    CHARACTER_IMAGE_UPDATED,
    JOB_UPDATED,
    PORTRAIT_JOBS,
    PROTOCOLS,
    GraphQLSocket,
    data_of,
    error_codes_of,
    errors_of,
)

GENERATE_IMAGE = "mutation($input: GenerateImageInput!) { generateImage(input: $input) { id } }"
UPDATE_IMAGE = "mutation($id: ID!, $url: String) { updateCharacter(id: $id, input: {imageUrl: $url}) { id imageUrl } }"
# A render slow enough that every status is seen, fast enough for a quick test.
RENDER_SECONDS = 0.4


async def statuses_until_complete(socket: GraphQLSocket, operation_id: str) -> list[dict[str, Any]]:
    return [data_of(message, "jobUpdated") for message in await socket.results_until_complete(operation_id)]


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_job_updated_follows_a_real_generation_in_order_then_completes(
    live_server: str, graphql: GraphQL, start_generation: StartGeneration, alice: uuid.UUID, protocol: str
) -> None:
    # given a queued portrait job and no worker yet
    character = await create_character(graphql, alice)
    job = await generate_portrait(graphql, alice, characterId=character["id"])
    async with GraphQLSocket.open(live_server, protocol=protocol, token=token_for(alice)) as socket:
        # when the client subscribes, then a worker runs the job
        operation = await socket.subscribe(JOB_UPDATED, {"id": job["id"]})
        first = data_of(await socket.next_result(), "jobUpdated")
        await start_generation(local_latency=RENDER_SECONDS)
        rest = await statuses_until_complete(socket, operation)

    # then it sees the job as it was (snapshot first), then processing, then completed, and the stream completes
    updates = [first, *rest]
    statuses = [update["status"] for update in updates]
    assert statuses[0] == "QUEUED"
    assert statuses[-1] == "COMPLETED"
    assert "PROCESSING" in statuses
    assert statuses.index("PROCESSING") < statuses.index("COMPLETED")
    assert all(update["id"] == job["id"] for update in updates)
    # and the final state carries what the job made: the library copy, the character on its library path
    final = updates[-1]
    assert final["libraryAsset"] is not None
    assert final["character"]["imageUrl"] == final["libraryAsset"]["path"]
    assert final["character"]["imageUrl"].startswith(f"user-library/{alice}/")


async def test_job_updated_after_completion_yields_the_final_state_once_and_completes(
    live_server: str, graphql: GraphQL, start_generation: StartGeneration, alice: uuid.UUID
) -> None:
    # given a job that finished before anyone subscribed
    character = await create_character(graphql, alice)
    job = await generate_portrait(graphql, alice, characterId=character["id"])
    await start_generation()
    done = await wait_for_job(graphql, alice, job["id"])
    assert done["status"] == "COMPLETED"

    # when a client subscribes to it
    async with GraphQLSocket.open(live_server, token=token_for(alice)) as socket:
        operation = await socket.subscribe(JOB_UPDATED, {"id": job["id"]})
        updates = await statuses_until_complete(socket, operation)

    # then it learns the final state at once, and the subscription completes
    assert [update["status"] for update in updates] == ["COMPLETED"]
    assert updates[0]["libraryAsset"] is not None


async def test_job_updated_ends_on_failure_and_on_cancel(
    live_server: str, graphql: GraphQL, alice: uuid.UUID
) -> None:
    # given two queued jobs (no worker)
    character = await create_character(graphql, alice)
    canceled = await generate_portrait(graphql, alice, characterId=character["id"])
    async with GraphQLSocket.open(live_server, token=token_for(alice)) as socket:
        operation = await socket.subscribe(JOB_UPDATED, {"id": canceled["id"]})
        assert data_of(await socket.next_result(), "jobUpdated")["status"] == "QUEUED"

        # when the client cancels it through the API
        body = await graphql("mutation($id: ID!) { cancelJob(id: $id) { status } }", {"id": canceled["id"]}, user=alice)
        assert body["data"]["cancelJob"]["status"] == "CANCELED"

        # then the subscription sends CANCELED and completes
        rest = await statuses_until_complete(socket, operation)
    assert [update["status"] for update in rest] == ["CANCELED"]


async def test_character_image_updated_sends_each_image_change_with_a_fresh_signed_url(
    live_server: str, graphql: GraphQL, start_generation: StartGeneration, alice: uuid.UUID
) -> None:
    # given a character without an image, subscribed to by id
    character = await create_character(graphql, alice)
    async with GraphQLSocket.open(live_server, token=token_for(alice)) as socket:
        await socket.subscribe(CHARACTER_IMAGE_UPDATED, {"characterId": character["id"]})
        await asyncio.sleep(0.2)  # the subscription reads the character before it listens for the next change

        # when a portrait is generated for it
        job = await generate_portrait(graphql, alice, characterId=character["id"])
        await start_generation()
        workspace = data_of(await socket.next_result(), "characterImageUpdated")
        library = data_of(await socket.next_result(), "characterImageUpdated")

    # then the client sees the workspace image, then the library copy, each with a URL signed for it
    assert workspace["id"] == library["id"] == character["id"]
    assert workspace["imageUrl"].startswith(f"workspace-temp/{alice}/{job['id']}_")
    assert library["imageUrl"] == f"user-library/{alice}/{job['id']}_{character['id']}.png"
    assert workspace["imageUrl"] in workspace["signedImageUrl"]["url"]
    assert library["imageUrl"] in library["signedImageUrl"]["url"]


async def test_character_image_updated_without_id_covers_every_character_of_the_viewer_only(
    live_server: str, graphql: GraphQL, pool: asyncpg.Pool, alice: uuid.UUID, bob: uuid.UUID
) -> None:
    # given two characters of alice's and one of bob's, and alice subscribed to all of hers
    first = await create_character(graphql, alice, name="First")
    second = await create_character(graphql, alice, name="Second")
    bobs = await create_character(graphql, bob, name="Bob's")
    async with GraphQLSocket.open(live_server, token=token_for(alice)) as socket:
        operation = await socket.subscribe(CHARACTER_IMAGE_UPDATED)
        await asyncio.sleep(0.2)

        # when bob's image changes, then alice's two (one through the API, one by a plain SQL UPDATE, as psql would)
        await graphql(UPDATE_IMAGE, {"id": bobs["id"], "url": "https://example.com/bob.png"}, user=bob)
        await graphql(UPDATE_IMAGE, {"id": first["id"], "url": "https://example.com/first.png"}, user=alice)
        await pool.execute(
            "UPDATE characters SET image_url = 'https://example.com/second.png' WHERE id = $1", uuid.UUID(second["id"])
        )
        received = [data_of(await socket.next_result(), "characterImageUpdated") for _ in range(2)]

        # and then a name change (not the image), then one more image change
        await graphql(
            'mutation($id: ID!) { updateCharacter(id: $id, input: {name: "Renamed"}) { id } }',
            {"id": first["id"]},
            user=alice,
        )
        await graphql(UPDATE_IMAGE, {"id": second["id"], "url": "https://example.com/last.png"}, user=alice)
        after_rename = data_of(await socket.next_result(), "characterImageUpdated")
        await socket.stop(operation)

    # then alice got exactly her two image changes, in commit order, and nothing for the rename or bob's
    assert [(item["id"], item["imageUrl"]) for item in received] == [
        (first["id"], "https://example.com/first.png"),
        (second["id"], "https://example.com/second.png"),
    ]
    assert received[0]["signedImageUrl"]["url"] == "https://example.com/first.png"
    # the next thing after the rename is the next image change: a rename sends nothing
    assert (after_rename["id"], after_rename["imageUrl"]) == (second["id"], "https://example.com/last.png")


async def test_portrait_jobs_sends_the_viewers_portrait_jobs_only(
    live_server: str, graphql: GraphQL, start_generation: StartGeneration, alice: uuid.UUID, bob: uuid.UUID
) -> None:
    # given alice subscribed to her portrait jobs
    character = await create_character(graphql, alice)
    bobs_character = await create_character(graphql, bob)
    async with GraphQLSocket.open(live_server, token=token_for(alice)) as socket:
        await socket.subscribe(PORTRAIT_JOBS)
        await asyncio.sleep(0.2)

        # when bob generates a portrait, alice a workspace image, then alice a portrait, and a worker runs them all
        await generate_portrait(graphql, bob, characterId=bobs_character["id"])
        body = await graphql(GENERATE_IMAGE, {"input": {"prompt": "a lighthouse at dusk"}}, user=alice)
        workspace_job = body["data"]["generateImage"]["id"]
        portrait = await generate_portrait(graphql, alice, characterId=character["id"])
        await start_generation()
        seen: list[dict[str, Any]] = []
        while not seen or seen[-1]["status"] != "COMPLETED":
            seen.append(data_of(await socket.next_result(), "portraitJobs"))

    # then she sees only her portrait job, from queued to completed
    assert {item["id"] for item in seen} == {portrait["id"]}
    assert workspace_job not in {item["id"] for item in seen}
    assert seen[0]["status"] == "QUEUED"
    assert all(item["destination"] == "CHARACTER_PORTRAIT" for item in seen)


async def test_a_foreign_or_missing_id_ends_the_subscription_with_not_found(
    live_server: str, graphql: GraphQL, alice: uuid.UUID, bob: uuid.UUID
) -> None:
    # given alice's job and character
    character = await create_character(graphql, alice)
    job = await generate_portrait(graphql, alice, characterId=character["id"])
    async with GraphQLSocket.open(live_server, token=token_for(bob)) as socket:
        # when bob subscribes to them by guessing their ids, and to ids that do not exist
        attempts = {
            "foreign job": (JOB_UPDATED, {"id": job["id"]}),
            "foreign character": (CHARACTER_IMAGE_UPDATED, {"characterId": character["id"]}),
            "missing job": (JOB_UPDATED, {"id": str(uuid.uuid4())}),
            "missing character": (CHARACTER_IMAGE_UPDATED, {"characterId": str(uuid.uuid4())}),
            "malformed id": (JOB_UPDATED, {"id": "not-an-id"}),
        }
        outcomes = {}
        for name, (query, variables) in attempts.items():
            operation = await socket.subscribe(query, variables)
            outcomes[name] = await socket.results_until_complete(operation)

    # then each ends with an error and no data at all
    for name, messages in outcomes.items():
        assert messages, name
        codes = [code for message in messages for code in error_codes_of(message)]
        expected = "BAD_USER_INPUT" if name == "malformed id" else "NOT_FOUND"
        assert codes == [expected], (name, messages)
        assert all(
            not (message["payload"].get("data") if isinstance(message["payload"], dict) else None)
            for message in messages
        ), name


async def test_a_deleted_character_ends_its_subscription_with_not_found(
    live_server: str, graphql: GraphQL, alice: uuid.UUID
) -> None:
    # given a subscription to one of alice's characters
    character = await create_character(graphql, alice, imageUrl="https://example.com/a.png")
    async with GraphQLSocket.open(live_server, token=token_for(alice)) as socket:
        operation = await socket.subscribe(CHARACTER_IMAGE_UPDATED, {"characterId": character["id"]})
        await asyncio.sleep(0.2)

        # when she deletes the character
        await graphql("mutation($id: ID!) { deleteCharacter(id: $id) }", {"id": character["id"]}, user=alice)
        messages = await socket.results_until_complete(operation)

    # then the subscription ends with NOT_FOUND
    assert [code for message in messages for code in error_codes_of(message)] == ["NOT_FOUND"]


async def test_a_subscription_over_plain_http_gets_a_clear_error(graphql: GraphQL, alice: uuid.UUID) -> None:
    body = await graphql(PORTRAIT_JOBS, user=alice)
    assert body["data"] is None
    assert [error["extensions"]["code"] for error in body["errors"]] == ["BAD_REQUEST"]
    assert "websocket" in body["errors"][0]["message"]


async def test_queries_and_mutations_also_run_over_the_socket(live_server: str, alice: uuid.UUID) -> None:
    async with GraphQLSocket.open(live_server, token=token_for(alice)) as socket:
        operation = await socket.subscribe(
            'mutation { createCharacter(input: {name: "Ada", description: "An engineer."}) { id name } }'
        )
        [created] = await socket.results_until_complete(operation)
        operation = await socket.subscribe("query { viewer { id } }")
        [viewer] = await socket.results_until_complete(operation)
    assert data_of(created, "createCharacter")["name"] == "Ada"
    assert data_of(viewer, "viewer")["id"] == str(alice)


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_bad_document_over_the_socket_gets_an_error_and_the_socket_goes_on(
    live_server: str, alice: uuid.UUID, protocol: str
) -> None:
    too_deep = "subscription { portraitJobs " + "{ character " * 10 + "{ id" + " }" * 12
    headers = {"X-Request-ID": "bad-documents"}  # every error of the socket's operations carries it
    async with GraphQLSocket.open(live_server, protocol=protocol, token=token_for(alice), headers=headers) as socket:
        # when a client sends a document that does not parse, then one over the depth limit
        broken = await socket.results_until_complete(await socket.subscribe("subscription { portraitJobs { id "))
        deep = await socket.results_until_complete(await socket.subscribe(too_deep))
        # then each gets its error, and the same socket still answers a query
        answered = await socket.results_until_complete(await socket.subscribe("query { viewer { id } }"))

    assert [
        error["extensions"]["code"] for message in broken for error in errors_of(message)
    ] == ["GRAPHQL_PARSE_FAILED"]
    # (refused by its depth before validation would name its unknown fields)
    assert [error["extensions"] for message in deep for error in errors_of(message)] == [
        {
            "code": "GRAPHQL_VALIDATION_FAILED", "measure": "depth", "limit": 10, "value": 11,
            "requestId": "bad-documents",
        }
    ], deep
    if protocol == "graphql-ws":  # carries subscriptions only, and says so
        [refusal] = [error for message in answered for error in errors_of(message)]
        assert refusal["extensions"]["code"] == "BAD_REQUEST"
        assert "graphql-transport-ws" in refusal["message"]
    else:
        assert data_of(answered[0], "viewer")["id"] == str(alice)
