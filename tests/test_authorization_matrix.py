"""Authorisation as a table: every query, mutation and subscription, and every field that takes an id.

``MATRIX`` holds one row per operation to run: its document, which of
alice's ids it takes (or none), and how it travels (real HTTP to a running
uvicorn, or a real graphql-transport-ws websocket). Alice owns real rows: a
character with a generated portrait (a completed job, its workspace and
library images), a queued job and a draft job. For each row:

- a stranger (bob) running it on alice's id gets, byte for byte, the answer
  he gets for a random missing id, and alice's rows are unchanged;
- a row without an id shows the stranger nothing of alice's;
- an anonymous client gets UNAUTHENTICATED wherever a user is needed (a
  websocket is refused at connection_init with 4403), the same bytes for
  alice's id as for a missing one.

``test_every_operation_and_id_in_the_schema_has_a_row`` introspects the schema:
a root field, an argument of type ID, or an input field of type ID without a
row fails it.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import graphql
import httpx
import pytest

from graph.schema import schema as portraits_schema
from tests.conftest import StartGeneration, token_for
from tests.generation_support import GraphQL, create_character, generate_portrait, wait_for_job
from tests.realtime_support import GraphQLSocket, Rejected, error_codes_of

SCHEMA = graphql.build_schema(portraits_schema.as_str())
ID_PLACEHOLDER = "<alice's id>"
# Bounds that only stop a broken test from hanging.
ANSWER_SECONDS = 10.0


@dataclass(frozen=True)
class Row:
    """One operation of the matrix.

    ``id_kind`` names which of alice's ids replaces ``ID_PLACEHOLDER`` in ``variables`` (None: the row takes no
    id). ``covers`` are the schema coordinates the row stands for: ``Type.field`` for a root field,
    ``Type.field(argument)`` for an argument of type ID, ``Input.field`` for an input field of type ID.
    ``catalogue``: the id is of the public catalogue (image models), not of a user: any user may use a real one.
    """

    name: str
    covers: tuple[str, ...]
    document: str
    variables: dict[str, Any] = field(default_factory=dict)
    id_kind: str | None = None
    transport: str = "http"
    needs_user: bool = True
    catalogue: bool = False

    def variables_with(self, value: str) -> dict[str, Any]:
        return json.loads(json.dumps(self.variables).replace(json.dumps(ID_PLACEHOLDER), json.dumps(value)))


# An id no row has, for the second id of a row that takes two.
NOBODYS_ID = "00000000-0000-4000-8000-00000000dead"
CHARACTER_FIELDS = "id name description imageUrl signedImageUrl { url } updatedAt"
JOB_FIELDS = "id status characterId prompt workspaceAsset { id path } libraryAsset { id path } character { id name }"

MATRIX: tuple[Row, ...] = (
    # -- queries
    Row("viewer", ("Query.viewer",), "{ viewer { id } }"),
    Row("character", ("Query.character", "Query.character(id)"),
        f"query($id: ID!) {{ character(id: $id) {{ {CHARACTER_FIELDS} }} }}", {"id": ID_PLACEHOLDER}, "character"),
    Row("characters", ("Query.characters",),
        f"{{ characters(first: 100) {{ edges {{ node {{ {CHARACTER_FIELDS} }} }} }} }}"),
    Row("job", ("Query.job", "Query.job(id)"), f"query($id: ID!) {{ job(id: $id) {{ {JOB_FIELDS} }} }}",
        {"id": ID_PLACEHOLDER}, "completed job"),
    Row("jobs", ("Query.jobs",), f"{{ jobs(first: 100) {{ edges {{ node {{ {JOB_FIELDS} }} }} }} }}"),
    Row("workspaceAssets", ("Query.workspaceAssets",),
        "{ workspaceAssets(first: 100) { edges { node { id path signedUrl { url } } } } }"),
    Row("libraryAssets", ("Query.libraryAssets",),
        "{ libraryAssets(first: 100) { edges { node { id path roleplayMetadata signedUrl { url } } } } }"),
    Row("imageModels", ("Query.imageModels",), "{ imageModels { id modelKey } }", needs_user=False),
    # -- mutations
    Row("createCharacter with a draft's portrait", ("Mutation.createCharacter", "CreateCharacterInput.portraitJobId"),
        "mutation($job: ID!) { createCharacter(input: {name: \"B\", description: \"B\", portraitJobId: $job}) "
        "{ id imageUrl } }", {"job": ID_PLACEHOLDER}, "draft job"),
    Row("updateCharacter", ("Mutation.updateCharacter", "Mutation.updateCharacter(id)"),
        f"mutation($id: ID!) {{ updateCharacter(id: $id, input: {{name: \"Stolen\"}}) {{ {CHARACTER_FIELDS} }} }}",
        {"id": ID_PLACEHOLDER}, "character"),
    Row("deleteCharacter", ("Mutation.deleteCharacter", "Mutation.deleteCharacter(id)"),
        "mutation($id: ID!) { deleteCharacter(id: $id) }", {"id": ID_PLACEHOLDER}, "character"),
    Row("generateCharacterPortrait for a character",
        ("Mutation.generateCharacterPortrait", "GenerateCharacterPortraitInput.characterId"),
        f"mutation($id: ID!) {{ generateCharacterPortrait(input: {{characterId: $id}}) {{ {JOB_FIELDS} }} }}",
        {"id": ID_PLACEHOLDER}, "character"),
    Row("generateCharacterPortrait with a model", ("GenerateCharacterPortraitInput.modelId",),
        "mutation($model: ID!) { generateCharacterPortrait(input: {draft: {name: \"B\", description: \"B\"}, "
        "modelId: $model}) { id modelKey } }", {"model": ID_PLACEHOLDER}, "model", catalogue=True),
    Row("generateImage", ("Mutation.generateImage", "GenerateImageInput.modelId"),
        "mutation($model: ID!) { generateImage(input: {prompt: \"a cat\", modelId: $model}) { id modelKey } }",
        {"model": ID_PLACEHOLDER}, "model", catalogue=True),
    Row("generateImage of a scene with a character", ("GenerateImageInput.characterId",),
        f"mutation($id: ID!) {{ generateImage(input: {{prompt: \"a duel\", characterId: $id}}) {{ {JOB_FIELDS} }} }}",
        {"id": ID_PLACEHOLDER}, "character"),
    # Two ids: the other is one nobody has (tests/test_reference_images.py pairs each with the stranger's own).
    Row("setReferenceImage on a character", ("Mutation.setReferenceImage", "Mutation.setReferenceImage(characterId)"),
        f"mutation($id: ID!, $asset: ID!) {{ setReferenceImage(characterId: $id, libraryAssetId: $asset) "
        f"{{ {CHARACTER_FIELDS} }} }}", {"id": ID_PLACEHOLDER, "asset": NOBODYS_ID}, "character"),
    Row("setReferenceImage with a library asset", ("Mutation.setReferenceImage(libraryAssetId)",),
        f"mutation($id: ID!, $asset: ID!) {{ setReferenceImage(characterId: $id, libraryAssetId: $asset) "
        f"{{ {CHARACTER_FIELDS} }} }}", {"id": NOBODYS_ID, "asset": ID_PLACEHOLDER}, "library asset"),
    Row("cancelJob", ("Mutation.cancelJob", "Mutation.cancelJob(id)"),
        f"mutation($id: ID!) {{ cancelJob(id: $id) {{ {JOB_FIELDS} }} }}", {"id": ID_PLACEHOLDER}, "queued job"),
    Row("saveToLibrary", ("Mutation.saveToLibrary", "Mutation.saveToLibrary(workspaceAssetId)"),
        "mutation($id: ID!) { saveToLibrary(workspaceAssetId: $id) { id path signedUrl { url } } }",
        {"id": ID_PLACEHOLDER}, "workspace asset"),
    Row("deleteLibraryAsset", ("Mutation.deleteLibraryAsset", "Mutation.deleteLibraryAsset(id)"),
        "mutation($id: ID!) { deleteLibraryAsset(id: $id) }", {"id": ID_PLACEHOLDER}, "library asset"),
    # -- subscriptions, over a real websocket
    Row("jobUpdated", ("Subscription.jobUpdated", "Subscription.jobUpdated(id)"),
        f"subscription($id: ID!) {{ jobUpdated(id: $id) {{ {JOB_FIELDS} }} }}", {"id": ID_PLACEHOLDER},
        "completed job", transport="ws"),
    Row("characterImageUpdated for a character",
        ("Subscription.characterImageUpdated", "Subscription.characterImageUpdated(characterId)"),
        "subscription($id: ID) { characterImageUpdated(characterId: $id) { id name imageUrl signedImageUrl { url } } }",
        {"id": ID_PLACEHOLDER}, "character", transport="ws"),
    Row("characterImageUpdated for every character", ("Subscription.characterImageUpdated",),
        "subscription { characterImageUpdated { id name imageUrl signedImageUrl { url } } }", transport="ws"),
    Row("portraitJobs", ("Subscription.portraitJobs",), f"subscription {{ portraitJobs {{ {JOB_FIELDS} }} }}",
        transport="ws"),
    # the same three under their {subject}Changed names (the ones above are their deprecated aliases)
    Row("jobChanged", ("Subscription.jobChanged", "Subscription.jobChanged(id)"),
        f"subscription($id: ID!) {{ jobChanged(id: $id) {{ {JOB_FIELDS} }} }}", {"id": ID_PLACEHOLDER},
        "completed job", transport="ws"),
    Row("characterImageChanged for a character",
        ("Subscription.characterImageChanged", "Subscription.characterImageChanged(characterId)"),
        "subscription($id: ID) { characterImageChanged(characterId: $id) { id name imageUrl signedImageUrl { url } } }",
        {"id": ID_PLACEHOLDER}, "character", transport="ws"),
    Row("characterImageChanged for every character", ("Subscription.characterImageChanged",),
        "subscription { characterImageChanged { id name imageUrl signedImageUrl { url } } }", transport="ws"),
    Row("portraitJobChanged", ("Subscription.portraitJobChanged",),
        f"subscription {{ portraitJobChanged {{ {JOB_FIELDS} }} }}", transport="ws"),
)


def schema_coordinates(schema: graphql.GraphQLSchema) -> set[str]:
    """Every root field, every argument of type ID (on any field of any type), every input field of type ID."""
    coordinates: set[str] = set()
    roots = {root.name for root in (schema.query_type, schema.mutation_type, schema.subscription_type) if root}
    for name, named in schema.type_map.items():
        if name.startswith("__"):
            continue
        if isinstance(named, (graphql.GraphQLObjectType, graphql.GraphQLInterfaceType)):
            for field_name, schema_field in named.fields.items():
                if name in roots:
                    coordinates.add(f"{name}.{field_name}")
                for argument_name, argument in schema_field.args.items():
                    if graphql.get_named_type(argument.type).name == "ID":
                        coordinates.add(f"{name}.{field_name}({argument_name})")
        if isinstance(named, graphql.GraphQLInputObjectType):
            for field_name, input_field in named.fields.items():
                if graphql.get_named_type(input_field.type).name == "ID":
                    coordinates.add(f"{name}.{field_name}")
    return coordinates


def test_every_operation_and_id_in_the_schema_has_a_row() -> None:
    # given the schema's root fields and every argument and input field of type ID
    in_schema = schema_coordinates(SCHEMA)
    # when compared with what the matrix's rows cover
    covered = {coordinate for row in MATRIX for coordinate in row.covers}
    # then each has a row, and no row names something the schema no longer has
    assert in_schema - covered == set(), "add a row to MATRIX for each of these"
    assert covered - in_schema == set(), "these rows name what the schema does not have"
    assert len({row.name for row in MATRIX}) == len(MATRIX)


# -- alice's rows --------------------------------------------------------------------------------------

SECRET = "Alice-7f3c9e"
SNAPSHOT = f"""{{
  characters(first: 100) {{ edges {{ node {{ {CHARACTER_FIELDS} appearanceTags }} }} }}
  jobs(first: 100) {{ edges {{ node {{ id status characterId updatedAt }} }} }}
  workspaceAssets(first: 100) {{ edges {{ node {{ id path }} }} }}
  libraryAssets(first: 100) {{ edges {{ node {{ id path }} }} }}
}}"""


@dataclass(frozen=True)
class Alice:
    user: uuid.UUID
    ids: dict[str, str]

    def texts(self) -> tuple[str, ...]:
        """What of alice's must never reach another user: her ids, her user id, her character's name."""
        return (*self.ids_owned(), str(self.user), SECRET)

    def ids_owned(self) -> tuple[str, ...]:
        return tuple(value for kind, value in self.ids.items() if kind != "model")


@pytest.fixture
async def alice_rows(graphql: GraphQL, start_generation: StartGeneration, alice: uuid.UUID) -> Alice:
    """A character with a completed portrait (workspace and library images), a queued job, a draft job."""
    generation = await start_generation()
    character = await create_character(graphql, alice, name=SECRET, description=f"{SECRET} private")
    portrait = await generate_portrait(graphql, alice, characterId=character["id"], seed=1)
    completed = await wait_for_job(graphql, alice, portrait["id"])
    assert completed["status"] == "COMPLETED", completed
    await generation.stop()  # from here on, alice's new jobs stay queued
    queued = await generate_portrait(graphql, alice, characterId=character["id"], seed=2)
    draft = await generate_portrait(graphql, alice, draft={"name": SECRET, "description": f"{SECRET} draft"})
    models = await graphql("{ imageModels { id isDefault } }")
    [default_model] = [model["id"] for model in models["data"]["imageModels"] if model["isDefault"]]
    return Alice(alice, {
        "character": character["id"],
        "completed job": completed["id"],
        "queued job": queued["id"],
        "draft job": draft["id"],
        "workspace asset": completed["workspaceAsset"]["id"],
        "library asset": completed["libraryAsset"]["id"],
        "model": default_model,
    })


@pytest.fixture
async def http(live_server: str) -> AsyncIterator[httpx.AsyncClient]:
    """Real HTTP to the live uvicorn server (the same app the websockets reach)."""
    base = live_server.replace("ws://", "http://").removesuffix("/graphql")
    async with httpx.AsyncClient(base_url=base, timeout=ANSWER_SECONDS) as client:
        yield client


# Every request and socket here sends the same request id (a client's own is kept: server/request_ids.py), so two
# answers that differ only in it compare equal byte for byte, as they must.
SAME_REQUEST_ID = {"X-Request-ID": "authorization-matrix"}


async def post(http: httpx.AsyncClient, row: Row, variables: dict[str, Any], user: uuid.UUID | None) -> httpx.Response:
    headers = {**SAME_REQUEST_ID, **({"Authorization": f"Bearer {token_for(user)}"} if user is not None else {})}
    return await http.post("/graphql", json={"query": row.document, "variables": variables}, headers=headers)


def codes(response: httpx.Response) -> list[str]:
    body = response.json()
    return [error.get("extensions", {}).get("code") for error in body.get("errors") or []]


async def snapshot(http: httpx.AsyncClient, user: uuid.UUID) -> bytes:
    response = await http.post(
        "/graphql", json={"query": SNAPSHOT}, headers={"Authorization": f"Bearer {token_for(user)}"}
    )
    assert response.status_code == 200 and "errors" not in response.json(), response.text
    return response.content


def assert_nothing_of_alices(answer: str, alice: Alice, where: str) -> None:
    found = [text for text in alice.texts() if text in answer]
    assert not found, f"{where}: the stranger's answer holds alice's {found}: {answer[:500]}"


# -- HTTP rows -----------------------------------------------------------------------------------------

HTTP_ROWS = [pytest.param(row, id=row.name) for row in MATRIX if row.transport == "http"]
WS_ROWS = [pytest.param(row, id=row.name) for row in MATRIX if row.transport == "ws"]


@pytest.mark.parametrize("row", HTTP_ROWS)
async def test_a_stranger_gets_for_alices_id_exactly_what_a_missing_id_gets(
    row: Row, alice_rows: Alice, bob: uuid.UUID, http: httpx.AsyncClient
) -> None:
    alice = alice_rows
    before = await snapshot(http, alice.user)
    if row.id_kind is None:
        # when bob runs an operation that takes no id, then he sees nothing of alice's
        answer = await post(http, row, row.variables, bob)
        assert answer.status_code == 200, answer.text
        assert_nothing_of_alices(answer.text, alice, row.name)
    elif row.catalogue:
        # when bob uses a catalogue id (image models are everyone's), it works for him as for anyone,
        # and a missing one gets a coded error, not a crash
        real = await post(http, row, row.variables_with(alice.ids[row.id_kind]), bob)
        missing = await post(http, row, row.variables_with(str(uuid.uuid4())), bob)
        assert real.status_code == 200 and codes(real) == [], real.text
        assert missing.status_code == 200, missing.text
        assert codes(missing) and "INTERNAL_SERVER_ERROR" not in codes(missing), missing.text
        assert_nothing_of_alices(real.text, alice, row.name)
    else:
        # when bob runs it on alice's id, and on a random id that does not exist
        foreign = await post(http, row, row.variables_with(alice.ids[row.id_kind]), bob)
        missing = await post(http, row, row.variables_with(str(uuid.uuid4())), bob)
        # then both answers are the same bytes: an error that says nothing of alice's row
        assert (foreign.status_code, foreign.content) == (missing.status_code, missing.content), (
            f"alice's {row.id_kind}: {foreign.status_code} {foreign.text}\n"
            f"missing: {missing.status_code} {missing.text}"
        )
        assert codes(foreign), foreign.text
        assert "INTERNAL_SERVER_ERROR" not in codes(foreign), foreign.text
    # and alice's rows are as they were
    assert await snapshot(http, alice.user) == before


@pytest.mark.parametrize("row", HTTP_ROWS)
async def test_an_anonymous_client_is_unauthenticated_wherever_a_user_is_needed(
    row: Row, alice_rows: Alice, http: httpx.AsyncClient
) -> None:
    alice = alice_rows
    before = await snapshot(http, alice.user)
    # when a client without a token runs the row, on alice's id and on a missing one
    real_id = alice.ids[row.id_kind] if row.id_kind else None
    on_alices = await post(http, row, row.variables_with(real_id) if real_id else row.variables, None)
    on_missing = await post(http, row, row.variables_with(str(uuid.uuid4())) if real_id else row.variables, None)
    if row.needs_user:
        # then it is UNAUTHENTICATED, the same bytes whatever the id
        assert on_alices.status_code == 200, on_alices.text
        assert codes(on_alices) == ["UNAUTHENTICATED"], on_alices.text
        assert all(value is None for value in (on_alices.json().get("data") or {}).values()), on_alices.text
        assert on_alices.content == on_missing.content
    else:
        # (the public catalogue answers anyone)
        assert on_alices.status_code == 200 and codes(on_alices) == [], on_alices.text
    assert_nothing_of_alices(on_alices.text, alice, row.name)
    assert await snapshot(http, alice.user) == before


# -- websocket rows ------------------------------------------------------------------------------------


async def subscription_frames(url: str, user: uuid.UUID, row: Row, variables: dict[str, Any]) -> list[str]:
    """The raw text frames answering one subscribe (operation id "1"), up to its error or complete."""
    frames: list[str] = []
    async with GraphQLSocket.open(url, token=token_for(user), headers=SAME_REQUEST_ID) as socket:
        await socket.connection.send(
            json.dumps({"id": "1", "type": "subscribe", "payload": {"query": row.document, "variables": variables}})
        )
        while True:
            try:
                raw = await asyncio.wait_for(socket.connection.recv(), ANSWER_SECONDS)
            except TimeoutError:
                raise AssertionError(f"{row.name}: still open after {ANSWER_SECONDS} s; got {frames}") from None
            assert isinstance(raw, str), raw
            frames.append(raw)
            message = json.loads(raw)
            if message.get("id") == "1" and message.get("type") in ("error", "complete"):
                return frames


async def quiet_until_pong(socket: GraphQLSocket) -> list[dict[str, Any]]:
    """Everything the server sends before it answers a ping: what it had queued for this socket."""
    await socket.send({"type": "ping"})
    received: list[dict[str, Any]] = []
    while True:
        message = await socket.receive(timeout=ANSWER_SECONDS)
        if message["type"] == "pong":
            return received
        received.append(message)


@pytest.mark.parametrize("row", WS_ROWS)
async def test_a_strangers_subscription_gets_for_alices_id_exactly_what_a_missing_id_gets(
    row: Row, alice_rows: Alice, bob: uuid.UUID, live_server: str, graphql: GraphQL, http: httpx.AsyncClient
) -> None:
    alice = alice_rows
    if row.id_kind is None:
        # when bob and alice both subscribe, and alice's character and jobs change
        async with GraphQLSocket.open(live_server, token=token_for(bob)) as bobs, \
                GraphQLSocket.open(live_server, token=token_for(alice.user)) as alices:
            await bobs.subscribe(row.document)
            await alices.subscribe(row.document)
            await asyncio.sleep(0.2)
            await graphql(
                "mutation($id: ID!) { updateCharacter(id: $id, input: {imageUrl: \"https://example.com/a.png\"}) "
                "{ id } }", {"id": alice.ids["character"]}, user=alice.user,
            )
            await generate_portrait(graphql, alice.user, characterId=alice.ids["character"], seed=3)
            heard = await alices.next_result()
            # then alice hears of it, and bob, asked after that, has heard nothing at all
            assert heard["type"] == "next", heard
            assert await quiet_until_pong(bobs) == []
        return
    before = await snapshot(http, alice.user)
    # when bob subscribes with alice's id, and with a random id that does not exist
    foreign = await subscription_frames(live_server, bob, row, row.variables_with(alice.ids[row.id_kind]))
    missing = await subscription_frames(live_server, bob, row, row.variables_with(str(uuid.uuid4())))
    # then both get the same frames, byte for byte: an error and nothing of alice's
    assert foreign == missing
    messages = [json.loads(frame) for frame in foreign]
    assert all(not (message.get("payload") or {}).get("data") for message in messages if message["type"] == "next")
    assert [code for message in messages if message["type"] != "complete" for code in error_codes_of(message)], foreign
    # and alice's rows are as they were
    assert await snapshot(http, alice.user) == before


@pytest.mark.parametrize("row", WS_ROWS)
async def test_an_anonymous_socket_is_refused_at_connection_init(row: Row, live_server: str) -> None:
    # when a client opens a socket without a token to run the row
    with pytest.raises(Rejected) as rejected:
        async with GraphQLSocket.open(live_server) as socket:
            await socket.subscribe(row.document, row.variables_with(str(uuid.uuid4())))
            await socket.next_result()
    # then the server refuses it before any operation: 4403, unauthenticated
    assert rejected.value.code == 4403, rejected.value
