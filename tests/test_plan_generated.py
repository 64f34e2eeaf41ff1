"""Generated plan code (graph/plans/generate.py) answers exactly what graphql-core and the closure plans answer.

Each operation runs three ways on the same objects: generated code, closures only, and graphql-core's own
execution, all through the app's executor class; data and formatted errors (messages, paths, locations,
extensions) must be identical. The schema is strawberry's, as the app's is, so its plain attributes are read
inline by the generated code (strawberry's "basic" fields) and its resolvers called beside them. The app's own
page is checked the same way over HTTP on a real database.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import operator
import tracemalloc
import uuid
from collections.abc import AsyncIterator, Awaitable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import Enum
from types import FunctionType
from typing import Any, cast

import asyncpg
import pytest
import strawberry
from graphql import GraphQLID
from strawberry.extensions import ParserCache
from strawberry.schema.config import StrawberryConfig

from graph.plans import PlanCache, PlanStats
from graph.plans.runtime import KnownTypes, remember_plain, remember_str_id
from graph.schema import PortraitsExecutionContext
from server.settings import Settings, SettingsError
from tests.test_execution_plans import PAGE, app_over_http
from tests.test_pagination import insert_characters


class Refused(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.extensions = {"code": "REFUSED"}


@strawberry.enum
class Kind(Enum):
    CAT = "cat"
    DOG = "dog"


@strawberry.type
class Tag:
    label: str
    weight: int | None
    inner: Tag | None = None
    more: list[Tag] = strawberry.field(default_factory=list)

    @strawberry.field
    async def shout(self, info: strawberry.Info) -> str | None:
        await asyncio.sleep(0)
        if self.label == "l1":
            raise Refused("l1 refused")
        info.context.log.append(f"shout {self.label}")
        return self.label.upper()


async def _later(value: Any) -> Any:
    await asyncio.sleep(0)
    return value


@strawberry.type
class Item:
    id: strawberry.ID
    ref: strawberry.ID
    name: str
    note: str | None
    kind: Kind
    seen: datetime
    tags: list[str]
    maybe_tags: list[str | None] | None
    tag: Tag | None
    first_tag: Tag
    labels: list[Tag]
    maybe_labels: list[Tag | None] | None
    grid: list[list[int]] | None
    scores: list[int | None]
    deferred: str | None

    @strawberry.field
    def checked(self, refuse_at: int = -1) -> str | None:
        if int(self.id) == refuse_at:
            raise Refused(f"item {self.id} refused")
        return f"checked {self.id}"

    @strawberry.field
    async def slow(self) -> str:
        await asyncio.sleep(0.001 * (4 - int(self.id)))
        if self.id == "2":
            raise Refused("slow 2 failed")
        return f"slow {self.id}"

    @strawberry.field
    def echo(self, text: str) -> str:
        return text


def make_item(n: int, **changes: Any) -> Item:
    item = Item(
        id=strawberry.ID(str(n)), ref=cast(strawberry.ID, uuid.UUID(int=n)), name=f"item {n}",
        note=None if n % 2 else f"note {n}", kind=Kind.CAT if n % 2 else Kind.DOG,
        seen=datetime(2025, 1, n + 1, tzinfo=UTC), tags=["a", f"t{n}"], maybe_tags=["x", None],
        tag=Tag(label=f"tag {n}", weight=n), first_tag=Tag(label="first", weight=None),
        labels=[Tag(label="l0", weight=0), Tag(label="l1", weight=None)],
        maybe_labels=[None, Tag(label="m", weight=None)] if n % 2 else None, grid=[[n, 1], [2]], scores=[n, 7],
        deferred=None,
    )
    for name, value in changes.items():
        setattr(item, name, value)
    return item


# What each root field hands back: made anew per execution (a coroutine can be awaited once).
ROWS: dict[str, Any] = {}


def rows(name: str) -> Any:
    return ROWS[name]()


ROWS.update(
    items=lambda: [make_item(n) for n in range(4)],
    # Item 2's non-null name is null; item 1's non-null first tag's label is null; item 3's tags hold a null.
    broken=lambda: [
        make_item(0), make_item(1, first_tag=Tag(label=None, weight=1)),  # type: ignore[arg-type]
        make_item(2, name=None), make_item(3, tags=["a", None]),
    ],
    # Values that are exceptions, awaitables, a generator and a tuple where lists are expected, a wrong type.
    odd=lambda: [
        make_item(0, note=ValueError("note 0 is an error"), deferred=_later("deferred 0")),
        make_item(1, tags=(tag for tag in ("g", "h")), labels=(Tag(label="tuple", weight=1),),
                  scores=[0.5, 1.5, 3]),
        make_item(2, ref=2, maybe_tags=None, tag=_later(Tag(label="late", weight=2)), grid=[[1], None]),
        make_item(3, kind="not a kind", seen="not a time", ref=[3]),
    ],
)


@strawberry.type
class Query:
    @strawberry.field
    def items(self, which: str = "items") -> list[Item | None] | None:
        return rows(which)

    @strawberry.field
    def strict(self, which: str = "items") -> list[Item]:
        return rows(which)

    @strawberry.field
    async def late(self, which: str = "items") -> list[Item] | None:
        return await _later(rows(which))

    @strawberry.field
    def one(self) -> Item:
        return make_item(1)


SCHEMA = strawberry.Schema(query=Query, execution_context_class=PortraitsExecutionContext)
# The same, with parsed documents kept, as the app keeps them: a repeated document is the same operation node.
CACHED = strawberry.Schema(
    query=Query, execution_context_class=PortraitsExecutionContext, extensions=[lambda: ParserCache(maxsize=16)]
)


@dataclass
class PlanContext:
    """What the executor reads of a context (graph/context.py's Context has the same field), and a log resolvers
    write to."""

    plans: PlanCache | None
    log: list[str] = field(default_factory=list)


Outcome = tuple[Any, Any]


async def three_ways(query: str, variables: dict[str, Any] | None = None, **cache: Any) -> tuple[Outcome, PlanCache]:
    """The outcome (data, formatted errors) with generated code, checked to be the closures' and graphql-core's."""
    generated = PlanCache(generate=True, generate_after=0, keep_sources=True, **cache)
    outcomes = []
    for plans in (generated, PlanCache(generate=False), None):
        result = await SCHEMA.execute(query, variable_values=variables, context_value=PlanContext(plans))
        errors = [error.formatted for error in result.errors] if result.errors else None
        outcomes.append((result.data, errors))
    assert outcomes[0] == outcomes[2], "generated code differs from graphql-core"
    assert outcomes[1] == outcomes[2], "closures differ from graphql-core"
    assert generated.stats.planned == 1
    return outcomes[0], generated


ITEM_FIELDS = """
  id ref name note kind seen tags maybeTags
  tag { label weight } firstTag { label } labels { label weight } maybeLabels { label } grid scores deferred
"""


async def test_every_kind_of_field_is_generated_and_answers_as_graphql_core() -> None:
    # given an operation selecting leaves, enums, times, lists of leaves, nested objects, lists of objects, lists
    # of lists, resolvers with arguments, beside each other
    query = f"{{ items {{ {ITEM_FIELDS} checked echo(text: \"hi\") }} one {{ id firstTag {{ label }} }} }}"

    # when it runs three ways
    (data, errors), plans = await three_ways(query)

    # then the answers are the same, and each object's selection was generated code (items: Item and four of Tag;
    # one: Item and Tag)
    assert errors is None
    assert data["items"][2]["tags"] == ["a", "t2"]
    assert data["items"][0]["kind"] == "DOG"
    assert data["one"] == {"id": "1", "firstTag": {"label": "first"}}
    assert plans.stats.generated == 7
    assert plans.stats.over_budget == 0


async def test_nulls_in_generated_lists_go_to_the_nearest_nullable_parent() -> None:
    # given items whose non-null name, non-null first tag's label and a non-null list item are null
    query = "query { items(which: \"broken\") { id name firstTag { label } tags } }"

    # when they run in a list of nullable items, and in a non-null list of non-null items
    (data, errors), _ = await three_ways(query)
    (strict, strict_errors), _ = await three_ways(query.replace("items(", "strict("))

    # then each bad item is null in the nullable list, with its error at its index; the strict list nulls the field
    assert data["items"][0]["name"] == "item 0"
    assert data["items"][1:] == [None, None, None]
    assert errors is not None
    assert [error["path"] for error in errors] == [
        ["items", 1, "firstTag", "label"], ["items", 2, "name"], ["items", 3, "tags", 1]
    ]
    assert errors[1]["message"] == "Cannot return null for non-nullable field Item.name."
    assert errors[1]["locations"] == [{"line": 1, "column": 37}]
    assert strict is None
    assert strict_errors is not None
    assert [error["path"] for error in strict_errors] == [["strict", 1, "firstTag", "label"]]


async def test_resolver_errors_at_list_indexes_keep_their_paths_and_codes() -> None:
    # given a resolver refusing item 2, beside an async resolver failing for item 2, in a list resolved late
    query = "query($at: Int!) { late { id checked(refuseAt: $at) slow } items { id slow } }"

    # when it runs
    (data, errors), _ = await three_ways(query, {"at": 1})

    # then a nullable field is null at its index; a non-null one nulls its item (late's items are non-null, so
    # late is null), each error with graphql-core's path and code
    assert data["late"] is None
    assert data["items"][1] == {"id": "1", "slow": "slow 1"}
    assert data["items"][2] is None
    assert errors is not None
    assert [error["path"] for error in errors] == [["late", 1, "checked"], ["items", 2, "slow"], ["late", 2, "slow"]]
    assert [error["extensions"] for error in errors] == [{"code": "REFUSED"}] * 3


async def test_pending_fields_inside_generated_lists_are_awaited_in_place() -> None:
    # given objects in plain lists and plain fields whose own fields await, one of them failing (tags first: its
    # list makes lists known plain, so the first Tag is the first item of a generated loop, completed the slow way)
    query = "{ items { id tags labels { label shout } tag { shout } } }"

    # when it runs
    (data, errors), _ = await three_ways(query)

    # then each awaited value is in its place, the failing one null with its error at its index
    assert data["items"][3] == {
        "id": "3", "tags": ["a", "t3"], "labels": [{"label": "l0", "shout": "L0"}, {"label": "l1", "shout": None}],
        "tag": {"shout": "TAG 3"},
    }
    assert errors is not None
    assert [error["path"] for error in errors] == [["items", n, "labels", 1, "shout"] for n in range(4)]


def nested_tag(depth: int, label: str) -> Tag:
    """A tag holding ``depth`` levels of tags: ``inner`` one, ``more`` two; the last one of an ``inner`` has no
    label (a null in a non-null field)."""
    if depth == 0:
        return Tag(label=None if label.endswith(".i") else label, weight=None)  # type: ignore[arg-type]
    return Tag(
        label=label, weight=depth, inner=nested_tag(depth - 1, f"{label}.i"),
        more=[nested_tag(depth - 1, f"{label}.{n}") for n in range(2)],
    )


async def test_objects_nested_deeper_than_written_out_are_called() -> None:
    # given tags nested six deep, in a field and in lists, the deepest of an inner chain without its non-null label
    ROWS["deep"] = lambda: [
        make_item(n, tag=nested_tag(6, f"t{n}"), labels=[nested_tag(6, f"l{n}")]) for n in range(2)
    ]
    inner = more = "label weight"
    for _ in range(6):
        inner = f"label inner {{ {inner} }}"
        more = f"label more {{ {more} }}"
    chains = f'{{ items(which: "deep") {{ tag {{ {inner} }} labels {{ {more} }} }} }}'
    tree = "label weight"
    for _ in range(6):
        tree = f"label inner {{ {tree} }} more {{ {tree} }}"

    # when chains of them run (with room for their code), nested objects written out in their parents' code as
    # deep as allowed, called below
    (data, errors), plans = await three_ways(chains, None, max_source=1 << 20)

    # then the answer is graphql-core's: every level, and the null gone up to the nearest nullable parent
    tag = data["items"][0]["tag"]
    assert tag["inner"]["inner"]["label"] == "t0.i.i"
    assert tag["inner"]["inner"]["inner"]["inner"]["inner"]["inner"] is None
    assert data["items"][1]["labels"][0]["more"][1]["more"][0]["more"][1]["more"][0]["label"] == "l1.1.0.1.0"
    assert errors is not None
    assert [error["path"] for error in errors] == [["items", n, "tag", *["inner"] * 6, "label"] for n in range(2)]
    assert plans.stats.over_budget == 0

    # and when the whole tree runs, its 254 selections more than a plan's budget of code holds, the rest closures
    (data, errors), plans = await three_ways(f'{{ items(which: "deep") {{ tag {{ {tree} }} }} }}')
    tag = data["items"][0]["tag"]
    assert tag["more"][1]["more"][0]["more"][1]["more"][0]["more"][1]["more"][0]["label"] == "t0.1.0.1.0.1.0"
    assert plans.stats.generated > 0
    assert plans.stats.over_budget > 0


async def test_pending_fields_left_by_an_error_still_run_to_their_end() -> None:
    # given objects whose awaited field is pending when a later non-null field fails: item 0's first tag, item 1's
    # label (which fails item 1 before its first tag runs)
    unlabelled = Tag(label=None, weight=0)  # type: ignore[arg-type]
    ROWS["unlabelled"] = lambda: [
        make_item(0, labels=[Tag(label="a", weight=0)], first_tag=unlabelled),
        make_item(1, labels=[unlabelled], first_tag=Tag(label="b", weight=0)),
    ]
    query = '{ items(which: "unlabelled") { id labels { shout label } firstTag { shout label } } }'
    logs = []
    for plans in (PlanCache(generate_after=0), PlanCache(generate=False), None):
        # when it runs, and the loop runs on a moment after the answer
        context = PlanContext(plans)
        result = await SCHEMA.execute(query, context_value=context)
        await asyncio.sleep(0.01)
        assert result.data == {"items": [None, None]}
        logs.append(sorted(context.log))

    # then the pending fields ran to their end each way, as graphql-core lets them (its settle_in_background)
    assert logs[0] == logs[1] == logs[2] == ["shout None", "shout None", "shout a"]


async def test_odd_values_take_the_closures_paths_with_the_same_answers() -> None:
    # given an exception as a value, awaitables in plain attributes, a generator and a tuple for lists, a null in a
    # list of lists, an enum field holding a string, a time field holding a string, floats in a list of Int
    query = f"{{ items(which: \"odd\") {{ {ITEM_FIELDS} }} }}"

    # when it runs
    (data, errors), _ = await three_ways(query)

    # then every value and error is graphql-core's
    assert data["items"][0]["deferred"] == "deferred 0"
    assert data["items"][1]["tags"] == ["g", "h"]
    assert data["items"][1]["labels"] == [{"label": "tuple", "weight": 1}]
    assert data["items"][2]["tag"] == {"label": "late", "weight": 2}
    assert errors is not None
    assert data["items"][1]["scores"] == [None, None, 3]
    assert data["items"][2]["ref"] == "2"
    assert data["items"][3] is None
    assert [error["path"] for error in errors] == [
        ["items", 0, "note"], ["items", 1, "scores", 0], ["items", 1, "scores", 1], ["items", 2, "grid", 1],
        ["items", 3, "ref"],
    ]
    assert errors[-1]["message"] == "ID cannot represent value: [3]"


async def test_skip_and_include_with_variables_aliases_and_typename() -> None:
    # given a document with variable directives on fields, fragments and inline fragments, aliases and __typename
    query = """
    query($withTag: Boolean!, $hideName: Boolean!) {
      first: items { ...Card @include(if: $withTag) id title: name @skip(if: $hideName) __typename }
      second: items { kind: id id: kind ... @skip(if: $withTag) { note } type: __typename }
    }
    fragment Card on Item { tag { label __typename } name }
    """

    # when it runs with each set of values
    answers = []
    for with_tag in (True, False):
        for hide_name in (True, False):
            (data, errors), plans = await three_ways(query, {"withTag": with_tag, "hideName": hide_name})
            assert errors is None
            assert plans.stats.generated > 0
            answers.append(data)

    # then each answer has its keys in graphql-core's order
    assert list(answers[0]["first"][0]) == ["tag", "name", "id", "__typename"]
    assert answers[0]["first"][0]["tag"] == {"label": "tag 0", "__typename": "Tag"}
    assert list(answers[3]["first"][0]) == ["id", "title", "__typename"]
    assert answers[3]["second"][0] == {"kind": "0", "id": "DOG", "note": "note 0", "type": "Item"}


@strawberry.type
class Pet:
    name: str
    age: int | None


@strawberry.type
class Owner:
    @strawberry.field
    def pets(self) -> list[Pet]:
        return [{"name": "Rex", "age": 3}, {"name": "Tom"}, {"name": "Kit", "age": None}]  # type: ignore[list-item]


async def test_a_schema_reading_fields_its_own_way_is_read_its_way() -> None:
    # given a schema whose fields are read from dicts (strawberry's default_resolver set to getitem), one value
    # missing
    schema = strawberry.Schema(
        query=Owner, config=StrawberryConfig(default_resolver=operator.getitem),
        execution_context_class=PortraitsExecutionContext,
    )
    generated = PlanCache(generate_after=0, keep_sources=True)
    outcomes = []
    for plans in (generated, None):
        # when it runs
        result = await schema.execute("{ pets { name age } }", context_value=PlanContext(plans))
        outcomes.append((result.data, [error.formatted for error in result.errors or ()]))

    # then generated code read each field with getitem, as strawberry does, and answered as graphql-core did
    assert outcomes[0] == outcomes[1]
    assert outcomes[0][0] == {
        "pets": [{"name": "Rex", "age": 3}, {"name": "Tom", "age": None}, {"name": "Kit", "age": None}]
    }
    assert [error["path"] for error in outcomes[0][1]] == [["pets", 1, "age"]]
    assert generated.stats.generated == 1
    assert ".name" not in generated.sources()[0]


HOSTILE_NAMES = [
    "__import__", "__builtins__", "__class__", "exec", "eval", "compile", "open", "globals", "import", "def",
    "lambda", "return", "raise", "None", "True", "source", "location", "run", "S", "G", "aw", "pk", "pv", "r",
    "v0", "k0", "n1", "CO", "U", "e", "x", "i", "l", "out", "execute_fields", "remember_plain", "gather_into",
    "_" * 300, "a" * 5000,
]
HOSTILE_TEXT = [
    '"); __import__("os").system("echo pwned") #', "'''", '"""', "\\", "line\nbreak\r\n", "\x00", "{k0}", "%s",
]


async def test_hostile_names_and_values_are_data_only() -> None:
    # given aliases that are Python keywords, builtins, the generated code's own names and very long names, and
    # string arguments holding quotes, backslashes, newlines and code
    aliases = " ".join(f"{name}: name" for name in HOSTILE_NAMES)
    labels = " ".join(f"{name}: label" for name in HOSTILE_NAMES)
    echoes = " ".join(f"echo{n}: echo(text: {graphql_string(text)})" for n, text in enumerate(HOSTILE_TEXT))
    query = f"query {{ items {{ {aliases} {echoes} tag {{ {labels} }} }} }}"

    # when it runs
    (data, errors), plans = await three_ways(query)

    # then every alias is a key of the answer holding the field's value, every argument came back as given
    assert errors is None
    item = data["items"][1]
    assert [key for key in item if key in HOSTILE_NAMES] == HOSTILE_NAMES
    assert all(item[name] == "item 1" for name in HOSTILE_NAMES)
    assert list(item["tag"]) == HOSTILE_NAMES
    assert [item[f"echo{n}"] for n in range(len(HOSTILE_TEXT))] == HOSTILE_TEXT
    # and none of it is in the generated source, which names only what the generator made
    sources = plans.sources()
    assert len(sources) == 2
    for source in sources:
        compile(source, "<check>", "exec")
        assert "a" * 100 not in source and "_" * 100 not in source
        assert "__import__" not in source and "pwned" not in source and "echo" not in source
        assert "\\" not in source and "'" not in source and '"' not in source


def graphql_string(text: str) -> str:
    """``text`` as a GraphQL string literal."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    return '"' + escaped.replace("\x00", "\\u0000") + '"'


async def test_a_plan_past_its_source_budget_runs_on_closures() -> None:
    # given budgets of source that hold the two small Tag selections and not the Item one: the plan's, the cache's
    query = "{ items { id name tag { label } labels { label } } }"
    _, unbounded = await three_ways(query)
    sizes = sorted(len(source) for source in unbounded.sources())
    assert len(sizes) == 3
    budget = sizes[0] + sizes[1] + 1

    for limit in ("max_source", "max_total_source"):
        # when it runs
        (data, errors), plans = await three_ways(query, None, **{limit: budget})

        # then the answer is the same; what did not fit ran on closures
        assert errors is None
        assert data["items"][0]["tag"] == {"label": "tag 0"}
        assert plans.stats.generated == 2
        assert plans.stats.over_budget == 1
        assert sum(len(source) for source in plans.sources()) <= budget


async def test_a_cache_gives_back_the_source_budget_of_the_plans_it_drops() -> None:
    # given a cache holding one plan, with room for one document's source
    query = "{ items { id name tag { label } } }"
    _, unbounded = await three_ways(query)
    size = sum(len(source) for source in unbounded.sources())
    plans = PlanCache(max_plans=1, generate_after=0, max_total_source=size)

    # when the document runs three times, parsed anew each time: a new operation, so a new plan in the place of the
    # last one
    for _ in range(3):
        result = await SCHEMA.execute(query, context_value=PlanContext(plans))
        assert result.errors is None

    # then each was generated code: a dropped plan's source no longer counted
    assert plans.stats.built == 3
    assert plans.stats.generated == 6
    assert plans.stats.over_budget == 0


@dataclass
class Kept:
    """What a cache held after some runs: the bytes only it kept alive, its plans and their compiled fields."""

    bytes: int
    plans: int
    fields: int
    stats: PlanStats


async def kept_by(plans: PlanCache, runs: Sequence[tuple[str, dict[str, Any] | None]]) -> Kept:
    """What ``plans`` keeps after ``runs`` (each document with its variables, through a schema keeping parsed
    documents as the app does): measured as what is freed when the cache goes."""
    tracemalloc.start()
    context = PlanContext(plans)
    for query, variables in runs:
        result = await CACHED.execute(query, variable_values=variables, context_value=context)
        assert result.errors is None
    kept = Kept(0, len(plans), plans.fields, plans.stats)
    del context, result
    gc.collect()
    with_cache = tracemalloc.get_traced_memory()[0]
    del plans
    gc.collect()
    kept.bytes = with_cache - tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return kept


def many_fields(name: str) -> str:
    """A document of one operation called ``name`` (distinct names: distinct operations) compiling ~140 fields."""
    return f"query {name} {{ {' '.join(f'a{n}: one {{ {ITEM_FIELDS} }}' for n in range(6))} }}"


async def test_the_plans_a_cache_keeps_are_bounded_by_their_compiled_fields() -> None:
    # given 12 distinct documents of ~140 fields each, each run twice (its code generated for its second run)
    runs = [(many_fields(f"Q{n}"), None) for n in range(12) for _ in range(2)]

    # when they run through a cache with room for 300 compiled fields, and through one with room for every plan
    bounded = await kept_by(PlanCache(max_fields=300), runs)
    everything = await kept_by(PlanCache(max_fields=10**9), runs)

    # then the bounded cache held at most its budget, and kept a fraction of the memory of 12 plans
    assert 0 < bounded.fields <= 300
    assert bounded.plans < everything.plans == 12
    assert bounded.bytes < everything.bytes / 4, (bounded, everything)


async def test_a_plans_variants_are_bounded_by_its_compiled_fields() -> None:
    # given one document whose fields hang on five variables, run with each of their 32 sets of values, twice
    query = (
        "query($v0: Boolean!, $v1: Boolean!, $v2: Boolean!, $v3: Boolean!, $v4: Boolean!) { "
        + " ".join(f"a{n}: one @include(if: $v{n % 5}) {{ {ITEM_FIELDS} }}" for n in range(6))
        + " }"
    )
    sets = [{f"v{k}": bool(n >> k & 1) for k in range(5)} for n in range(32)]
    runs = [(query, values) for values in sets for _ in range(2)]

    # when they run through a cache whose plans may hold 300 compiled fields, and through one without that bound
    bounded = await kept_by(PlanCache(max_plan_fields=300), runs)
    everything = await kept_by(PlanCache(max_plan_fields=10**9, max_fields=10**9), runs)

    # then the plan held at most its budget of fields (other sets ran on graphql-core), and kept a fraction of the
    # memory of 32 variants
    assert 0 < bounded.fields <= 300
    assert bounded.stats.fallback > 0
    assert bounded.bytes < everything.bytes / 4, (bounded, everything)


async def test_the_plans_a_cache_keeps_are_bounded_by_their_documents_characters() -> None:
    # given 24 distinct small documents, each padded with a comment to 20,000 characters (a parsed document keeps
    # its text and tokens, and a plan keeps its operation), each run twice
    def padded(n: int) -> str:
        text = f"query Q{n} {{ one {{ id }} }}\n#"
        return text + "x" * (20_000 - len(text))

    runs = [(padded(n), None) for n in range(24) for _ in range(2)]

    # when they run through a cache with room for 100,000 characters of documents, and one with room for all
    bounded = await kept_by(PlanCache(max_chars=100_000), runs)
    everything = await kept_by(PlanCache(max_chars=10**9), runs)

    # then the bounded cache kept at most five of them, and a fraction of the memory of 24
    assert 0 < bounded.plans <= 5
    assert bounded.bytes < everything.bytes / 4, (bounded, everything)


async def test_writing_code_for_objects_too_big_for_the_budget_is_bounded_too() -> None:
    # given a document of many objects, each larger than a plan's budget of source
    query = many_fields("Big").replace("one {", "one { tag { label inner { label } } more: labels { label weight }")
    plans = PlanCache(generate_after=0, max_source=4096)

    # when it runs, its objects written as code while the budget lasts
    result = await CACHED.execute(query, context_value=PlanContext(plans))
    assert result.errors is None

    # then what was written, kept or dropped, is at most twice the budget: the rest runs on closures unwritten
    assert plans.stats.over_budget > 0
    assert 0 < plans.stats.written <= 2 * 4096


async def test_a_plan_dropped_from_its_cache_leaves_no_cycle() -> None:
    # given a cache of one plan, holding the generated code of a document that ran twice
    plans = PlanCache(max_plans=1)
    context = PlanContext(plans)
    for _ in range(2):
        assert (await CACHED.execute(many_fields("First"), context_value=context)).errors is None
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        # when another document takes its place
        assert (await CACHED.execute("{ one { id } }", context_value=context)).errors is None
        gc.collect()
        # then nothing of the dropped plan was left in a reference cycle (which, frozen by server/gc_pacer.py in a
        # serving process, would wait for a full collection): reference counting freed it all
        left = [
            garbage for garbage in gc.garbage
            if (isinstance(garbage, FunctionType) and str(garbage.__module__).startswith("graph.plans"))
            or (isinstance(garbage, dict) and "execute_fields" in garbage)
        ]
        assert left == []
    finally:
        gc.set_debug(0)
        gc.garbage.clear()


async def test_a_plan_runs_on_closures_until_it_has_run_once() -> None:
    # given the default cache, and a schema keeping parsed documents (as the app does)
    plans = PlanCache()
    counts = []
    for _ in range(3):
        # when one document runs again and again
        result = await CACHED.execute("{ items { id tag { label } } }", context_value=PlanContext(plans))
        assert result.errors is None
        counts.append(plans.stats.generated)

    # then the first execution ran on closures, the second compiled the objects' code, the third reused it
    assert counts == [0, 2, 2]
    assert plans.stats.built == 1
    assert plans.stats.planned == 3


async def test_a_subscription_event_runs_generated_code() -> None:
    # given a subscription whose events hold an item, the second one with a null in a non-null field
    @strawberry.type
    class Subscription:
        @strawberry.subscription
        async def ticks(self) -> AsyncIterator[Item]:
            for n in range(3):
                yield make_item(n, name=None) if n == 1 else make_item(n)

    schema = strawberry.Schema(
        query=Query, subscription=Subscription, execution_context_class=PortraitsExecutionContext
    )
    outcomes = []
    generated = PlanCache(generate=True, generate_after=0)
    for plans in (generated, None):
        # when its events are read
        stream = await schema.subscribe("subscription { ticks { id name tag { label } } }",
                                        context_value=PlanContext(plans))
        assert not isinstance(stream, Awaitable)
        outcomes.append([(event.data, event.errors) async for event in stream])

    # then each event is graphql-core's, executed by the plan's generated code
    assert outcomes[0] == outcomes[1]
    assert outcomes[0][1][0] is None
    assert generated.stats.planned == 3
    assert generated.stats.generated == 2


def test_only_classes_whose_every_instance_is_plain_are_remembered() -> None:
    # given classes known never awaitable: a plain one, an exception, one whose __class__ lies, None's, a list
    class Plain:
        pass

    liar = type("Liar", (), {"__class__": property(lambda _self: ValueError)})

    known = KnownTypes()
    known.sync.update({Plain, ValueError, liar, type(None), list})

    # when each is offered, and a class never found sync
    for value in (Plain(), ValueError("x"), liar(), None, [], object()):
        remember_plain(known.plain, known.sync, value)

    # then only the plain class and the list are remembered: a value of any other is checked each time
    assert known.plain == {Plain, list}


def test_only_classes_graphql_core_serializes_as_str_are_remembered_as_ids() -> None:
    # given plain classes: a UUID, an int subclass, a builtin, a str subclass
    class Number(int):
        pass

    class Text(str):
        pass

    known = KnownTypes()
    known.plain.update({uuid.UUID, Number, list, Text})

    # when each is offered
    for value in (uuid.uuid4(), Number(3), [1], Text("t"), uuid.uuid4()):
        remember_str_id(known.str_ids, known.plain, value)

    # then only the UUID is remembered, and graphql-core's ID serializes it as str() does
    assert known.str_ids == {uuid.UUID}
    value = uuid.uuid4()
    assert GraphQLID.coerce_output_value(value) == str(value)


def test_execution_plans_closures_turns_generated_code_off() -> None:
    # given each value of EXECUTION_PLANS an operator may set
    def read(value: str | None) -> tuple[bool, bool]:
        environ = {"JWT_SECRET": "x" * 40} | ({} if value is None else {"EXECUTION_PLANS": value})
        settings = Settings.from_environ(environ)
        return settings.execution_plans, settings.generated_plans

    # then on (the default) is plans with generated code, closures is plans without, off is no plans
    assert read(None) == read("on") == (True, True)
    assert read("closures") == read(" Closures ") == (True, False)
    assert read("off")[0] is False
    with pytest.raises(SettingsError, match="'on', 'closures' or 'off'"):
        read("generated")


async def test_the_apps_page_is_generated_code_with_graphql_cores_answer(
    settings: Settings, pool: asyncpg.Pool, alice: uuid.UUID
) -> None:
    # given 30 characters, and the app with generated plans, with closures only, and with plans off
    await insert_characters(pool, alice, 30)
    generated = PlanCache(generate=True)
    closures = PlanCache(generate=False)
    async with contextlib.AsyncExitStack() as stack:
        apps = [
            await stack.enter_async_context(app_over_http(replace(settings, execution_plans=True), plans))
            for plans in (generated, closures)
        ]
        apps.append(await stack.enter_async_context(app_over_http(replace(settings, execution_plans=False))))

        # when alice asks each for a page, twice (a plan's code is generated for its second execution)
        answers = [await graphql(PAGE, user=alice) for graphql in apps for _ in range(2)]

    # then the answers are the same, the last one with plans from generated code
    assert all(answer == answers[0] for answer in answers)
    assert len(answers[0]["data"]["characters"]["edges"]) == 30
    assert generated.stats.generated == 3
    assert generated.stats.planned == 2
