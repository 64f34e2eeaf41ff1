"""Subscriptions are named {subject}Changed; the first names stay as deprecated aliases that answer alike."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from graphql import build_schema

from graph.schema import schema
from tests.conftest import token_for
from tests.generation_support import GraphQL, create_character, generate_portrait
from tests.realtime_support import GraphQLSocket

RENAMED = {
    "jobUpdated": "jobChanged", "characterImageUpdated": "characterImageChanged", "portraitJobs": "portraitJobChanged",
}
JOB = "subscription($id: ID!) {{ {field}(id: $id) {{ id status }} }}"
CHARACTER_IMAGE = "subscription($characterId: ID) {{ {field}(characterId: $characterId) {{ id imageUrl }} }}"
PORTRAIT_JOB = "subscription {{ {field} {{ id status }} }}"
UPDATE_IMAGE = "mutation($id: ID!, $url: String) { updateCharacter(id: $id, input: {imageUrl: $url}) { id } }"
CANCEL = "mutation($id: ID!) { cancelJob(id: $id) { status } }"


def test_each_old_name_is_deprecated_in_favour_of_its_new_one() -> None:
    """Given the schema, when its subscription fields are read, then each old name is deprecated with a reason
    naming its new field, and the new ones are not deprecated and take the same arguments."""
    subscription = build_schema(schema.as_str()).subscription_type
    assert subscription is not None
    fields = subscription.fields

    for old, new in RENAMED.items():
        assert fields[old].deprecation_reason is not None and fields[old].deprecation_reason.startswith(f"Use {new}:")
        assert fields[new].deprecation_reason is None
        assert fields[old].args.keys() == fields[new].args.keys()
        assert str(fields[old].type) == str(fields[new].type)


async def test_old_and_new_names_send_the_same_events(live_server: str, graphql: GraphQL, alice: uuid.UUID) -> None:
    """Given a character and its queued portrait job, and alice subscribed under both names of each subscription,
    when the character's image changes and the job is canceled, then each pair receives the same events."""
    character = await create_character(graphql, alice)
    async with GraphQLSocket.open(live_server, token=token_for(alice)) as socket:
        operations = {
            name: await socket.subscribe(CHARACTER_IMAGE.format(field=name), {"characterId": character["id"]})
            for name in ("characterImageUpdated", "characterImageChanged")
        } | {
            name: await socket.subscribe(PORTRAIT_JOB.format(field=name))
            for name in ("portraitJobs", "portraitJobChanged")
        }
        await asyncio.sleep(0.3)  # each subscription reads its snapshot before it listens for changes
        job = await generate_portrait(graphql, alice, characterId=character["id"])
        for name in ("jobUpdated", "jobChanged"):
            operations[name] = await socket.subscribe(JOB.format(field=name), {"id": job["id"]})
        await asyncio.sleep(0.3)
        await graphql(UPDATE_IMAGE, {"id": character["id"], "url": "https://example.com/a.png"}, user=alice)
        await graphql(CANCEL, {"id": job["id"]}, user=alice)

        received = await collect(socket, operations, wanted={
            "jobUpdated": 2, "jobChanged": 2, "portraitJobs": 2, "portraitJobChanged": 2,
            "characterImageUpdated": 1, "characterImageChanged": 1,
        })

    for old, new in RENAMED.items():
        assert received[old] == received[new], (old, new)
    assert [event["status"] for event in received["jobChanged"]] == ["QUEUED", "CANCELED"]
    assert [event["status"] for event in received["portraitJobChanged"]] == ["QUEUED", "CANCELED"]
    assert received["characterImageChanged"] == [{"id": character["id"], "imageUrl": "https://example.com/a.png"}]


async def collect(
    socket: GraphQLSocket, operations: dict[str, str], *, wanted: dict[str, int]
) -> dict[str, list[dict[str, Any]]]:
    """Each subscription's first ``wanted[name]`` events' data, whatever order they arrive in."""
    names = {operation: name for name, operation in operations.items()}
    received: dict[str, list[dict[str, Any]]] = {name: [] for name in wanted}
    while any(len(received[name]) < count for name, count in wanted.items()):
        message = await socket.next_result()
        if message["type"] != "next":
            continue
        name = names[message["id"]]
        assert not message["payload"].get("errors"), message
        received[name].append(message["payload"]["data"][name])
    return received
