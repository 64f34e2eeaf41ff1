"""Parsed and validated documents are cached: a repeated document gets the same answer without being validated again."""

from __future__ import annotations

from graph.schema import MAX_TOKENS, LimitedCachedDocuments, _parse, schema

TOO_DEEP = "{ " + "viewer { " * 12 + "id" + " }" * 12 + " }"
VALID = "query Cached { imageModels { modelKey } }"


async def test_a_refused_document_is_refused_again_from_the_cache() -> None:
    # given a document over the depth limit, sent once
    first = await schema.execute(TOO_DEEP)
    # when it is sent again
    cached = LimitedCachedDocuments.validated.get(_parse(TOO_DEEP, MAX_TOKENS))
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
    assert LimitedCachedDocuments.validated.get(_parse(VALID, MAX_TOKENS)) == []


async def test_a_syntax_error_is_the_clients_error_not_a_crash() -> None:
    # given a document that does not parse, when it is sent, then it gets a syntax error
    result = await schema.execute("{ viewer { id ")
    assert result.errors and "Syntax Error" in result.errors[0].message
