"""Hypothesis strategies for hostile GraphQL requests, built from the schema itself.

Every object type, field, argument, input type and enum comes from the
graphql-core schema that ``graph.schema.schema`` prints (``SCHEMA``), so a
field added to the schema is attacked without a change here. What they make:
documents with wrong argument types, huge and empty values, deep and wide
selections, aliases, fragments whose spreads reference each other (chains and
cycles), directives with bad arguments, unknown names, bad ids and cursors;
JSON variables of every shape; raw bodies, content types and GET query
strings. ``tests/test_hostile_requests.py`` sends them to a real server.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, timedelta, timezone
from typing import Any
from urllib.parse import quote

import graphql
from hypothesis import strategies as st

from graph.schema import schema as portraits_schema

SCHEMA: graphql.GraphQLSchema = graphql.build_schema(portraits_schema.as_str())

OBJECT_TYPES: tuple[graphql.GraphQLObjectType, ...] = tuple(
    named
    for name, named in sorted(SCHEMA.type_map.items())
    if isinstance(named, graphql.GraphQLObjectType) and not name.startswith("__")
)
ENUM_VALUES: tuple[str, ...] = tuple(
    sorted(
        value
        for name, named in SCHEMA.type_map.items()
        if isinstance(named, graphql.GraphQLEnumType) and not name.startswith("__")
        for value in named.values
    )
)
UNKNOWN_NAMES = ("nope", "__nope", "password", "user_id", "userId", "internal", "_", "A" * 300)
# Text a server must never echo as its own: kept out of every generated value (tests/test_hostile_requests.py
# looks for them in answers).
HOSTILE_TEXTS = (
    "",
    " ",
    "null",
    "undefined",
    "../../../../etc/passwd",
    "' OR '1'='1",
    "1; DROP TABLE characters",
    "\x00",
    "\ud800",
    "\udfff",
    "a\ud800b",
    "\ufeff",
    "\u202e",
    "%00",
    "%73ign",
    "${jndi:ldap://127.0.0.1/a}",
    "<script>alert(1)</script>",
    "\\",
    '"',
    "\n" * 50,
    "NaN",
    "Infinity",
    "1e309",
)
HUGE_INTEGERS = (
    2**31 - 1, 2**31, -(2**31), -(2**31) - 1, 2**53 + 1, 2**63 - 1, 2**63, -(2**63) - 1, 2**64, 10**30, -(10**400),
)
EDGE_DATES = (
    "0001-01-01T00:00:00+14:00",
    "0001-01-01T00:00:00+00:00",
    "9999-12-31T23:59:59.999999-14:00",
    "9999-12-31T23:59:59+00:00",
    "2024-01-01T00:00:00",
    "2024-02-30T00:00:00+00:00",
    "1970-01-01T00:00:00+00:00",
    "2024-01-01",
    "not a date",
    "",
)


@dataclass(frozen=True)
class KnownIds:
    """Real ids and cursors mixed into the bad ones: another user's (the victim's) and the attacker's own."""

    foreign: tuple[str, ...]
    own: tuple[str, ...]
    cursors: tuple[str, ...]


@dataclass(frozen=True)
class Operation:
    """A GraphQL request as a client sends it: the document, its variables and the operation name."""

    document: str
    variables: Any = None
    operation_name: Any = None

    def payload(self) -> dict[str, Any]:
        body: dict[str, Any] = {"query": self.document}
        if self.variables is not None:
            body["variables"] = self.variables
        if self.operation_name is not None:
            body["operationName"] = self.operation_name
        return body


def huge_text(minimum: int = 10_000, maximum: int = 300_000) -> st.SearchStrategy[str]:
    """A long string, cheap to draw (its length is drawn, not its characters)."""
    return st.tuples(st.integers(minimum, maximum), st.sampled_from("ab\u00e9\u4e2d")).map(
        lambda pair: pair[1] * pair[0]
    )


def texts() -> st.SearchStrategy[str]:
    """Short and long text, hostile text, any code point (lone surrogates too); huge text is drawn elsewhere."""
    return st.one_of(
        st.text(max_size=30),
        st.sampled_from(HOSTILE_TEXTS),
        st.text(st.characters(codec="utf-8"), min_size=1, max_size=8),
        huge_text(1_000, 5_000),
    )


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def bad_ids(ids: KnownIds) -> st.SearchStrategy[str]:
    """Ids: another user's, one's own, missing ones, relay-style global ids, other spellings, garbage."""
    real = st.sampled_from(ids.foreign + ids.own)
    return st.one_of(
        st.sampled_from(ids.foreign),
        real,
        st.uuids().map(str),
        # Spellings Python's UUID() also accepts: the same row, other text.
        real.map(str.upper),
        real.map(lambda value: "{" + value + "}"),
        real.map(lambda value: "urn:uuid:" + value),
        real.map(lambda value: value.replace("-", "")),
        real.map(lambda value: f" {value} "),
        # Relay-style global ids, with the wrong type or none.
        st.tuples(st.sampled_from(("Character:", "Job:", "LibraryAsset:", "WorkspaceAsset:", "User:", "")), real).map(
            lambda pair: base64.b64encode((pair[0] + pair[1]).encode()).decode()
        ),
        st.binary(max_size=24).map(lambda raw: base64.b64encode(raw).decode()),
        st.sampled_from(("00000000-0000-0000-0000-000000000000", "ffffffff-ffff-ffff-ffff-ffffffffffff")),
        texts(),
    )


def cursors(ids: KnownIds) -> st.SearchStrategy[str]:
    """Real cursors, cursors of out-of-range or naive dates, broken structure, not base64 at all."""
    uuid_text = st.one_of(st.uuids().map(str), st.sampled_from(ids.foreign), st.text(max_size=10))
    offsets = st.sampled_from((UTC, timezone(timedelta(hours=14)), timezone(-timedelta(hours=14)), None))
    date_text = st.one_of(
        st.sampled_from(EDGE_DATES), st.datetimes(timezones=offsets).map(lambda moment: moment.isoformat())
    )
    return st.one_of(
        st.sampled_from(ids.cursors),
        st.tuples(date_text, uuid_text).map(lambda pair: _b64(f"{pair[0]}|{pair[1]}".encode())),
        st.text(max_size=60).map(lambda raw: _b64(raw.encode("utf-8", "surrogatepass"))),
        st.binary(max_size=40).map(_b64),
        st.sampled_from(("", "!!!", "====", "a", "YQ", _b64(b"|"), _b64(b"a|b|c"), _b64(b"\xff\xfe|x"))),
        texts(),
    )


def json_values(max_leaves: int = 12) -> st.SearchStrategy[Any]:
    """Any JSON value: huge numbers, odd floats, lone surrogates, empty and nested containers."""
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.sampled_from(HUGE_INTEGERS),
        st.floats(allow_nan=False, allow_infinity=False),
        texts(),
    )
    return st.recursive(
        scalars,
        lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
        max_leaves=max_leaves,
    )


def deeply_nested_json(depth: int, kind: str) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value] if kind == "list" else {"a": value}
    return value


def string_literal(value: str) -> str:
    """A GraphQL string literal (GraphQL's escapes are JSON's), lone surrogates written as \\u escapes."""
    return json.dumps(value)


def json_literal(value: Any) -> str:
    """A JSON value written as a GraphQL literal (for the JSON scalar)."""
    if isinstance(value, dict):
        fields = " ".join(f"{_literal_name(key)}: {json_literal(item)}" for key, item in value.items())
        return "{" + fields + "}"
    if isinstance(value, list):
        return "[" + " ".join(json_literal(item) for item in value) + "]"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return string_literal(value)
    return repr(value) if isinstance(value, float) else str(value)


def json_value_node(value: Any) -> graphql.ValueNode:
    """A JSON value as a graphql-core AST literal, built directly: the parser would refuse a lone surrogate."""
    if isinstance(value, dict):
        return graphql.ObjectValueNode(fields=tuple(
            graphql.ObjectFieldNode(name=graphql.NameNode(value=_literal_name(key)), value=json_value_node(item))
            for key, item in value.items()
        ))
    if isinstance(value, list):
        return graphql.ListValueNode(values=tuple(json_value_node(item) for item in value))
    if value is None:
        return graphql.NullValueNode()
    if isinstance(value, bool):
        return graphql.BooleanValueNode(value=value)
    if isinstance(value, str):
        return graphql.StringValueNode(value=value)
    if isinstance(value, float):
        return graphql.FloatValueNode(value=repr(value))
    return graphql.IntValueNode(value=str(value))


def _literal_name(key: str) -> str:
    """An object key as a GraphQL name (the JSON scalar's keys must be names in a literal)."""
    cleaned = "".join(
        character for character in key if character.isascii() and (character.isalnum() or character == "_")
    )
    return cleaned if cleaned and not cleaned[0].isdigit() else f"k{cleaned}"


def type_reference(type_: graphql.GraphQLType) -> str:
    return str(type_)


@dataclass
class DocumentBuilder:
    """Draws one document, its variables and operation name from the schema; plain recursion over ``draw``."""

    draw: st.DrawFn
    ids: KnownIds
    max_depth: int
    budget: int
    variables: list[tuple[str, str, Any]] = field(default_factory=list)
    fragments: list[str] = field(default_factory=list)
    fragment_names: list[str] = field(default_factory=list)

    # -- values ---------------------------------------------------------------------------------

    def value(self, type_: graphql.GraphQLInputType, *, allow_variable: bool = True) -> str:
        """A literal for ``type_``: mostly of the right type, else wrong, null, empty, huge or a variable."""
        shape = self.draw(
            st.sampled_from(("right",) * 6 + ("wrong", "null", "variable", "empty", "huge"))
        )
        if shape == "variable" and allow_variable:
            return self.variable(type_)
        if shape == "null":
            return "null"
        if shape == "wrong":
            return self.wrong_literal()
        if shape == "empty":
            return self.draw(st.sampled_from(('""', "[]", "{}", "0")))
        if shape == "huge":
            return self.huge_literal(type_)
        return self.right_literal(type_)

    def right_literal(self, type_: graphql.GraphQLInputType) -> str:
        inner = graphql.get_nullable_type(type_)
        if isinstance(inner, graphql.GraphQLList):
            count = self.draw(st.sampled_from((0, 1, 2, 3, 31, 200)))
            items = [self.value(inner.of_type, allow_variable=False) for _ in range(min(count, 3))]
            items += [f'"t{number}"' for number in range(len(items), count)]  # long lists: short distinct items
            return "[" + ", ".join(items) + "]"
        if isinstance(inner, graphql.GraphQLInputObjectType):
            chosen = [
                (name, input_field)
                for name, input_field in sorted(inner.fields.items())
                if graphql.is_required_input_field(input_field) or self.draw(st.booleans())
            ]
            parts = [f"{name}: {self.value(input_field.type)}" for name, input_field in chosen]
            if self.draw(st.integers(0, 9)) == 0:
                parts.append(f"{self.draw(st.sampled_from(UNKNOWN_NAMES))}: 1")
            if parts and self.draw(st.integers(0, 14)) == 0:
                parts.append(parts[0])  # a duplicate input field
            return "{" + ", ".join(parts) + "}"
        if isinstance(inner, graphql.GraphQLEnumType):
            return self.draw(
                st.one_of(
                    st.sampled_from(sorted(inner.values)),
                    st.sampled_from(sorted(inner.values)).map(str.lower),
                    st.sampled_from(ENUM_VALUES),
                    st.sampled_from(sorted(inner.values)).map(string_literal),
                )
            )
        assert isinstance(inner, graphql.GraphQLScalarType), inner
        return self.scalar_literal(inner.name)

    def scalar_literal(self, name: str) -> str:
        if name == "ID":
            return string_literal(self.draw(bad_ids(self.ids)))
        if name == "Int":
            return str(self.draw(st.one_of(st.integers(-5, 300), st.sampled_from(HUGE_INTEGERS))))
        if name == "Float":
            return self.draw(st.one_of(st.floats(allow_nan=False, allow_infinity=False).map(repr),
                                       st.sampled_from(("1e309", "-1e309", "1e-400", "-0.0"))))
        if name == "Boolean":
            return self.draw(st.sampled_from(("true", "false")))
        if name == "DateTime":
            return string_literal(self.draw(st.sampled_from(EDGE_DATES)))
        if name == "JSON":
            return json_literal(self.draw(json_values()))
        # String, and scalars added later: text, cursors among them.
        return string_literal(self.draw(st.one_of(texts(), cursors(self.ids))))

    def wrong_literal(self) -> str:
        return self.draw(
            st.one_of(
                st.sampled_from(("1", "-1", "1.5", "true", '"x"', "[1, 2]", '{a: 1}', "SFW", "[[[]]]", '["a", 1]')),
                st.sampled_from(ENUM_VALUES),
                st.integers().map(str),
                st.sampled_from(HUGE_INTEGERS).map(str),
            )
        )

    def huge_literal(self, type_: graphql.GraphQLInputType) -> str:
        inner = graphql.get_nullable_type(type_)
        if isinstance(inner, graphql.GraphQLList):
            count = self.draw(st.integers(1_000, 50_000))
            return "[" + ",".join(f'"t{number}"' for number in range(count)) + "]"
        if isinstance(inner, graphql.GraphQLInputObjectType):
            count = self.draw(st.integers(100, 2_000))
            return "{" + ",".join(f"f{number}: 1" for number in range(count)) + "}"
        return string_literal(self.draw(huge_text()))

    def variable(self, type_: graphql.GraphQLInputType) -> str:
        """A ``$variable`` declared with the right type, a wrong one or none, and a JSON value of any shape."""
        name = f"v{len(self.variables)}"
        declared = self.draw(
            st.sampled_from(
                (type_reference(type_),) * 4 + ("Int", "String!", "[ID!]!", "Nope", "JSON", "Boolean", None)
            )
        )
        value = self.draw(st.one_of(self.variable_value(type_), json_values(), st.just(_MISSING)))
        self.variables.append((name, declared or "", value))
        return f"${name}"

    def variable_value(self, type_: graphql.GraphQLInputType) -> st.SearchStrategy[Any]:
        """A JSON value of about the right shape for ``type_`` (ids, cursors and enums included)."""
        inner = graphql.get_nullable_type(type_)
        if isinstance(inner, graphql.GraphQLList):
            return st.lists(self.variable_value(inner.of_type), max_size=4) | st.integers(1_000, 20_000).map(
                lambda count: ["tag"] * count
            )
        if isinstance(inner, graphql.GraphQLInputObjectType):
            return st.fixed_dictionaries(
                {name: self.variable_value(value.type) for name, value in inner.fields.items()
                 if graphql.is_required_input_field(value)},
                optional={name: self.variable_value(value.type) for name, value in inner.fields.items()
                          if not graphql.is_required_input_field(value)},
            )
        if isinstance(inner, graphql.GraphQLEnumType):
            return st.sampled_from(sorted(inner.values)) | st.text(max_size=5)
        assert isinstance(inner, graphql.GraphQLScalarType)
        by_name: dict[str, st.SearchStrategy[Any]] = {
            "ID": bad_ids(self.ids),
            "Int": st.integers() | st.sampled_from(HUGE_INTEGERS),
            "Float": st.floats(allow_nan=False),
            "Boolean": st.booleans(),
            "DateTime": st.sampled_from(EDGE_DATES),
            # (nested at most 500 levels: the client's own json.dumps stops near 1,000)
            "JSON": json_values() | st.sampled_from(("list", "dict")).flatmap(
                lambda kind: st.integers(10, 500).map(lambda depth: deeply_nested_json(depth, kind))
            ),
        }
        return by_name.get(inner.name, texts() | cursors(self.ids))

    # -- selections -----------------------------------------------------------------------------

    def arguments(self, arguments: dict[str, graphql.GraphQLArgument]) -> str:
        parts = [
            f"{name}: {self.value(argument.type)}"
            for name, argument in sorted(arguments.items())
            if graphql.is_required_argument(argument) or self.draw(st.integers(0, 2)) > 0
        ]
        if self.draw(st.integers(0, 11)) == 0:
            parts.append(f"{self.draw(st.sampled_from(UNKNOWN_NAMES))}: {self.wrong_literal()}")
        if parts and self.draw(st.integers(0, 14)) == 0:
            parts.append(parts[0])  # the same argument twice
        return f"({', '.join(parts)})" if parts else ""

    def directives(self) -> str:
        if self.draw(st.integers(0, 5)) > 0:
            return ""
        condition = self.draw(
            st.sampled_from(("true", "false", "null", '"yes"', "1", "[true]", "SFW", "$undeclared"))
        )
        return self.draw(
            st.sampled_from((
                f" @skip(if: {condition})",
                f" @include(if: {condition})",
                " @skip",
                " @include(iff: true)",
                f" @skip(if: {condition}) @include(if: {condition})",
                " @skip(if: true) @skip(if: false)",
                " @nope",
                " @deprecated",
                ' @specifiedBy(url: "x")',
                " @defer",
                " @stream(initialCount: 1)",
            ))
        )

    def selection_set(self, type_: graphql.GraphQLObjectType, depth: int) -> str:
        width = self.draw(st.sampled_from((1, 1, 2, 3, 4, 40)))
        items = [self.selection(type_, depth) for _ in range(width)]
        return "{ " + " ".join(items) + " }"

    def selection(self, type_: graphql.GraphQLObjectType, depth: int) -> str:
        self.budget -= 1
        kind = self.draw(
            st.sampled_from(("field",) * 8 + ("typename", "unknown", "inline", "spread", "aliases", "introspection"))
        )
        if kind == "typename" or self.budget <= 0:
            return "__typename"
        if kind == "unknown":
            return self.draw(st.sampled_from(UNKNOWN_NAMES)) + self.directives()
        if kind == "introspection":
            return self.draw(st.sampled_from((
                "__schema { types { name fields { name } } }",
                '__type(name: "Character") { name fields { name args { name } } }',
                "__schema { queryType { fields { name type { ofType { ofType { name } } } } } }",
            )))
        if kind == "inline":
            on = self.draw(st.sampled_from((*OBJECT_TYPES, None)))
            condition = f"on {on.name} " if on is not None else self.draw(st.sampled_from(("", "on Nope ")))
            target = on if on is not None and depth < self.max_depth else type_
            return f"... {condition}{self.directives()}{self.selection_set(target, depth + 1)}"
        if kind == "spread":
            return "..." + self.fragment(depth) + self.directives()
        name = self.draw(st.sampled_from(sorted(type_.fields)))
        chosen = type_.fields[name]
        rest = self.arguments(chosen.args) + self.directives()
        named = graphql.get_named_type(chosen.type)
        if isinstance(named, graphql.GraphQLObjectType):
            if self.draw(st.integers(0, 19)) == 0:
                pass  # an object field without a selection
            elif depth >= self.max_depth or self.budget <= 0:
                rest += " { __typename }"
            else:
                rest += " " + self.selection_set(named, depth + 1)
        elif self.draw(st.integers(0, 19)) == 0:
            rest += " { id }"  # a selection on a leaf
        if kind == "aliases":
            count = self.draw(st.sampled_from((2, 5, 31, 100, 400)))
            return " ".join(f"a{number}: {name}{rest}" for number in range(count))
        alias = self.draw(st.one_of(st.none(), st.sampled_from(("a", "id", "__typename", "viewer", "x" * 100))))
        return f"{alias}: {name}{rest}" if alias else f"{name}{rest}"

    def fragment(self, depth: int) -> str:
        """A spread: a fragment defined now (on any type, maybe spreading others), an earlier one, or none."""
        choice = self.draw(st.sampled_from(("new", "new", "earlier", "unknown")))
        if choice == "unknown" or (choice == "earlier" and not self.fragment_names):
            return self.draw(st.sampled_from(("Missing", "F999"))) if choice == "unknown" else self.fragment(depth)
        if choice == "earlier":
            return self.draw(st.sampled_from(self.fragment_names))
        name = f"F{len(self.fragment_names)}"
        self.fragment_names.append(name)
        on = self.draw(st.sampled_from(OBJECT_TYPES))
        # A fragment may spread itself or any fragment defined after it: cycles, and chains that expand.
        selection = self.selection_set(on, min(depth + 1, self.max_depth))
        if self.draw(st.integers(0, 3)) == 0:
            selection = selection[:-1] + f"...{name} }}"
        self.fragments.append(f"fragment {name} on {on.name} {selection}")
        return name


_MISSING = object()


@st.composite
def operations(
    draw: st.DrawFn, ids: KnownIds, roots: tuple[str, ...] = ("query", "mutation", "subscription")
) -> Operation:
    """One hostile operation built from the schema's root types (see the module's docstring)."""
    root = draw(st.sampled_from(roots))
    root_type = {
        "query": SCHEMA.query_type, "mutation": SCHEMA.mutation_type, "subscription": SCHEMA.subscription_type
    }[root]
    assert root_type is not None
    shape = draw(st.sampled_from(("schema",) * 8 + ("deep", "fragment chain", "fragment web", "several operations")))
    if shape == "deep":
        return Operation(deep_document(draw(st.integers(11, 1_500)), root))
    if shape == "fragment chain":
        return Operation(fragment_chain(draw(st.integers(2, 40)), draw(st.integers(2, 4)), root, root_type.name))
    builder = DocumentBuilder(draw, ids, max_depth=draw(st.sampled_from((3, 5, 12))), budget=draw(st.integers(5, 60)))
    if shape == "fragment web":
        selection = "{ " + " ".join("..." + builder.fragment(0) for _ in range(draw(st.integers(1, 6)))) + " }"
    else:
        selection = builder.selection_set(root_type, 1)
    name = draw(st.sampled_from(("", "", "Op", "Op", "q" * 200)))
    document = f"{root} {name}{variable_definitions(builder)} {selection}"
    if shape == "several operations":
        document += " " + draw(st.sampled_from(
            ("query Op { viewer { id } }", "{ imageModels { id } }", 'mutation Other { deleteCharacter(id: "x") }')
        ))
    document = " ".join((document, *builder.fragments))
    variables: Any = {name: value for name, _, value in builder.variables if value is not _MISSING}
    variables = draw(st.one_of(st.just(variables), st.just(variables), st.none(), json_values(max_leaves=4)))
    operation_name = draw(st.one_of(st.none(), st.just(name or None), st.sampled_from(("Nope", "")), json_values(4)))
    return Operation(document, variables, operation_name)


def variable_definitions(builder: DocumentBuilder) -> str:
    declared = [f"${name}: {declared}" for name, declared, _ in builder.variables if declared]
    return f"({', '.join(declared)})" if declared else ""


def deep_document(depth: int, root: str) -> str:
    """``depth`` nested selections: past the depth limit, and past what a recursive parser survives."""
    return root + " " + "{ viewer " * depth + "{ id" + " }" * (depth + 1)


def fragment_chain(length: int, width: int, root: str, on: str) -> str:
    """Fragments that each spread the next ``width`` times: ``width ** length`` selections once expanded."""
    spreads = [" ".join([f"...C{number + 1}"] * width) for number in range(length)]
    definitions = [f"fragment C{number} on {on} {{ {spreads[number]} }}" for number in range(length)]
    definitions.append(f"fragment C{length} on {on} {{ __typename }}")
    return f"{root} {{ ...C0 }} " + " ".join(definitions)


# -- bodies and query strings ---------------------------------------------------------------------

CONTENT_TYPES = (
    "application/json",
    "application/json; charset=utf-8",
    "application/json; charset=latin-1",
    "application/json; charset=utf-16",
    "application/graphql-response+json",
    "application/graphql",
    "text/plain",
    "text/html",
    "multipart/form-data",
    "multipart/form-data; boundary=xyz",
    "application/x-www-form-urlencoded",
    "application/octet-stream",
    "*/*",
    "application/",
    "json",
)


@dataclass(frozen=True)
class RawRequest:
    """An HTTP request to /graphql as bytes: method, raw query string, content type (None: no header), body."""

    method: str
    query_string: bytes = b""
    content_type: str | None = None
    body: bytes = b""


def dumps(value: Any) -> bytes:
    """JSON as Python writes it: lone surrogates escaped, huge integers kept, nothing refused."""
    return json.dumps(value).encode()


def _body_of(operation: Operation) -> bytes:
    return dumps(operation.payload())


@st.composite
def raw_bodies(draw: st.DrawFn, ids: KnownIds) -> RawRequest:
    """POST bodies: raw bytes, JSON that is not an operation, operations broken on the byte level, batches."""
    valid = operations(ids, roots=("query", "mutation"))
    body = draw(
        st.one_of(
            st.binary(max_size=300),
            json_values().map(dumps),
            st.tuples(st.sampled_from((("[", "]"), ('{"a":', "}"))), st.integers(100, 100_000)).map(
                lambda nesting: (nesting[0][0] * nesting[1] + "1" + nesting[0][1] * nesting[1]).encode()
            ),
            st.lists(valid.map(Operation.payload), max_size=5).map(dumps),  # batched operations
            st.fixed_dictionaries(
                {"query": json_values(4)}, optional={"variables": json_values(4), "operationName": json_values(4),
                                                    "extensions": json_values(4)}
            ).map(dumps),
            st.fixed_dictionaries(
                {"query": st.just("query($n: Int, $f: Float, $s: String) { viewer { id } }"),
                 "variables": st.fixed_dictionaries({}, optional={"n": json_values(2), "f": json_values(2),
                                                                 "s": json_values(2)})}
            ).map(dumps),
            valid.map(_body_of).flatmap(_corrupted),
            st.sampled_from((
                b'{"query": "{ viewer { id } }", "variables": {"n": 1e400}}',
                b'{"query": "{ viewer { id } }", "variables": {"n": NaN}}',
                b'{"query": "{ viewer { id } }", "variables": {"n": 123456789012345678901234567890}}',
                b'{"query": "{ viewer { id } }", "query": "{ imageModels { id } }"}',
                b'{"query": "{ viewer { id } }"} trailing',
                b'\xef\xbb\xbf{"query": "{ viewer { id } }"}',
                b'{"query": "{ viewer { id } }\xff\xfe"}',
                b'{"query": "\xed\xa0\x80"}',
                b'{"query": "query { character(id: \\"\\ud800\\") { id } }"}',
                b'{"query": 12}',
                b'{"query": null}',
                b"{}",
                b"[]",
                b"null",
                b"",
                b"query { viewer { id } }",
            )),
        )
    )
    # What HTTP carries: printable ASCII, without the surrounding spaces a header value may not hold (h11 refuses it).
    header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=30).map(str.strip)
    content_type = draw(st.one_of(st.sampled_from(CONTENT_TYPES), st.none(), header_text))
    return RawRequest("POST", content_type=content_type, body=body)


# A lone 0xff, a cut sequence, an encoded surrogate, NUL, a code point past U+10FFFF.
BAD_UTF8 = (b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x00", b"\xf4\x90\x80\x80")


def _corrupted(body: bytes) -> st.SearchStrategy[bytes]:
    """The body cut short, with a byte flipped, or with invalid UTF-8 spliced in."""
    return st.one_of(
        st.integers(0, max(0, len(body) - 1)).map(lambda cut: body[:cut]),
        st.tuples(st.integers(0, max(0, len(body) - 1)), st.integers(0, 255)).map(
            lambda change: body[: change[0]] + bytes([change[1]]) + body[change[0] + 1:]
        ),
        st.tuples(st.integers(0, len(body)), st.sampled_from(BAD_UTF8)).map(
            lambda splice: body[: splice[0]] + splice[1] + body[splice[0]:]
        ),
    )


MAX_CLIENT_QUERY_STRING = 60_000


def _encode(value: str) -> str:
    return quote(value.encode("utf-8", "surrogatepass"), safe="")


@st.composite
def query_strings(draw: st.DrawFn, ids: KnownIds) -> RawRequest:
    """GET /graphql with random query strings: operations, bad variables, repeated keys, bad percent-encoding."""
    operation = draw(operations(ids, roots=("query", "mutation", "subscription")))
    variables = draw(
        st.one_of(
            st.none(),
            st.just(operation.variables).map(lambda value: json.dumps(value) if value is not None else None),
            json_values(4).map(json.dumps),
            st.text(max_size=20),
            st.sampled_from(('{"a":', "[1,2]", "null", "1e400", '{"n": 1e400}', '{"n": NaN}', "%7B")),
        )
    )
    parameters: list[tuple[str, str]] = []
    if draw(st.integers(0, 9)) > 0:
        parameters.append(("query", operation.document))
    if variables is not None:
        parameters.append(("variables", variables))
    if operation.operation_name is not None and draw(st.booleans()):
        parameters.append(("operationName", str(operation.operation_name)))
    extra = draw(
        st.lists(
            st.tuples(st.sampled_from(("query", "variables", "operationName", "extensions", "x", "")), texts()),
            max_size=3,
        )
    )
    parts = [f"{_encode(key)}={_encode(value)}" for key, value in [*parameters, *extra]]
    raw = draw(st.sampled_from(("", "", "%ff%fe", "%", "%zz", "&&", "=", "query", "query=%ED%A0%80", ";")))
    query_string = "&".join(part for part in (*parts, raw) if part)
    # (cut to what the client sends: httpx refuses URLs past 64 KiB; the server's own cap is far below)
    return RawRequest("GET", query_string=query_string[:MAX_CLIENT_QUERY_STRING].encode("ascii"))


Strategy = Callable[[KnownIds], st.SearchStrategy[Any]]
