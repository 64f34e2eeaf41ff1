"""Persisted queries over HTTP: Apollo's automatic persisted queries, or registered documents only.

The wire format is Apollo's (Apollo Client's persisted-queries link, urql's
persisted exchange): ``extensions.persistedQuery = {"version": 1,
"sha256Hash": <lowercase hex SHA-256 of the document's UTF-8 text>}``, in a
POST body or, with no ``query``, as GET parameters. The answers match Apollo
Server 4's, but for the status in application/graphql-response+json, where
an answer without ``data`` is a 400 (server/app.py; the links read a 4xx's body):

- a hash the server does not know: 200, ``PersistedQueryNotFound`` with code
  ``PERSISTED_QUERY_NOT_FOUND`` and ``Cache-Control: private, no-cache,
  must-revalidate`` (a CDN must not keep it: the client is about to send the
  text); the link then sends hash and text, which registers the document;
- persisted queries off (``PERSISTED_DOCUMENTS=off``): 200,
  ``PersistedQueryNotSupported`` / ``PERSISTED_QUERY_NOT_SUPPORTED``, on
  which the link stops hashing and sends text;
- a version other than 1, or a hash that is not the text's: 400,
  ``BAD_REQUEST``.

With ``PERSISTED_DOCUMENTS=registered`` only documents registered ahead of
time (``portraits documents register``) run, sent by hash or as text; any
other is refused with 403, ``PERSISTED_QUERY_NOT_IN_LIST`` (Apollo Router's
code for a safelist refusal; not NOT_FOUND, so the link does not retry with
text that would be refused too). Introspection-only documents still run
while GraphiQL is on (``GRAPHIQL``), so its schema explorer works.

Only documents that parsed, met the limits and validated are kept
(graph/schema.py: ``validated``), at most ``MAX_BODY_CHARS`` characters
each, so a client cannot fill the store with garbage.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace

import asyncpg
from graphql import GraphQLError
from strawberry.http import GraphQLRequestData

from graph.schema import introspection_only, validated
from server.persisted_store import PersistedStore
from server.request_errors import BAD_REQUEST, SERVICE_UNAVAILABLE, RequestRefused
from server.settings import PERSISTED_AUTOMATIC, PERSISTED_OFF, PERSISTED_REGISTERED, PersistedDocumentsConfig
from storage.errors import StorageError
from storage.persisted_documents import MAX_BODY_CHARS

EXTENSION = "persistedQuery"
VERSION = 1
NOT_FOUND = "PERSISTED_QUERY_NOT_FOUND"
NOT_SUPPORTED = "PERSISTED_QUERY_NOT_SUPPORTED"
NOT_IN_LIST = "PERSISTED_QUERY_NOT_IN_LIST"
# Apollo Server's messages, which clients match besides the codes.
NOT_FOUND_MESSAGE = "PersistedQueryNotFound"
NOT_SUPPORTED_MESSAGE = "PersistedQueryNotSupported"
HASH_MISMATCH_MESSAGE = "provided sha does not match query"
# Apollo Server's header on its persisted-query errors: never cached, the next request will differ.
UNCACHED = {"cache-control": "private, no-cache, must-revalidate"}
SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def sha256_hex(document: str) -> str:
    """The hash Apollo's link sends: SHA-256 of the document's UTF-8 text, lowercase hex."""
    return hashlib.sha256(document.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class Resolved:
    """The request to run, and the document to keep once it has validated (automatic mode, new text)."""

    request: GraphQLRequestData
    keep: tuple[str, str] | None = None  # (sha256, text)


class PersistedQueries:
    """Resolves a request's ``persistedQuery`` to a document, or refuses it, as the mode says."""

    def __init__(self, config: PersistedDocumentsConfig, *, introspection: bool) -> None:
        self.mode = config.mode
        self.introspection = introspection
        self.store = PersistedStore(registered_only=config.mode == PERSISTED_REGISTERED, max_automatic=config.max_count)

    def concerns(self, request: GraphQLRequestData) -> bool:
        """Whether ``resolve`` has anything to do for ``request``: it carries a ``persistedQuery``, or only
        registered documents run. Otherwise the request runs as it came, and nothing is kept."""
        return self.mode == PERSISTED_REGISTERED or (
            request.extensions is not None and EXTENSION in request.extensions
        )

    async def resolve(self, request: GraphQLRequestData, pool: asyncpg.Pool) -> Resolved:
        """The request with its document; raises ``RequestRefused`` with the code the client acts on."""
        extension = (request.extensions or {}).get(EXTENSION)
        if extension is None:
            if self.mode == PERSISTED_REGISTERED:
                await self._check_registered(request.query or "", pool)
            return Resolved(request)
        if self.mode == PERSISTED_OFF:
            raise RequestRefused(200, NOT_SUPPORTED_MESSAGE, code=NOT_SUPPORTED, headers=UNCACHED)
        sha256 = _hash_of(extension)
        if request.query is None:
            body = await self._lookup(pool, sha256)
            if body is None:
                if self.mode == PERSISTED_REGISTERED:
                    raise _not_in_list(f"No registered document has the hash {sha256}")
                raise RequestRefused(200, NOT_FOUND_MESSAGE, code=NOT_FOUND, headers=UNCACHED)
            return Resolved(replace(request, query=body))
        if sha256_hex(request.query) != sha256:
            raise RequestRefused(400, HASH_MISMATCH_MESSAGE, extensions={"sha256Hash": sha256})
        if self.mode == PERSISTED_REGISTERED:
            await self._check_registered(request.query, pool, sha256)
            return Resolved(request)
        # (a document this process knows is not written again: some clients send hash and text every time)
        known = self.store.memory.get(sha256) is not None
        keep = None if known or len(request.query) > MAX_BODY_CHARS else (sha256, request.query)
        return Resolved(request, keep)

    async def keep_if_valid(self, resolved: Resolved, pool: asyncpg.Pool) -> None:
        """After the request ran: keep its document when the schema parsed and validated it (automatic mode)."""
        if resolved.keep is None or self.mode != PERSISTED_AUTOMATIC:
            return
        sha256, body = resolved.keep
        if validated(body):
            await self.store.save(pool, sha256, body)

    async def refuse_socket_operation(self, query: str, pool: asyncpg.Pool) -> GraphQLError | None:
        """A websocket operation's refusal: its text only (no hashes over websockets), registered-only mode."""
        if self.mode != PERSISTED_REGISTERED:
            return None
        try:
            await self._check_registered(query, pool)
        except RequestRefused as refused:
            return GraphQLError(refused.reason, extensions={"code": refused.code})
        return None

    async def _check_registered(self, query: str, pool: asyncpg.Pool, sha256: str | None = None) -> None:
        if await self._lookup(pool, sha256 or sha256_hex(query)) is not None:
            return
        if self.introspection and introspection_only(query):
            return
        raise _not_in_list("This document is not registered")

    async def _lookup(self, pool: asyncpg.Pool, sha256: str) -> str | None:
        try:
            return await self.store.lookup(pool, sha256)
        except StorageError:
            raise RequestRefused(
                503, "Persisted documents are unavailable: try again", code=SERVICE_UNAVAILABLE, headers=UNCACHED
            ) from None


def _hash_of(extension: object) -> str:
    """The ``sha256Hash`` of a well-formed version 1 ``persistedQuery``, or a 400 saying what is wrong."""
    if not isinstance(extension, Mapping):
        raise RequestRefused(400, "extensions.persistedQuery must be an object", code=BAD_REQUEST)
    version = extension.get("version")
    if version != VERSION or isinstance(version, bool):
        raise RequestRefused(
            400, f"Unsupported persisted query version: only version {VERSION} is supported", code=BAD_REQUEST
        )
    sha256 = extension.get("sha256Hash")
    if not isinstance(sha256, str) or SHA256_HEX.fullmatch(sha256) is None:
        raise RequestRefused(
            400, "extensions.persistedQuery.sha256Hash must be a SHA-256 in 64 lowercase hex digits", code=BAD_REQUEST
        )
    return sha256


def _not_in_list(reason: str) -> RequestRefused:
    return RequestRefused(
        403,
        f"{reason}: this server runs only documents registered ahead of time (PERSISTED_DOCUMENTS=registered; "
        "`portraits documents register` adds a client's build output)",
        code=NOT_IN_LIST,
    )
