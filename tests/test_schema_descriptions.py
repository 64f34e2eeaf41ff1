"""The schema documents itself: every type, field, argument, input field and enum value has a description.

GraphiQL's docs pane and typed clients' generated code show these; an element
without one is a question a client developer has to ask us instead.
"""

from __future__ import annotations

from graphql import (
    GraphQLEnumType,
    GraphQLInputObjectType,
    GraphQLInterfaceType,
    GraphQLNamedType,
    GraphQLObjectType,
    build_schema,
)

from graph.schema import schema


def undocumented(types: dict[str, GraphQLNamedType]) -> list[str]:
    """Every schema coordinate (Type, Type.field, Type.field(arg:), Enum.VALUE) with no description."""
    missing: list[str] = []
    for name, named in sorted(types.items()):
        if name.startswith("__"):  # introspection's own types
            continue
        if not named.description:
            missing.append(name)
        if isinstance(named, GraphQLObjectType | GraphQLInterfaceType):
            for field_name, field in named.fields.items():
                if not field.description:
                    missing.append(f"{name}.{field_name}")
                missing += [
                    f"{name}.{field_name}({arg_name}:)" for arg_name, arg in field.args.items() if not arg.description
                ]
        elif isinstance(named, GraphQLInputObjectType):
            missing += [f"{name}.{field_name}" for field_name, field in named.fields.items() if not field.description]
        elif isinstance(named, GraphQLEnumType):
            missing += [f"{name}.{value_name}" for value_name, value in named.values.items() if not value.description]
    return missing


def test_every_schema_element_has_a_description() -> None:
    """Given the schema as graphql-core builds it from our SDL, when every element is walked, then none lacks one."""
    types = build_schema(schema.as_str()).type_map

    missing = undocumented(types)

    assert missing == [], f"{len(missing)} schema elements have no description: {', '.join(missing)}"


def test_the_walk_finds_what_is_missing() -> None:
    """Given a schema with one undocumented element of each kind, when walked, then each is named."""
    sdl = '''
        """Documented."""
        type Query { field(arg: Int): Kind }
        enum Kind { ONE }
        input Filter { part: Int }
        """Documented."""
        type Mutation { """Documented.""" run(filter: Filter): Int }
    '''

    missing = undocumented(build_schema(sdl).type_map)

    assert missing == [
        "Filter", "Filter.part", "Kind", "Kind.ONE", "Mutation.run(filter:)", "Query.field", "Query.field(arg:)",
    ]
