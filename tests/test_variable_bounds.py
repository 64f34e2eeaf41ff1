"""Variables are measured before graphql-core coerces them item by item (graph/variable_bounds.py)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from graphql import DocumentNode, parse

from graph.variable_bounds import MAX_LIST_ITEMS, MAX_VALUES, VariableBounds, check_variables
from tests.conftest import GraphQL

CREATE = """
mutation($tags: [String!]!, $rules: JSON) {
  createCharacter(input: {name: "Vale", description: "An alchemist.", appearanceTags: $tags,
                          sceneBehaviorRules: $rules}) { id appearanceTags }
}
"""


def declaring(*names: str) -> DocumentNode:
    """A document whose operation declares ``names`` (the only variables measured)."""
    return parse("query(" + ", ".join(f"${name}: JSON" for name in names) + ") { __typename }")


def only_error(body: dict[str, Any]) -> dict[str, Any]:
    assert body["data"] is None, body
    (error,) = body["errors"]
    return error


async def test_a_list_variable_past_the_bound_is_refused_before_its_items_are_coerced(
    graphql: GraphQL, alice: uuid.UUID
) -> None:
    # given a tag list of 200,000 items
    tags = ["x"] * 200_000
    # when it is sent as a variable
    body = await graphql(CREATE, {"tags": tags, "rules": None}, user=alice)
    # then the request is refused naming the variable, the bound and the size
    error = only_error(body)
    assert error["extensions"] == {
        "code": "BAD_USER_INPUT", "field": "tags", "measure": "listItems", "limit": MAX_LIST_ITEMS, "value": 200_000,
        "variable": "tags",
    }
    assert error["message"] == "Variable '$tags' holds a list of 200000 items; at most 1000 are allowed."


def test_the_error_names_the_input_field_that_holds_the_list() -> None:
    # given an input object variable whose appearanceTags list is past the bound
    variables = {"input": {"name": "Vale", "appearanceTags": ["x"] * 11}}
    # when it is measured
    error = check_variables(variables, declaring("input"), VariableBounds(max_list_items=10))
    # then the message and extensions name the field inside the variable
    assert error is not None and error.extensions is not None
    assert error.message == "Variable '$input'.appearanceTags holds a list of 11 items; at most 10 are allowed."
    assert (error.extensions["field"], error.extensions["variable"]) == ("appearanceTags", "input")


async def test_a_json_variable_with_too_many_values_is_refused(graphql: GraphQL, alice: uuid.UUID) -> None:
    # given rules holding more values than the bound, in small lists
    rules = {f"k{i}": [1, 2] for i in range(MAX_VALUES // 2)}
    # when they are sent
    body = await graphql(CREATE, {"tags": [], "rules": rules}, user=alice)
    # then the request is refused by the values bound
    error = only_error(body)
    assert error["extensions"]["measure"] == "values"
    assert error["extensions"]["limit"] == MAX_VALUES


async def test_variables_within_the_bounds_run_as_before(graphql: GraphQL, alice: uuid.UUID) -> None:
    # given a tag list at the schema's own bound and small rules
    tags = [f"tag {i}" for i in range(30)]
    body = await graphql(CREATE, {"tags": tags, "rules": {"layers": [1, 2, 3]}}, user=alice)
    # then the character is made with them
    assert "errors" not in body, body
    assert body["data"]["createCharacter"]["appearanceTags"] == tags


@pytest.mark.parametrize(
    ("variables", "measure"),
    [
        ({"a": [[1] * 11]}, "listItems"),
        ({"a": {"b": {"c": [1] * 11}}}, "listItems"),
        ({"a": [[1] * 10, [1] * 10, [1] * 10]}, "values"),
        ({"a": {str(i): i for i in range(40)}}, "values"),
    ],
)
def test_nested_values_are_found_at_any_depth(variables: dict[str, object], measure: str) -> None:
    # given small bounds, when nested variables break one, then it is named
    error = check_variables(variables, declaring("a"), VariableBounds(max_list_items=10, max_values=30))
    assert error is not None
    assert error.extensions is not None and error.extensions["measure"] == measure


def test_deep_nesting_is_walked_without_recursion() -> None:
    # given a value nested 200,000 lists deep (more than any recursion limit)
    deep: object = 1
    for _ in range(200_000):
        deep = [deep]
    # when measured with a values bound above its size, then it fits; below, it is refused
    assert check_variables({"a": deep}, declaring("a"), VariableBounds(max_values=300_000)) is None
    refused = check_variables({"a": deep}, declaring("a"), VariableBounds(max_values=1000))
    assert refused is not None and refused.extensions is not None and refused.extensions["measure"] == "values"


def test_values_the_document_does_not_declare_are_not_measured() -> None:
    # given a list past the bound in a variable no operation declares (graphql-core never coerces it)
    variables = {"declared": [1, 2], "extra": [1] * 11}
    # when measured, then it is ignored; declared, it is refused
    assert check_variables(variables, declaring("declared"), VariableBounds(max_list_items=10)) is None
    assert check_variables(variables, declaring("declared", "extra"), VariableBounds(max_list_items=10)) is not None
