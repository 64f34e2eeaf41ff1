"""graph/schema.py's ``RememberedNames``: strawberry's naming, remembered, so the schema is the one strawberry's
own name converter makes and resolvers' arguments arrive under the same names."""

from __future__ import annotations

from strawberry.schema.config import StrawberryConfig
from strawberry.schema.name_converter import NameConverter

from graph.schema import RememberedNames, build_schema


def test_the_schema_is_the_one_strawberrys_own_naming_makes() -> None:
    # given the schema as built (remembered names) and as strawberry's default name converter builds it
    remembered = build_schema()
    default = build_schema(config=StrawberryConfig(name_converter=NameConverter()))

    # when both are printed
    # then they are the same SDL, camel-cased arguments and fields included
    assert remembered.as_str() == default.as_str()
    assert "orderBy: CharacterOrder! = CREATED_AT_DESC" in remembered.as_str()


def test_names_are_remembered_within_a_bound() -> None:
    # given a converter asked for more names than it keeps
    names = RememberedNames()
    asked = [f"field_number_{n}" for n in range(RememberedNames.MAX_NAMES + 10)]

    # when each is asked twice
    first = [names.apply_naming_config(name) for name in asked]
    second = [names.apply_naming_config(name) for name in asked]

    # then every answer is strawberry's, and the memo stopped growing at its bound
    expected = [NameConverter().apply_naming_config(name) for name in asked]
    assert first == second == expected
    assert first[0] == "fieldNumber0"
    assert len(names.names) == RememberedNames.MAX_NAMES
