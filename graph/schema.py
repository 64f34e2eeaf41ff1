"""The schema object: the per-domain queries and mutations merged, with the limits on.

Limits (documented in the README): a document may nest at most
``MAX_DEPTH`` levels (introspection fields excepted), hold at most
``MAX_TOKENS`` lexical tokens and ``MAX_ALIASES`` aliases. GraphiQL's
introspection query fits.
"""

from __future__ import annotations

from typing import Any

import strawberry
from graphql import GraphQLError
from strawberry.extensions import MaxAliasesLimiter, MaxTokensLimiter, ParserCache, QueryDepthLimiter, ValidationCache
from strawberry.tools import merge_types
from strawberry.types import ExecutionContext

from graph.catalog import CatalogQuery
from graph.characters import CharacterMutation, CharacterQuery
from graph.errors import ErrorCodes, log_errors
from graph.viewer import ViewerQuery

MAX_DEPTH = 10
MAX_TOKENS = 2000
MAX_ALIASES = 30

Query = merge_types("Query", (ViewerQuery, CharacterQuery, CatalogQuery))
Mutation = merge_types("Mutation", (CharacterMutation,))


class PortraitsSchema(strawberry.Schema):
    def process_errors(self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None) -> None:
        """Log only what the client did not cause (strawberry's default logs every error as a crash)."""
        log_errors(errors)


def build_schema(**kwargs: Any) -> PortraitsSchema:
    return PortraitsSchema(
        query=Query,
        mutation=Mutation,
        extensions=[
            ErrorCodes(),
            MaxTokensLimiter(max_token_count=MAX_TOKENS),
            QueryDepthLimiter(max_depth=MAX_DEPTH),
            MaxAliasesLimiter(max_alias_count=MAX_ALIASES),
            # Repeated documents (every client sends the same few) skip parsing and validation.
            ParserCache(maxsize=256),
            ValidationCache(maxsize=256),
        ],
        **kwargs,
    )


schema = build_schema()
