"""Valid GraphQL operations over the app's schema, drawn by hypothesis, for the plans' differential test.

The schema is walked as graphql-core sees it, rebuilt from strawberry's SDL (``schema.as_str()``, as
graph/schema.py's limits do). A query selects any of Query's fields and, below them, any fields of the types they
reach: nested selections, aliases (a response key already used on a type is only ever given the same field and
arguments again, so same-key fields merge and the document stays valid), ``__typename``, inline fragments with
and without a type condition, named fragments (spread again where they fit, spreading each other, never in a
cycle), ``@skip``/``@include`` with literal and variable conditions. Arguments are literals or variables (with and
without defaults, given, null or left out) drawn from the state's real ids and cursors and from values resolvers
refuse: unknown and malformed ids, foreign rows, bad cursors, pages out of range, bad searches and TTLs. Mutations
are the schema's, with arguments that make each of them fail (or find its work already done: a canceled job
canceled again, a saved workspace image saved again), so one operation can run on two apps against the same rows.

Each document is checked as the server would check it (``graph.schema.document_errors``: the limits, then
graphql-core's validation) and ``assume``d valid; ``rejected`` counts what was thrown away and why.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from graphql import (
    GraphQLArgument,
    GraphQLEnumType,
    GraphQLField,
    GraphQLInputObjectType,
    GraphQLInputType,
    GraphQLObjectType,
    GraphQLSchema,
    build_schema,
    get_named_type,
    get_nullable_type,
    is_leaf_type,
    is_list_type,
    is_non_null_type,
)
from graphql.pyutils import Undefined
from hypothesis import assume
from hypothesis import strategies as st

from graph.schema import document_errors
from graph.schema import schema as strawberry_schema

SCHEMA: GraphQLSchema = build_schema(strawberry_schema.as_str())

# Kept well inside the limits (graph/schema.py: depth 10, 30 aliases, 200 fields, 10,000 values), so nearly every
# drawn document is one the server runs.
MAX_DEPTH = 7
MAX_FIELDS = 60
MAX_ALIASES = 8
MAX_ITEMS = 6
MAX_FRAGMENTS = 4
# Variable @skip/@include conditions: each set of their values is a plan of its own (at most 32 an operation).
MAX_VARIABLE_CONDITIONS = 4

UNKNOWN_IDS = ("00000000-0000-4000-8000-000000000000", "9b2f3a4c-1d2e-4f60-8a9b-0c1d2e3f4a5b")
MALFORMED_IDS = ("nope", "", "12345", "x" * 70)
BAD_CURSORS = ("", "not-a-cursor", "bm90IGEgY3Vyc29y", "x" * 129)
FIRSTS = (None, 1, 2, 3, 5, 20, 100, 0, -1, 101)
TTLS = (None, 60, 600, 3600, 86400, 10**6, 0, -5)
SEARCH_EXTRAS = ("", "   ", "a", "ar", "AR", "%", "_", "no such name", "x" * 101)
INTS = (None, 0, 1, 7, -1, 2**31 - 1)
STRINGS = ("", "x", "Ann")
DRAFT = {"name": "Nell", "description": "A draft that is never queued."}


@dataclass(frozen=True)
class Pools:
    """The values arguments are drawn from (the state's, tests/differential_state.py, and bad ones)."""

    ids: tuple[str, ...]  # every real id of the state, of every kind and both users
    cursors: tuple[str, ...]
    names: tuple[str, ...]
    # Mutations: what each may be given without changing a row.
    not_characters: tuple[str, ...]  # real ids of other kinds (jobs, assets, models) of the owner's
    not_library_assets: tuple[str, ...]
    character_ids: tuple[str, ...]
    canceled_job: str
    finished_jobs: tuple[str, ...]
    saved_workspace_assets: tuple[str, ...]
    draft_workspace_asset: str
    unavailable_models: tuple[str, ...]
    # Subscriptions: jobs that have ended (their subscription sends the job once and completes).
    ended_jobs: tuple[str, ...]


@dataclass(frozen=True)
class Operation:
    """A drawn document with its variables."""

    document: str
    variables: dict[str, Any]
    kind: str  # "query", "mutation" or "subscription"
    types: frozenset[str]  # the object types it selects fields of
    fields: frozenset[tuple[str, str]]  # the (type, field) pairs it selects
    # A variable @skip/@include condition given null: graphql-core refuses the request, and plans leave it to it.
    falls_back: bool

    def __repr__(self) -> str:
        return f"Operation({self.kind}, variables={json.dumps(self.variables)}, document=\n{self.document}\n)"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        """What hypothesis prints for a failing example (its printer's hook): the document as it was sent."""
        printer.text(repr(self))


# Why drawn documents were thrown away (the first error's message, shortened): a figure the test reports.
rejected: Counter[str] = Counter()


def literal(value: Any, type_: GraphQLInputType) -> str:
    """``value`` (JSON-shaped: enums by name) as a GraphQL literal of ``type_``."""
    named = get_named_type(type_)
    if value is None:
        return "null"
    if isinstance(named, GraphQLEnumType):
        return str(value)
    nullable = get_nullable_type(type_)
    if is_list_type(nullable) and isinstance(value, list):
        return "[" + ", ".join(literal(item, nullable.of_type) for item in value) + "]"
    if isinstance(named, GraphQLInputObjectType) and isinstance(value, dict):
        fields = named.fields
        return "{" + ", ".join(f"{name}: {literal(item, fields[name].type)}" for name, item in value.items()) + "}"
    return untyped_literal(value)


def untyped_literal(value: Any) -> str:
    """A JSON value as a GraphQL literal (what the JSON scalar reads back)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return json.dumps(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(untyped_literal(item) for item in value) + "]"
    return "{" + ", ".join(f"{name}: {untyped_literal(item)}" for name, item in value.items()) + "}"


@dataclass
class Builder:
    """One document being drawn: its variables, fragments, response keys and budgets."""

    draw: Callable[[st.SearchStrategy[Any]], Any]
    pools: Pools
    variables: list[str] = field(default_factory=list)
    values: dict[str, Any] = field(default_factory=dict)
    fragments: dict[str, tuple[str, str, int]] = field(default_factory=dict)  # name -> (type, definition, height)
    building: set[str] = field(default_factory=set)
    # (type, response key) -> (field name, printed arguments): a key is only ever that field with those arguments.
    keys: dict[tuple[str, str], tuple[str, str]] = field(default_factory=dict)
    types: set[str] = field(default_factory=set)
    selected: set[tuple[str, str]] = field(default_factory=set)
    fields_left: int = MAX_FIELDS
    aliases_left: int = MAX_ALIASES
    conditions_left: int = MAX_VARIABLE_CONDITIONS
    falls_back: bool = False

    def chance(self, probability: float) -> bool:
        """True with about ``probability``; False in the simplest example (what hypothesis shrinks towards)."""
        return bool(self.draw(st.integers(0, 99)) >= 100 - round(probability * 100))

    # -- variables and values -------------------------------------------------------------------

    def variable(self, type_: GraphQLInputType, value: st.SearchStrategy[Any], *, exact: bool = False) -> str:
        """A new variable of ``type_`` (maybe with a default), given a value, null, or nothing; its reference.
        ``exact``: given the value, always (a mutation's argument, which must stay one the mutation refuses)."""
        name = f"v{len(self.variables)}"
        definition = f"${name}: {type_}"
        nullable = not is_non_null_type(type_) and not exact
        has_default = nullable and self.chance(0.3)
        if has_default:
            definition += f" = {literal(self.draw(value.filter(lambda v: v is not None)), type_)}"
        self.variables.append(definition)
        choice = self.draw(st.sampled_from(("given", "given", "null", "omitted")) if nullable else st.just("given"))
        if choice == "given":
            self.values[name] = self.draw(value if nullable else value.filter(lambda v: v is not None))
        elif choice == "null":
            self.values[name] = None
        return f"${name}"

    def value_text(self, value: Any, type_: GraphQLInputType) -> str:
        """``value`` written as a literal, or a variable holding exactly it (input objects' fields too)."""
        named = get_named_type(type_)
        if named.name != "JSON" and self.chance(0.3):
            return self.variable(type_, st.just(value), exact=True)
        if isinstance(named, GraphQLInputObjectType) and isinstance(value, dict):
            return "{" + ", ".join(
                f"{name}: {self.value_text(item, named.fields[name].type)}" for name, item in value.items()
            ) + "}"
        return literal(value, type_)

    def argument_values(self, name: str, type_: GraphQLInputType) -> st.SearchStrategy[Any]:
        """What an argument of a query's field may be given: the state's values and values resolvers refuse."""
        named = get_named_type(type_)
        values: st.SearchStrategy[Any]
        if isinstance(named, GraphQLEnumType):
            values = st.sampled_from([None, *named.values])
        elif name == "first":
            values = st.sampled_from(FIRSTS)
        elif name == "after":
            values = st.sampled_from((None, *self.pools.cursors, *BAD_CURSORS))
        elif name == "search":
            names = [part for full in self.pools.names for part in (full, full.split()[0][1:4].lower())]
            values = st.sampled_from((None, *names, *SEARCH_EXTRAS))
        elif name == "ttlSeconds":
            values = st.sampled_from(TTLS)
        elif named.name == "ID":
            values = st.sampled_from(self.pools.ids + UNKNOWN_IDS + MALFORMED_IDS)
        elif named.name == "Int":
            values = st.sampled_from(INTS)
        elif named.name == "Boolean":
            values = st.sampled_from((None, True, False))
        else:
            values = st.sampled_from((None, *STRINGS))
        if is_non_null_type(type_):
            values = values.filter(lambda value: value is not None)
        return values

    def arguments(self, field_def: GraphQLField) -> str:
        given = []
        for name, argument in field_def.args.items():
            required = is_non_null_type(argument.type) and argument.default_value is Undefined
            if not required and not self.chance(0.4):
                continue
            given.append(f"{name}: {self.argument(name, argument)}")
        return f"({', '.join(given)})" if given else ""

    def argument(self, name: str, argument: GraphQLArgument) -> str:
        values = self.argument_values(name, argument.type)
        if self.chance(0.3):
            return self.variable(argument.type, values)
        return literal(self.draw(values), argument.type)

    # -- directives ---------------------------------------------------------------------------------

    def directives(self) -> str:
        if not self.chance(0.2):
            return ""
        names = self.draw(st.sampled_from((["skip"], ["include"], ["skip", "include"], ["include", "skip"])))
        return "".join(f" @{name}(if: {self.condition()})" for name in names)

    def condition(self) -> str:
        if self.conditions_left == 0 or self.chance(0.4):
            return "true" if self.chance(0.5) else "false"
        self.conditions_left -= 1
        name = f"v{len(self.variables)}"
        if self.chance(0.6):
            self.variables.append(f"${name}: Boolean!")
            self.values[name] = self.draw(st.booleans())
            return f"${name}"
        default = self.draw(st.booleans())
        self.variables.append(f"${name}: Boolean = {'true' if default else 'false'}")
        choice = "null" if self.chance(0.05) else self.draw(st.sampled_from(("omitted", "true", "false")))
        if choice == "null":
            self.values[name] = None
            self.falls_back = True
        elif choice != "omitted":
            self.values[name] = choice == "true"
        return f"${name}"

    # -- selections ---------------------------------------------------------------------------------

    def selection_set(
        self, type_: GraphQLObjectType, depth: int, items: int | None = None, spread: set[str] | None = None
    ) -> tuple[str, int]:
        """``{ ... }`` on ``type_`` at ``depth`` (1: the operation's fields); with its height (levels of fields).
        ``spread``: the fragments spread in the selection set this one is merged into (an inline fragment's)."""
        self.types.add(type_.name)
        spread = set() if spread is None else spread
        # (small types get small sets: a type of two fields repeating them six times hits the repeats limit)
        count = items or self.draw(st.integers(1, min(MAX_ITEMS, len(type_.fields) + 1)))
        parts: list[str] = []
        height = 1
        for _ in range(count):
            kind = self.draw(st.sampled_from(
                ("field", "field", "field", "field", "field", "typename", "repeat", "inline", "spread")
            ))
            text, part_height = self.selection(kind, type_, depth, spread)
            if text:
                parts.append(text)
                height = max(height, part_height)
        if not parts:
            parts.append(self.field(type_, depth, leaf_only=True)[0])
        return "{ " + " ".join(parts) + " }", height

    def selection(self, kind: str, type_: GraphQLObjectType, depth: int, spread: set[str]) -> tuple[str, int]:
        if self.fields_left <= 0:
            kind = "typename"
        if kind == "typename":
            self.fields_left -= 1
            return self.keyed(type_, "__typename", lambda: "") + self.directives(), 1
        if kind == "repeat":
            taken = sorted(key for key in self.keys if key[0] == type_.name)
            if taken:
                return self.repeat(type_, self.draw(st.sampled_from(taken))[1], depth)
            kind = "field"
        if kind == "inline" and depth < MAX_DEPTH:
            condition = f" on {type_.name}" if self.chance(0.7) else ""
            inner, height = self.selection_set(type_, depth, self.draw(st.integers(1, 2)), spread)
            return f"...{condition}{self.directives()} {inner}", height
        if kind == "spread":
            return self.spread(type_, depth, spread)
        return self.field(type_, depth)

    def leaf_names(self, type_: GraphQLObjectType) -> list[str]:
        return [name for name, field_def in type_.fields.items() if is_leaf_type(get_named_type(field_def.type))]

    def field(self, type_: GraphQLObjectType, depth: int, *, leaf_only: bool = False) -> tuple[str, int]:
        leaves = self.leaf_names(type_)
        # (lists of objects twice: pages with rows in them, not only their pageInfo)
        objects = [name for name, field_def in type_.fields.items() if name not in leaves for _ in
                   range(2 if is_list_type(get_nullable_type(field_def.type)) else 1)]
        if leaf_only or depth >= MAX_DEPTH or self.fields_left < 3 or not objects:
            names = leaves or ["__typename"]
        else:  # objects half the time: the types deep down are reached as often as the leaves near the top
            names = objects if not leaves or self.chance(0.5) else leaves
        name = self.draw(st.sampled_from(names))
        if name == "__typename":
            self.fields_left -= 1
            return self.keyed(type_, name, lambda: ""), 1
        field_def = type_.fields[name]
        return self.complete(type_, name, field_def, depth, lambda: self.arguments(field_def))

    def complete(
        self, type_: GraphQLObjectType, name: str, field_def: GraphQLField, depth: int, arguments: Callable[[], str],
        *, alias: str | None = None, directives: bool = True,
    ) -> tuple[str, int]:
        """The field with its key (fresh, or one of the type's keys for it), directives and selection set."""
        self.fields_left -= 1
        head = self.keyed(type_, name, arguments, alias=alias)
        text = head + (self.directives() if directives else "")
        named = get_named_type(field_def.type)
        if isinstance(named, GraphQLObjectType):
            inner, height = self.selection_set(named, depth + 1)
            return f"{text} {inner}", height + 1
        return text, 1

    def keyed(
        self, type_: GraphQLObjectType, name: str, arguments: Callable[[], str], *, alias: str | None = None
    ) -> str:
        """``alias: name(arguments)``: an alias sometimes; a key the type already has for this field keeps its
        arguments (the two merge), a key taken by another field is never reused."""
        if alias is None and self.aliases_left > 0 and self.chance(0.25):
            alias = self.draw(st.sampled_from(("a", "b", "c", f"{name.strip('_')}2", f"my_{name.strip('_')}")))
            taken = self.keys.get((type_.name, alias))
            if (taken is not None and taken[0] != name) or alias in type_.fields:
                alias = f"k{len(self.keys)}_{name.strip('_')}"
        key = alias or name
        self.selected.add((type_.name, name))
        if (type_.name, key) in self.keys:
            taken_name, printed = self.keys[type_.name, key]
            assert taken_name == name
        else:
            printed = arguments()
            self.keys[type_.name, key] = (name, printed)
        if alias is not None:
            self.aliases_left -= 1
            return f"{alias}: {name}{printed}"
        return f"{name}{printed}"

    def repeat(self, type_: GraphQLObjectType, key: str, depth: int) -> tuple[str, int]:
        """The field under an existing key again, with a selection set of its own: graphql-core merges the two."""
        name, printed = self.keys[type_.name, key]
        if name == "__typename":
            self.fields_left -= 1
            return self.keyed(type_, name, lambda: printed, alias=None if key == name else key), 1
        return self.complete(
            type_, name, type_.fields[name], depth, lambda: printed, alias=None if key == name else key
        )

    def spread(self, type_: GraphQLObjectType, depth: int, spread: set[str]) -> tuple[str, int]:
        """``...Name``: a fragment on this type that fits here and is not spread here yet, or a new one (a
        fragment spread twice in one selection set would double its fields' repeats, which the limits count)."""
        fitting = sorted(
            name for name, (on, _, height) in self.fragments.items()
            if on == type_.name and name not in self.building and name not in spread and depth - 1 + height <= MAX_DEPTH
        )
        if fitting and self.chance(0.6):
            name = self.draw(st.sampled_from(fitting))
            spread.add(name)
            return f"...{name}{self.directives()}", self.fragments[name][2]
        if len(self.fragments) + len(self.building) >= MAX_FRAGMENTS or depth >= MAX_DEPTH:
            return self.field(type_, depth)
        name = f"F{len(self.fragments) + len(self.building)}"
        self.building.add(name)
        inner, height = self.selection_set(type_, depth)
        self.building.discard(name)
        self.fragments[name] = (type_.name, f"fragment {name} on {type_.name} {inner}", height)
        spread.add(name)
        return f"...{name}{self.directives()}", height

    def document(self, operation: str, body: str) -> str:
        """The operation (anonymous, shorthand or named when it has no variables) and its fragments."""
        if self.variables:
            head = f"{operation} Drawn({', '.join(self.variables)}) "
        else:
            head = self.draw(st.sampled_from((f"{operation} ", f"{operation} Drawn ", "")))
            if operation != "query" and not head:
                head = f"{operation} "
        fragments = "".join(f"\n{definition}" for _, definition, _ in self.fragments.values())
        return f"{head}{body}{fragments}"


def checked(builder: Builder, text: str, kind: str) -> Operation:
    errors = document_errors(text, strawberry_schema)
    if errors:
        rejected[errors[0].message[:80]] += 1
    assume(not errors)
    return Operation(
        text, builder.values, kind, frozenset(builder.types), frozenset(builder.selected), builder.falls_back
    )


@st.composite
def queries(draw: st.DrawFn, pools: Pools) -> Operation:
    """A query selecting any of Query's fields, and anything below them."""
    builder = Builder(draw, pools)
    query = SCHEMA.query_type
    assert query is not None
    body, _ = builder.selection_set(query, 1, draw(st.integers(1, 3)))
    return checked(builder, builder.document("query", body), "query")


def mutation_inputs(pools: Pools) -> dict[str, st.SearchStrategy[dict[str, Any]]]:
    """Each mutation's arguments, every one of them refused (or a no-op: canceling a canceled job, saving a saved
    image again) for any viewer, so the mutation changes no row however often it runs."""
    anything = st.sampled_from(pools.ids + UNKNOWN_IDS + MALFORMED_IDS)
    missing = st.sampled_from(UNKNOWN_IDS + MALFORMED_IDS)
    bad_model = st.sampled_from(pools.unavailable_models + UNKNOWN_IDS + MALFORMED_IDS[:1])
    bad_character = {"name": "N", "description": "d"}
    return {
        "createCharacter": st.sampled_from((
            {"name": "", "description": "d"},
            {"name": "N", "description": "   "},
            {**bad_character, "imageUrl": "ftp://example.com/x.png"},
            {**bad_character, "sceneBehaviorRules": [1, 2]},
            {**bad_character, "referenceImageUrl": "someone-else/x.png"},
            {**bad_character, "imageUrl": "https://example.com/x.png", "portraitJobId": UNKNOWN_IDS[0]},
            {**bad_character, "portraitJobId": "nope"},
            {**bad_character, "appearanceTags": ["t"] * 31, "contentRating": "NSFW"},
        )).map(lambda value: {"input": value}),
        "updateCharacter": st.fixed_dictionaries({
            "id": anything,
            "input": st.sampled_from(({"name": ""}, {"description": "  "}, {"imageUrl": "ftp://x"},
                                      {"gender": "ok", "sceneBehaviorRules": "text"})),
        }),
        "setReferenceImage": st.fixed_dictionaries({
            "characterId": anything,
            "libraryAssetId": st.sampled_from(pools.not_library_assets + UNKNOWN_IDS + MALFORMED_IDS),
        }),
        "deleteCharacter": st.fixed_dictionaries({"id": st.sampled_from(pools.not_characters) | missing}),
        "generateCharacterPortrait": st.one_of(
            st.just({}),
            st.fixed_dictionaries({"characterId": anything, "draft": st.just(DRAFT)}),
            st.just({"draft": DRAFT, "useReference": True}),
            st.fixed_dictionaries({"characterId": anything, "seed": st.sampled_from((-1, -(2**31)))}),
            st.fixed_dictionaries({"characterId": anything, "modelId": bad_model, "quality": st.just("FAST")}),
            st.fixed_dictionaries({"draft": st.just({**DRAFT, "name": " "})}),
        ).map(lambda value: {"input": value}),
        "generateImage": st.one_of(
            st.just({"prompt": ""}),
            st.just({"prompt": "p", "seed": -1}),
            st.fixed_dictionaries({"prompt": st.just("p"), "modelId": bad_model}),
            st.fixed_dictionaries({"prompt": st.just("p"), "characterId": missing}),
        ).map(lambda value: {"input": value}),
        "cancelJob": st.fixed_dictionaries({"id": st.sampled_from(
            (pools.canceled_job, *pools.finished_jobs, *pools.character_ids, *UNKNOWN_IDS, *MALFORMED_IDS)
        )}),
        "saveToLibrary": st.fixed_dictionaries({"workspaceAssetId": st.sampled_from(
            (*pools.saved_workspace_assets, pools.draft_workspace_asset, *pools.character_ids, *UNKNOWN_IDS,
             *MALFORMED_IDS)
        )}),
        "deleteLibraryAsset": st.fixed_dictionaries({"id": st.sampled_from(pools.not_library_assets) | missing}),
    }


@st.composite
def mutations(draw: st.DrawFn, pools: Pools) -> Operation:
    """One to three of Mutation's fields, run one after the other, each refused or a no-op."""
    builder = Builder(draw, pools)
    mutation = SCHEMA.mutation_type
    assert mutation is not None
    inputs = mutation_inputs(pools)
    parts = []
    for _ in range(draw(st.integers(1, 3))):
        if builder.chance(0.1):
            parts.append(builder.keyed(mutation, "__typename", lambda: ""))
            continue
        name = draw(st.sampled_from(sorted(inputs)))
        field_def = mutation.fields[name]
        arguments = draw(inputs[name])

        def printed(field_def: GraphQLField = field_def, arguments: dict[str, Any] = arguments) -> str:
            return "(" + ", ".join(
                f"{argument}: {builder.value_text(value, field_def.args[argument].type)}"
                for argument, value in arguments.items()
            ) + ")"

        parts.append(builder.complete(mutation, name, field_def, 1, printed)[0])
    builder.types.add(mutation.name)
    return checked(builder, builder.document("mutation", "{ " + " ".join(parts) + " }"), "mutation")


SUBSCRIPTION_ARGUMENTS = {
    "jobChanged": "id", "jobUpdated": "id",
    "characterImageChanged": "characterId", "characterImageUpdated": "characterId",
}


@st.composite
def subscriptions(draw: st.DrawFn, pools: Pools) -> Operation:
    """One of Subscription's fields that ends by itself: a job that has ended (sent once, then complete), or an
    id it refuses (an error). Subscriptions on live rows would wait for changes that never come."""
    builder = Builder(draw, pools)
    subscription = SCHEMA.subscription_type
    assert subscription is not None
    # (jobs three times in four, ended ones twice as often as refused ids: most draws send an event)
    name = draw(st.sampled_from(("jobChanged", "jobUpdated", "jobChanged", "jobUpdated", "jobChanged", "jobUpdated",
                                 "characterImageChanged", "characterImageUpdated")))
    refused = (*pools.not_characters[:4], *UNKNOWN_IDS, *MALFORMED_IDS)
    if name.startswith("job"):
        ids = (*pools.ended_jobs, *pools.ended_jobs, *pools.character_ids[:2], *UNKNOWN_IDS, *MALFORMED_IDS)
    else:
        ids = refused
    argument = SUBSCRIPTION_ARGUMENTS[name]
    field_def = subscription.fields[name]
    value = draw(st.sampled_from(ids))

    def printed() -> str:
        return f"({argument}: {builder.value_text(value, field_def.args[argument].type)})"

    # (one root field, no @skip/@include on it: the rules for a subscription's root)
    body, _ = builder.complete(subscription, name, field_def, 1, printed, directives=False)
    return checked(builder, builder.document("subscription", "{ " + body + " }"), "subscription")


def operations(pools: Pools) -> st.SearchStrategy[Operation]:
    """Queries mostly, mutations a quarter of the time."""
    return st.one_of(queries(pools), queries(pools), queries(pools), mutations(pools))


def object_types() -> dict[str, GraphQLObjectType]:
    """Every object type a query or mutation can reach, by name (the coverage the test checks)."""
    reached: dict[str, GraphQLObjectType] = {}
    pending = [SCHEMA.query_type, SCHEMA.mutation_type]
    while pending:
        type_ = pending.pop()
        if type_ is None or type_.name in reached:
            continue
        reached[type_.name] = type_
        for field_def in type_.fields.values():
            named = get_named_type(field_def.type)
            if isinstance(named, GraphQLObjectType):
                pending.append(named)
    return reached


__all__ = ["Operation", "Pools", "mutations", "object_types", "operations", "queries", "rejected", "subscriptions"]
