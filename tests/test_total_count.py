"""Connections' totalCount: the size of the whole filtered list, costing one count query only when selected."""

from __future__ import annotations

import uuid

import asyncpg
import orjson

from graph.count_cost import MAX_SEARCHES
from graph.schema import MAX_TOTAL_COUNTS
from server.settings import Settings
from storage import user_library, workspace_assets
from storage.user_library import NewLibraryAsset, RoleplayMetadata
from tests.conftest import GraphQL, graphql_logging_statements
from tests.test_pagination import insert_characters

WITHOUT_COUNT = "{ characters(first: 2) { edges { node { id } } pageInfo { hasNextPage } } }"
WITH_COUNT = "{ characters(first: 2) { totalCount edges { node { id } } pageInfo { hasNextPage } } }"
GENERATE = "mutation($prompt: String!) { generateImage(input: {prompt: $prompt}) { id } }"
CANCEL = "mutation($id: ID!) { cancelJob(id: $id) { status } }"


def counts(statements: list[str]) -> list[str]:
    return [statement for statement in statements if "count(*)" in statement]


async def test_total_count_costs_one_query_only_when_selected(
    settings: Settings, pool: asyncpg.Pool, alice: uuid.UUID, bob: uuid.UUID
) -> None:
    """Given 5 characters of alice's and 3 of bob's, when alice lists a page of 2 without and then with totalCount,
    then the first runs no count query, and the second runs exactly one more statement, the count, answering 5."""
    await insert_characters(pool, alice, 5)
    await insert_characters(pool, bob, 3)
    async with graphql_logging_statements(settings) as (graphql, statements):
        await graphql(WITHOUT_COUNT, user=alice)  # a first request may prepare what later ones reuse
        statements.clear()

        plain = await graphql(WITHOUT_COUNT, user=alice)
        plain_statements = list(statements)
        statements.clear()
        counted = await graphql(WITH_COUNT, user=alice)
        counted_statements = list(statements)

    assert "totalCount" not in plain["data"]["characters"]
    assert counts(plain_statements) == []
    assert counted["data"]["characters"]["totalCount"] == 5
    assert len(counts(counted_statements)) == 1
    assert len(counted_statements) == len(plain_statements) + 1
    assert counted["data"]["characters"]["edges"] == plain["data"]["characters"]["edges"]


async def test_total_count_keeps_each_lists_filters(graphql: GraphQL, alice: uuid.UUID, bob: uuid.UUID) -> None:
    """Given two jobs of alice's, one canceled, and one of bob's, when each list's totalCount is asked for,
    then jobs counts alice's only, jobs(status:) only that status, and the empty lists 0."""
    first = (await graphql(GENERATE, {"prompt": "a lighthouse"}, user=alice))["data"]["generateImage"]
    await graphql(GENERATE, {"prompt": "a harbour"}, user=alice)
    await graphql(GENERATE, {"prompt": "a bridge"}, user=bob)
    await graphql(CANCEL, {"id": first["id"]}, user=alice)

    body = await graphql(
        """{
          all: jobs(first: 1) { totalCount }
          queued: jobs(first: 1, status: QUEUED) { totalCount }
          canceled: jobs(status: CANCELED) { totalCount }
          failed: jobs(status: FAILED) { totalCount }
          workspaceAssets { totalCount }
          libraryAssets { totalCount }
          characterTab: libraryAssets(tab: CHARACTERS) { totalCount }
          characters { totalCount }
        }""",
        user=alice,
    )

    assert body == {"data": {
        "all": {"totalCount": 2}, "queued": {"totalCount": 1}, "canceled": {"totalCount": 1},
        "failed": {"totalCount": 0}, "workspaceAssets": {"totalCount": 0}, "libraryAssets": {"totalCount": 0},
        "characterTab": {"totalCount": 0}, "characters": {"totalCount": 0},
    }}


async def generated_job(graphql: GraphQL, user: uuid.UUID, prompt: str) -> uuid.UUID:
    """A queued job of ``user``'s (no worker runs here): the source the asset tables' rows name."""
    body = await graphql(GENERATE, {"prompt": prompt}, user=user)
    assert "errors" not in body, body
    return uuid.UUID(body["data"]["generateImage"]["id"])


async def add_workspace_asset(pool: asyncpg.Pool, user: uuid.UUID, job_id: uuid.UUID, *, ttl_seconds: float) -> None:
    async with pool.acquire() as connection:
        await workspace_assets.create(
            connection, user_id=user, job_id=job_id, temp_storage_path=f"{user}/{job_id}.png", thumbnail_path=None,
            mime_type="image/png", file_size_bytes=10, original_prompt="p", model_used="local/portrait-v1",
            generation_seed=1, generation_settings={}, ttl_seconds=ttl_seconds,
        )


async def add_library_asset(
    pool: asyncpg.Pool, user: uuid.UUID, job_id: uuid.UUID, *, tags: tuple[str, ...] = (),
    roleplay_metadata: RoleplayMetadata | None = None, content_category: str | None = None,
) -> None:
    async with pool.acquire() as connection:
        await user_library.create(connection, asset=NewLibraryAsset(
            user_id=user, source_job_id=job_id, storage_path=f"{user}/{job_id}.png", thumbnail_path=None,
            file_size_bytes=10, mime_type="image/png", original_prompt="p", model_used="local/portrait-v1",
            generation_seed=1, width=8, height=8, tags=tags, roleplay_metadata=roleplay_metadata or {},
            content_category=content_category,
        ))


async def test_asset_counts_count_the_viewers_rows_with_each_lists_filter(
    graphql: GraphQL, pool: asyncpg.Pool, alice: uuid.UUID, bob: uuid.UUID
) -> None:
    """Given alice's 3 workspace images, one of them expired, and 5 library images: a character portrait, one
    tagged 'character', one in the 'character' category, two plain (one tagged something else), and bob's images
    of each kind,
    when alice asks for each asset list's totalCount with its page,
    then workspaceAssets counts her 2 unexpired ones, libraryAssets her 5, its CHARACTERS tab her 3 marked ones,
    and each count is the length of its whole list: bob's rows and the filtered-out ones never count."""
    jobs = [await generated_job(graphql, alice, f"picture {n}") for n in range(5)]
    bobs = [await generated_job(graphql, bob, f"bob's picture {n}") for n in range(2)]
    for job_id in jobs[:2]:
        await add_workspace_asset(pool, alice, job_id, ttl_seconds=3600)
    await add_workspace_asset(pool, alice, jobs[2], ttl_seconds=-60)
    await add_workspace_asset(pool, bob, bobs[0], ttl_seconds=3600)
    portrait: RoleplayMetadata = {"type": "character_portrait", "character_id": str(uuid.uuid4())}
    await add_library_asset(pool, alice, jobs[0], roleplay_metadata=portrait)
    await add_library_asset(pool, alice, jobs[1], tags=("hero", "character"))
    await add_library_asset(pool, alice, jobs[2], content_category="character")
    await add_library_asset(pool, alice, jobs[3], tags=("landscape",), content_category="scenery")
    await add_library_asset(pool, alice, jobs[4])
    await add_library_asset(pool, bob, bobs[0], roleplay_metadata=portrait)
    await add_library_asset(pool, bob, bobs[1])

    body = await graphql(
        """{
          workspaceAssets(first: 100) { totalCount edges { node { id } } }
          libraryAssets(first: 100) { totalCount edges { node { id } } }
          characterTab: libraryAssets(first: 100, tab: CHARACTERS) { totalCount edges { node { id } } }
        }""",
        user=alice,
    )

    assert "errors" not in body, body
    counted = {name: (page["totalCount"], len(page["edges"])) for name, page in body["data"].items()}
    assert counted == {"workspaceAssets": (2, 2), "libraryAssets": (5, 5), "characterTab": (3, 3)}


def aliased_counts(n: int) -> str:
    """``n`` aliased characters lists, each asking for its totalCount (no search: searches have their own bound)."""
    return "{ " + " ".join(f"c{i}: characters(first: {i + 1}) {{ totalCount }}" for i in range(n)) + " }"


async def test_a_document_may_ask_for_at_most_ten_counts(
    settings: Settings, pool: asyncpg.Pool, alice: uuid.UUID
) -> None:
    """Given alice's characters (each count reads every one of them: 240 ms at 200,000),
    when she asks for 10 aliased totalCounts, then for 11,
    then the 10 are answered, and the 11 are refused before anything runs (no count query) with the measure, limit
    and value: without the limit 30 aliases made one request hold the database for 3.3 s."""
    assert MAX_TOTAL_COUNTS == 10
    await insert_characters(pool, alice, 3)
    async with graphql_logging_statements(settings) as (graphql, statements):
        ten = await graphql(aliased_counts(10), user=alice)
        statements.clear()
        eleven = await graphql(aliased_counts(11), user=alice)
        eleven_statements = list(statements)

    assert [ten["data"][f"c{i}"]["totalCount"] for i in range(10)] == [3] * 10
    assert eleven["data"] is None
    [error] = eleven["errors"]
    assert error["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
    assert (error["extensions"]["measure"], error["extensions"]["limit"], error["extensions"]["value"]) == (
        "totalCount", 10, 11
    )
    assert counts(eleven_statements) == []



def counted_through_fragments(lists: int) -> str:
    """One totalCount written, in a fragment spread under ``lists`` aliased lists (half of them inside another
    fragment, spread twice in one selection set: graphql-core collects it once there)."""
    inner = lists // 2
    outer = lists - inner
    return (
        "query { ...Inner ...Inner "
        + " ".join(f"o{i}: characters(first: {i + 1}) {{ ...Count }}" for i in range(outer))
        + " }\nfragment Inner on Query { "
        + " ".join(f"i{i}: characters(first: {i + 1}) {{ ...Count }}" for i in range(inner))
        + " }\nfragment Count on CharacterConnection { totalCount }\n"
    )


async def test_counts_in_fragments_are_counted_each_time_they_would_run(graphql: GraphQL, alice: uuid.UUID) -> None:
    """Given one totalCount written in a fragment,
    when it is spread under 10 aliased lists, then under 11,
    then the 10 are answered (a fragment spread twice in one selection set runs once, and counts once) and the 11
    are refused for 11 counts: what would run is counted, not what is written."""
    ten = await graphql(counted_through_fragments(10), user=alice)
    eleven = await graphql(counted_through_fragments(11), user=alice)

    assert "errors" not in ten and len(ten["data"]) == 10
    assert all(value == {"totalCount": 0} for value in ten["data"].values())
    [error] = eleven["errors"]
    assert (error["extensions"]["measure"], error["extensions"]["value"]) == ("totalCount", 11)


def aliased_searches(searches: list[str]) -> str:
    """One aliased characters page (ids only, no totalCount) for each search string."""
    return "{ " + " ".join(
        f"s{i}: characters(first: 5, search: {orjson.dumps(search).decode()}) {{ edges {{ node {{ name }} }} }}"
        for i, search in enumerate(searches)
    ) + " }"


def names(page: dict) -> list[str]:
    return [edge["node"]["name"] for edge in page["edges"]]


async def test_a_document_may_ask_for_at_most_five_searches(
    settings: Settings, pool: asyncpg.Pool, alice: uuid.UUID
) -> None:
    """Given alice's characters C1..C12 (a 1-2 character search, or one matching no name, reads every one of her
    rows: 150 ms at 200,000),
    when she asks for 5 aliased searches, then for 6 (no totalCount anywhere),
    then the 5 are answered, each with its own matches, and the 6 are refused before any SQL runs with the
    searches measure, limit and value (30 such searches held the database for 1.1 s)."""
    assert MAX_SEARCHES == 5
    await insert_characters(pool, alice, 12)
    five = ["C1", "C12", "2", "nobody", "C"]
    async with graphql_logging_statements(settings) as (graphql, statements):
        await graphql(aliased_searches(["warm up"]), user=alice)  # a first request may prepare what later ones reuse
        statements.clear()
        answered = await graphql(aliased_searches(five), user=alice)
        answered_statements = list(statements)
        statements.clear()
        refused = await graphql(aliased_searches([*five, "C3"]), user=alice)
        refused_statements = list(statements)

    assert "errors" not in answered, answered
    assert [sorted(names(answered["data"][f"s{i}"])) for i in range(4)] == [
        ["C1", "C10", "C11", "C12"], ["C12"], ["C12", "C2"], []
    ]
    assert len(names(answered["data"]["s4"])) == 5
    assert any("characters" in statement for statement in answered_statements)
    assert refused["data"] is None
    [error] = refused["errors"]
    assert error["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
    assert (error["extensions"]["measure"], error["extensions"]["limit"], error["extensions"]["value"]) == (
        "searches", 5, 6
    )
    assert refused_statements == []


async def test_searches_by_variable_and_in_fragments_are_counted_each_time_they_would_run(
    graphql: GraphQL, alice: uuid.UUID
) -> None:
    """Given a fragment holding two searches, one by variable, spread twice in one selection set (graphql-core
    collects it once: it runs once), three more searches beside it and a literal null search (which searches
    nothing),
    when the document is asked for, then again with one more search in an inline fragment,
    then the first (5 searches) is answered and the second (6) refused with the searches measure: what would run
    is counted, a variable's search whatever its value, a null literal not."""
    fragment = 'fragment Two on Query { f0: characters(search: $s) { totalCount } f1: characters(search: "b") ' \
        "{ totalCount } }"
    beside = " ".join(f'b{i}: characters(search: "b{i}") {{ totalCount }}' for i in range(3))
    five = f"query($s: String) {{ ...Two ...Two {beside} none: characters(search: null) {{ totalCount }} }}\n{fragment}"
    six = five.replace("...Two ...Two", '...Two ...Two ... on Query { more: characters(search: "m") { totalCount } }')

    answered = await graphql(five, {"s": "a"}, user=alice)
    refused = await graphql(six, {"s": None}, user=alice)

    assert "errors" not in answered, answered
    assert len(answered["data"]) == 6
    assert all(value == {"totalCount": 0} for value in answered["data"].values())
    [error] = refused["errors"]
    assert (error["extensions"]["measure"], error["extensions"]["limit"], error["extensions"]["value"]) == (
        "searches", 5, 6
    )


async def test_a_document_over_both_bounds_is_told_both(graphql: GraphQL, alice: uuid.UUID) -> None:
    """Given 11 aliased searches each with its totalCount,
    when the document is asked for,
    then it is refused with two errors, totalCount 11 over 10 and searches 11 over 5, so a client learns both."""
    document = "{ " + " ".join(f'c{i}: characters(search: "n{i}") {{ totalCount }}' for i in range(11)) + " }"

    body = await graphql(document, user=alice)

    assert body["data"] is None
    assert [
        (error["extensions"]["measure"], error["extensions"]["limit"], error["extensions"]["value"])
        for error in body["errors"]
    ] == [("totalCount", 10, 11), ("searches", 5, 11)]
