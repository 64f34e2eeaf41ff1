"""Compiled execution plans (graph/plans/) answer exactly what graphql-core answers, only faster.

Each test runs the same operation with plans and without (graphql-core's own execution) and compares the
answers whole: data, and errors with their messages, paths, locations and codes. The app's tests go through
two real apps over HTTP on the same database; the error and async cases graphql-core handles most subtly run
on a small graphql-core schema of their own, through the same executor class the app uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from enum import Enum
from typing import Any

import asyncpg
import httpx
import pytest
from asgi_lifespan import LifespanManager
from graphql import (
    ExecutionResult,
    GraphQLArgument,
    GraphQLEnumType,
    GraphQLEnumValue,
    GraphQLField,
    GraphQLList,
    GraphQLObjectType,
    GraphQLSchema,
    GraphQLString,
    build_schema,
    execute,
    parse,
    subscribe,
)

from graph.plans import PlanCache
from graph.schema import PortraitsExecutionContext
from server.app import create_app
from server.settings import Settings, SettingsError
from tests.conftest import GraphQL, graphql_over
from tests.support import only_error
from tests.test_characters import create_character
from tests.test_pagination import insert_characters

PAGE = """
query { characters(first: 100) { edges { node { id name description } } } }
"""

FULL_PAGE = """
query Page($first: Int) {
  characters(first: $first) {
    totalCount
    edges {
      cursor
      node { id name description appearanceTags traits contentRating seedLocked createdAt updatedAt __typename }
    }
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
  }
}
"""


@dataclass
class Apps:
    """The app twice on the same database: with plans (``plans``, its cache) and with graphql-core only."""

    planned: GraphQL
    plain: GraphQL
    plans: PlanCache


@contextlib.asynccontextmanager
async def app_over_http(settings: Settings, plans: PlanCache | None = None) -> AsyncIterator[GraphQL]:
    async with LifespanManager(create_app(settings, plans=plans)) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            yield graphql_over(http)


@pytest.fixture
async def apps(settings: Settings, pool: asyncpg.Pool) -> AsyncIterator[Apps]:
    plans = PlanCache()
    async with (
        app_over_http(replace(settings, execution_plans=True), plans) as planned,
        app_over_http(replace(settings, execution_plans=False)) as plain,
    ):
        yield Apps(planned, plain, plans)


async def both(apps: Apps, query: str, variables: dict[str, Any] | None = None, **kwargs: Any) -> dict[str, Any]:
    """The answer with plans, checked to be graphql-core's answer."""
    planned = await apps.planned(query, variables, **kwargs)
    plain = await apps.plain(query, variables, **kwargs)
    assert planned == plain
    return planned


async def test_a_page_of_characters_is_graphql_cores_page(apps: Apps, pool: asyncpg.Pool, alice: uuid.UUID) -> None:
    # given 120 characters
    await insert_characters(pool, alice, 120)

    # when alice asks for a page of 100, and for one with every field, with plans and without
    page = await both(apps, PAGE, user=alice)
    full = await both(apps, FULL_PAGE, {"first": 30}, user=alice)

    # then the answers are the same, and the plans ran them (one plan per operation, built once)
    assert len(page["data"]["characters"]["edges"]) == 100
    assert full["data"]["characters"]["totalCount"] == 120
    assert full["data"]["characters"]["edges"][0]["node"]["__typename"] == "Character"
    assert apps.plans.stats.built == 2
    assert apps.plans.stats.planned == 2
    assert apps.plans.stats.fallback == 0


DIRECTIVES = """
query Cards($withDescription: Boolean!, $hideName: Boolean!, $first: Int) {
  list: characters(first: $first) {
    edges {
      node {
        ...Card
        id
        title: name @skip(if: $hideName)
        ... on Character @include(if: $withDescription) { description name }
        literal: name @include(if: false)
      }
    }
    edges { node { ...Card @skip(if: $hideName) appearanceTags } }
  }
  again: characters(first: 1) { edges { node { name } } }
}
fragment Card on Character { name id createdAt }
"""


async def test_aliases_fragments_and_directives_with_variables(
    apps: Apps, pool: asyncpg.Pool, alice: uuid.UUID
) -> None:
    # given a few characters
    await insert_characters(pool, alice, 3)

    # when one document runs with every value of its variables
    answers = []
    for with_description in (True, False):
        for hide_name in (True, False):
            variables = {"withDescription": with_description, "hideName": hide_name, "first": 2}
            answers.append(await both(apps, DIRECTIVES, variables, user=alice))

    # then each answer is graphql-core's, its keys in graphql-core's order, from one plan built once
    shown = answers[0]["data"]["list"]["edges"][0]["node"]
    assert list(shown) == ["name", "id", "createdAt", "description", "appearanceTags"]
    hidden_name = answers[0]["data"]["list"]["edges"][0]["node"]
    assert "title" not in hidden_name
    assert list(answers[3]["data"]["list"]["edges"][0]["node"]) == ["name", "id", "createdAt", "title",
                                                                     "appearanceTags"]
    assert apps.plans.stats.built == 1
    assert apps.plans.stats.planned == 4


async def test_a_resolver_error_in_a_nullable_field(apps: Apps, alice: uuid.UUID) -> None:
    # given a character
    character = await create_character(apps.planned, alice)

    # when its signed URL is asked for with a bad TTL, beside fields that resolve
    query = """
    query { characters { edges { node { id
      url: signedImageUrl(ttlSeconds: -1) { url }
      name } } } }
    """
    body = await both(apps, query, user=alice)

    # then that field is null, and its error has graphql-core's path, locations and code
    node = body["data"]["characters"]["edges"][0]["node"]
    assert node == {"id": character["id"], "url": None, "name": "Ann"}
    error = only_error(body)
    assert error["path"] == ["characters", "edges", 0, "node", "url"]
    assert error["locations"] == [{"line": 3, "column": 7}]
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert apps.plans.stats.planned == 2  # (the mutation that created the character, then the query)


async def test_a_refused_root_field_is_null_and_the_rest_runs(apps: Apps, alice: uuid.UUID) -> None:
    # given a document whose first root field is refused by its resolver
    query = "query { bad: characters(first: 0) { totalCount } good: characters(first: 1) { edges { cursor } } }"

    # when it runs
    body = await both(apps, query, user=alice)

    # then that root field is null with its error, and the other answers
    assert body["data"] == {"bad": None, "good": {"edges": []}}
    assert only_error(body)["path"] == ["bad"]


async def test_mutation_root_fields_run_one_after_the_other(
    apps: Apps, pool: asyncpg.Pool, alice: uuid.UUID
) -> None:
    # given a mutation creating three characters under aliases
    mutation = """
    mutation {
      c: createCharacter(input: {name: "C", description: "third"}) { name }
      a: createCharacter(input: {name: "A", description: "first"}) { name }
      b: createCharacter(input: {name: "B", description: "second"}) { name }
    }
    """

    # when it runs through the plans
    body = await apps.planned(mutation, user=alice)

    # then the answer keeps the document's order and the rows were written in it, one after the other
    assert "errors" not in body, body
    assert list(body["data"]) == ["c", "a", "b"]
    rows = await pool.fetch("SELECT name FROM characters WHERE user_id = $1 ORDER BY created_at, name", alice)
    assert [row["name"] for row in rows] == ["C", "A", "B"]
    assert apps.plans.stats.planned == 1


async def test_an_unsupported_document_runs_on_graphql_core(apps: Apps, alice: uuid.UUID) -> None:
    # given a document asking for introspection's __type, which plans leave to graphql-core
    query = '{ __type(name: "Character") { name fields { name } } characters(first: 1) { totalCount } }'

    # when it runs twice
    first = await both(apps, query, user=alice)
    await apps.planned(query, user=alice)

    # then graphql-core answered (the plan was tried once, remembered as unsupported) and the answer is its own
    assert first["data"]["__type"]["name"] == "Character"
    assert apps.plans.stats.unsupported == 1
    assert apps.plans.stats.built == 0
    assert apps.plans.stats.planned == 0
    assert apps.plans.stats.fallback == 2


async def test_execution_plans_off_leaves_everything_to_graphql_core(
    settings: Settings, pool: asyncpg.Pool, alice: uuid.UUID
) -> None:
    # given EXECUTION_PLANS=off, as an operator sets it
    off = Settings.from_environ({"EXECUTION_PLANS": "off", "JWT_SECRET": "x" * 40})
    assert off.execution_plans is False
    assert Settings.from_environ({"JWT_SECRET": "x" * 40}).execution_plans is True
    with pytest.raises(SettingsError, match="EXECUTION_PLANS"):
        Settings.from_environ({"EXECUTION_PLANS": "maybe", "JWT_SECRET": "x" * 40})

    # when an app with plans off runs a page
    await insert_characters(pool, alice, 2)
    unused = PlanCache()
    async with app_over_http(replace(settings, execution_plans=False), unused) as graphql:
        body = await graphql(PAGE, user=alice)

    # then it answered without ever looking at a plan
    assert len(body["data"]["characters"]["edges"]) == 2
    assert unused.stats == PlanCache().stats
    assert len(unused) == 0


# --- The subtle cases, on a small graphql-core schema through the app's executor class ---

SDL = """
type Query {
  items(fail: Int, late: Boolean): [Item!]
  maybeItems: [Item]
  outer: Outer
  number: Int
  notList: [String]
  words: [String!]!
  failing: String
  early: String
  later: String
}
type Item { id: ID! name: String! note: String slow: String }
type Outer { inner: Inner! label: String }
type Inner { value: String! other: String }
type Mutation { step(n: Int!, wait: Float!): Int }
type Subscription { ticks: Item! }
"""


@dataclass
class PlanContext:
    """What the executor reads from a context: the plans (graph/context.py's Context has the same field)."""

    plans: PlanCache | None
    log: list[str]


class Boom(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.extensions = {"code": "BOOM"}


def small_schema() -> GraphQLSchema:
    schema = build_schema(SDL)

    def resolvers(type_name: str, **fields: Callable[..., Any]) -> None:
        type_ = schema.get_type(type_name)
        assert isinstance(type_, GraphQLObjectType)
        for name, resolve in fields.items():
            type_.fields[name].resolve = resolve

    def items(_root: Any, info: Any, fail: int | None = None, late: bool = False) -> Any:
        rows = [{"id": str(n), "name": None if n == fail else f"item {n}", "note": n} for n in range(4)]
        if late:
            async def later() -> Any:
                await asyncio.sleep(0)
                return rows
            return later()
        return rows

    async def slow(item: dict[str, Any], info: Any) -> str:
        await asyncio.sleep(0.001 * (4 - int(item["id"])))
        if item["id"] == "2":
            raise Boom(f"slow {item['id']} failed")
        info.context.log.append(item["id"])
        return f"slow {item['id']}"

    def inner_value(_inner: Any, _info: Any) -> Any:
        return None

    async def early(_root: Any, info: Any) -> str:
        info.context.log.append("early")
        raise Boom("early failed")

    async def later_field(_root: Any, info: Any) -> str:
        await asyncio.sleep(0.001)
        info.context.log.append("later")
        return "later"

    async def step(_root: Any, info: Any, n: int, wait: float) -> int:
        await asyncio.sleep(wait)
        info.context.log.append(f"step {n}")
        return n

    async def ticks(_root: Any, _info: Any) -> AsyncIterator[dict[str, Any]]:
        for n in range(3):
            yield {"ticks": {"id": str(n), "name": None if n == 1 else f"tick {n}"}}

    resolvers(
        "Query",
        items=items,
        maybeItems=lambda _root, _info: [{"id": "1", "name": "one"}, None, {"id": "3", "name": None}],
        outer=lambda _root, _info: {"inner": {"other": "x"}, "label": "outer"},
        number=lambda _root, _info: "not a number",
        notList=lambda _root, _info: 7,
        words=lambda _root, _info: ("a", "b", ValueError("c is an error")),
        failing=lambda _root, _info: Boom("failing failed"),
        early=early,
        later=later_field,
    )
    resolvers("Item", slow=slow)
    resolvers("Inner", value=inner_value)
    resolvers("Mutation", step=step)
    subscription = schema.get_type("Subscription")
    assert isinstance(subscription, GraphQLObjectType)
    subscription.fields["ticks"].subscribe = ticks
    return schema


Outcome = tuple[Any, Any, list[str]]


async def run_both(schema: GraphQLSchema, query: str, variables: dict[str, Any] | None = None) -> Outcome:
    """The outcome (data, formatted errors, resolver log) with plans, checked to be graphql-core's."""
    outcomes = []
    plans = PlanCache()
    for cache in (plans, None):
        context = PlanContext(cache, [])
        result = execute(
            schema, parse(query), context_value=context, variable_values=variables,
            executor_class=PortraitsExecutionContext,
        )
        if isinstance(result, Awaitable):
            result = await result
        assert isinstance(result, ExecutionResult)
        errors = [error.formatted for error in result.errors] if result.errors else None
        outcomes.append((result.data, errors, context.log))
    assert outcomes[0] == outcomes[1]
    assert plans.stats.planned == 1
    return outcomes[0]


async def test_non_null_errors_propagate_to_the_nearest_nullable_parent() -> None:
    schema = small_schema()
    # given an item whose non-null name is null, and a non-null field of a nullable object that is null
    query = "{ items(fail: 2) { id name } outer { label inner { value other } } maybeItems { id name } }"

    # when it runs
    data, errors, _ = await run_both(schema, query)

    # then each null went up to the nearest nullable parent: the whole list, the outer object, one list item
    assert data == {"items": None, "outer": None, "maybeItems": [{"id": "1", "name": "one"}, None, None]}
    assert errors is not None
    assert [error["message"] for error in errors] == [
        "Cannot return null for non-nullable field Item.name.",
        "Cannot return null for non-nullable field Inner.value.",
        "Cannot return null for non-nullable field Item.name.",
    ]
    assert [error["path"] for error in errors] == [
        ["items", 2, "name"], ["outer", "inner", "value"], ["maybeItems", 2, "name"]
    ]


async def test_leaf_list_and_resolver_errors_are_graphql_cores() -> None:
    schema = small_schema()
    # given fields that return a value of the wrong type, a non-list for a list, an exception as a value
    query = "{ number notList failing words early }"

    # when it runs
    data, errors, _ = await run_both(schema, query)

    # then each is graphql-core's error at its place, a non-null list's error nulling the whole answer
    assert data is None
    assert errors is not None
    assert [error["path"] for error in errors] == [["number"], ["notList"], ["failing"], ["words", 2]]
    assert errors[1]["message"] == "Expected Iterable, but did not find one for field 'Query.notList'."


async def test_awaited_fields_finish_and_fail_as_in_graphql_core() -> None:
    schema = small_schema()
    # given a list resolved late whose items each await, one of which fails, beside awaiting root fields
    query = "query($late: Boolean) { early later items(late: $late) { id slow } }"

    # when it runs, with the list's value awaited and not
    for late in (True, False):
        data, errors, log = await run_both(schema, query, {"late": late})

        # then the answers, the errors and the order the resolvers ran in are graphql-core's
        assert data["items"][2] == {"id": "2", "slow": None}
        assert errors is not None
        assert [error["path"] for error in errors] == [["early"], ["items", 2, "slow"]]
        assert errors[0]["extensions"] == {"code": "BOOM"}
        assert log[0] == "early" and "later" in log


async def test_mutation_fields_run_serially() -> None:
    schema = small_schema()
    # given steps where the first waits longest
    query = "mutation { a: step(n: 1, wait: 0.02) b: step(n: 2, wait: 0.0) c: step(n: 3, wait: 0.01) }"

    # when it runs
    data, errors, log = await run_both(schema, query)

    # then each step ran after the one before it
    assert data == {"a": 1, "b": 2, "c": 3}
    assert errors is None
    assert log == ["step 1", "step 2", "step 3"]


async def test_subscription_events_run_through_the_plan() -> None:
    schema = small_schema()
    document = parse("subscription { ticks { id name } }")
    outcomes = []
    plans = PlanCache()
    for cache in (plans, None):
        # given a subscription of three events, the second holding a null in a non-null field
        stream = subscribe(
            schema, document, context_value=PlanContext(cache, []), executor_class=PortraitsExecutionContext
        )
        if isinstance(stream, Awaitable):
            stream = await stream
        assert not isinstance(stream, ExecutionResult)

        # when its events are read
        outcomes.append([(event.data, event.errors) async for event in stream])

    # then each event was executed by the plan, with graphql-core's answers
    assert outcomes[0] == outcomes[1]
    assert outcomes[0][1][0] is None
    assert plans.stats.planned == 3
    assert plans.stats.built == 1


class Shade(Enum):
    LIGHT = "light"
    DARK = "dark"


async def test_arguments_a_plan_computes_once_are_what_graphql_core_gives_every_call() -> None:
    # given a field whose enum argument's values are Python enum members (as strawberry's enums are), defaulted
    # or given as a literal, and whose list argument the resolver changes
    def paint(_root: Any, info: Any, shade: Shade, tags: list[str] | None = None) -> str:
        info.context.log.append(shade.name)  # a member: a plain string would have no name
        if tags is not None:
            tags.append("changed")
        return f"{shade.name} {tags}"

    shade = GraphQLEnumType("Shade", {"LIGHT": GraphQLEnumValue(Shade.LIGHT), "DARK": GraphQLEnumValue(Shade.DARK)})
    arguments = {
        "shade": GraphQLArgument(shade, default_value=Shade.DARK),
        "tags": GraphQLArgument(GraphQLList(GraphQLString)),
    }
    schema = GraphQLSchema(GraphQLObjectType("Query", {"paint": GraphQLField(GraphQLString, arguments, paint)}))
    document = parse('{ default: paint given: paint(shade: LIGHT) listed: paint(tags: ["a"]) }')

    # when it runs three times on one plan, and on graphql-core
    outcomes = []
    plans = PlanCache()
    for cache in (plans, None):
        context = PlanContext(cache, [])
        answers = []
        for _ in range(3):
            result = execute(schema, document, context_value=context, executor_class=PortraitsExecutionContext)
            assert isinstance(result, ExecutionResult)
            answers.append((result.data, result.errors))
        outcomes.append((answers, context.log))

    # then every run got the enum's own members and a list of its own (the one a run changed is never the next
    # run's), as on graphql-core
    assert outcomes[0] == outcomes[1]
    assert plans.stats.planned == 3
    answers, log = outcomes[0]
    assert answers[2] == ({"default": "DARK None", "given": "LIGHT None", "listed": "DARK ['a', 'changed']"}, None)
    assert log == ["DARK", "LIGHT", "DARK"] * 3
