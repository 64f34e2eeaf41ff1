"""Parsed and validated documents are cached: a repeated document gets the same answer without being validated again."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
from graphql import ASTValidationRule, GraphQLError
from strawberry.extensions import SchemaExtension

from graph.document_cache import DocumentCache
from graph.schema import MAX_CACHED_DOCUMENT_CHARS, LimitedCachedDocuments, build_schema, schema

TOO_DEEP = "{ " + "viewer { " * 12 + "id" + " }" * 12 + " }"
VALID = "query Cached { imageModels { modelKey } }"


async def test_a_refused_document_is_refused_again_from_the_cache() -> None:
    # given a document over the depth limit, sent once
    first = await schema.execute(TOO_DEEP)
    # when it is sent again
    cached = LimitedCachedDocuments.documents.errors(TOO_DEEP)
    second = await schema.execute(TOO_DEEP)
    # then the errors were cached after the first, and the second answer is the same
    assert cached is not None and cached
    assert first.errors and second.errors
    assert [e.message for e in second.errors] == [e.message for e in first.errors]
    assert second.data is None


async def test_a_valid_document_is_cached_with_no_errors() -> None:
    # given a valid document, when it is validated (execution may fail without a context)
    await schema.execute(VALID)
    # then its validation result, no errors, is cached
    assert LimitedCachedDocuments.documents.errors(VALID) == []


class CountingRule(ASTValidationRule):
    """A validation rule that does nothing but count the validations it takes part in."""

    runs = 0

    def __init__(self, context: Any) -> None:
        super().__init__(context)
        CountingRule.runs += 1


class CountValidations(SchemaExtension):
    """Adds CountingRule to every operation's validation rules."""

    def on_validate(self) -> Iterator[None]:
        context = self.execution_context
        context.validation_rules = (*context.validation_rules, CountingRule)
        yield


async def test_a_repeated_document_is_not_validated_again() -> None:
    # given a schema whose validations are counted, and a document no other test sends
    counted = build_schema(extensions=[CountValidations])
    document = "query NotValidatedTwice { imageModels { modelKey } }"
    CountingRule.runs = 0
    # when it is executed twice (execution may fail without a context; validation comes before)
    await counted.execute(document)
    await counted.execute(document)
    # then it was validated once, the first time
    assert CountingRule.runs == 1


async def test_a_syntax_error_is_the_clients_error_not_a_crash() -> None:
    # given a document that does not parse, when it is sent, then it gets a syntax error
    result = await schema.execute("{ viewer { id ")
    assert result.errors and "Syntax Error" in result.errors[0].message


async def test_the_cache_hands_out_copies_and_keeps_the_errors_as_validation_found_them(
    client: httpx.AsyncClient,
) -> None:
    # given a document that fails validation, answered once over HTTP (the answer's errors are formatted in place)
    query = "query CopiedErrors { nope imageModels { alsoNope } }"
    same_id = {"X-Request-ID": "copied-errors"}  # each answer carries its request's id; the cache holds none
    first = await client.post("/graphql", json={"query": query}, headers=same_id)

    # when the cache is read, and what it gave is changed as strawberry and our formatting change it
    handed = LimitedCachedDocuments.documents.errors(query)
    assert handed is not None
    pristine = [(error.message, error.extensions) for error in handed]
    handed[:] = [GraphQLError("rewritten", extensions={"code": "REWRITTEN"})]
    second = await client.post("/graphql", json={"query": query}, headers=same_id)

    # then the cache still holds the errors as validation found them, and both answers match
    again = LimitedCachedDocuments.documents.errors(query)
    assert again is not None
    assert [(error.message, error.extensions) for error in again] == pristine == [
        ("Cannot query field 'nope' on type 'Query'.", {"code": "GRAPHQL_VALIDATION_FAILED"}),
        ("Cannot query field 'alsoNope' on type 'ImageModel'.", {"code": "GRAPHQL_VALIDATION_FAILED"}),
    ]
    assert second.json() == first.json()
    assert {error["extensions"]["code"] for error in second.json()["errors"]} == {"GRAPHQL_VALIDATION_FAILED"}


async def test_a_long_document_is_answered_but_never_cached() -> None:
    # given two documents over MAX_CACHED_DOCUMENT_CHARS (a long string argument), one valid and one refused
    padding = "x" * MAX_CACHED_DOCUMENT_CHARS
    valid = f'query LongValid {{ imageModels {{ modelKey }} character(id: "{padding}") {{ id }} }}'
    refused = "{ " + "viewer { " * 12 + "id" + " }" * 12 + f' character(id: "{padding}") {{ id }} }}'
    held = len(LimitedCachedDocuments.documents)
    # when each is executed twice (execution may fail without a context; validation comes before)
    answers = [await schema.execute(query) for query in (valid, refused, valid, refused)]
    # then each gets the same answer both times (the refused one its depth error)
    assert [error.message for error in answers[1].errors or []] == [
        error.message for error in answers[3].errors or []
    ]
    assert answers[1].errors and (answers[1].errors[0].extensions or {}).get("measure") == "depth"
    # and neither was kept by the parse cache or the validation cache (which would hold megabytes of such text)
    assert len(LimitedCachedDocuments.documents) == held
    for query in (valid, refused):
        assert LimitedCachedDocuments.documents.errors(query) is None


def test_the_cache_is_bounded_by_the_characters_of_its_documents() -> None:
    # given a cache of 30,000 characters, and documents of about 9,000 characters, each different
    cache = DocumentCache(30_000)
    documents = [
        "{ " + " ".join(f"a{n}_{i}: __typename" for i in range(600)) + " }" for n in range(10)
    ]
    # when they are parsed in turn, the first one again after the second
    for number, query in enumerate(documents):
        cache.parse(query, max_tokens=100_000)
        if number == 1:
            cache.parse(documents[0], max_tokens=100_000)
        assert cache.chars <= 30_000
    # then it held what fits (three), the most recently used, their errors leaving with them
    assert len(cache) == 30_000 // len(documents[0])
    assert cache.errors(documents[9]) is None
    cache.put_errors(documents[9], [GraphQLError("kept")])
    assert [error.message for error in cache.errors(documents[9]) or []] == ["kept"]
    cache.put_errors(documents[0], [GraphQLError("evicted")])
    assert cache.errors(documents[0]) is None
