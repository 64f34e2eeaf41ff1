"""Where we subclass a kept library, the methods we override or call must not change under us.

The project pins strawberry-graphql, graphql-core and uvicorn to their minor versions
(pyproject.toml). Within a pin, a patch release could still change a method
we override or whose internals our override relies on; this test fails
then, so the upgrade is looked at instead of breaking silently. On a
failure: read the library's new code, check our subclass still holds, and
update the fingerprint below.
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable
from typing import Any

import asyncpg
import graphql
import pytest
import strawberry
import uvicorn
from graphql.execution import Executor
from graphql.execution import collect_fields as graphql_collect_fields
from strawberry.asgi import ASGIWebSocketAdapter, GraphQL
from strawberry.extensions.context import ExtensionContextManagerBase, StreamResultContextManager
from strawberry.extensions.runner import SchemaExtensionsRunner
from strawberry.schema.name_converter import NameConverter
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext
from strawberry.schema.schema_converter import GraphQLCoreConverter
from strawberry.types.field import StrawberryField

from graph.schema import PortraitsExecutionContext, PortraitsSchema
from server.app import PortraitsGraphQL
from server.uvicorn_protocols import H11Protocol, HttpToolsProtocol, WebSocketsSansIOProtocol
from storage.database import ResyncingConnection


def fingerprint(function: Callable[..., Any]) -> str:
    """The first 16 hex digits of the SHA-256 of the function's source."""
    return hashlib.sha256(inspect.getsource(function).encode()).hexdigest()[:16]


# (what, the library's method, the fingerprint of its source when our subclass was written)
WATCHED: list[tuple[str, Callable[..., Any], str]] = [
    # PortraitsExecutionContext.build_per_event_executor replaces this and calls the constructors below.
    ("graphql-core Executor.build_per_event_executor", Executor.build_per_event_executor, "e42b7eb17861c1b7"),
    ("graphql-core Executor.__init__", Executor.__init__, "9b630bd4461cc4ea"),
    (
        "strawberry StrawberryGraphQLCoreExecutionContext.__init__",
        StrawberryGraphQLCoreExecutionContext.__init__,
        "cdb4ebbdc06bb99d",
    ),
    # PortraitsExecutionContext.execute_operation runs a compiled plan (graph/plans/) instead of this one, and the
    # plan's closures do what these methods do, field by field (same resolver calls, completion, errors, awaits);
    # graph/plans/collect.py groups fields as the collect_fields functions do.
    ("graphql-core Executor.execute_operation", Executor.execute_operation, "030f6fe38d237369"),
    ("graphql-core Executor.execute_fields", Executor.execute_fields, "797f54fbd779b4e3"),
    ("graphql-core Executor.execute_fields_serially", Executor.execute_fields_serially, "28ca04e6b9ac47c5"),
    ("graphql-core Executor.execute_field", Executor.execute_field, "5281dc836ecc24a0"),
    ("graphql-core Executor.handle_field_error", Executor.handle_field_error, "d33a6ee408cd1695"),
    ("graphql-core Executor.complete_value", Executor.complete_value, "06c34f7681a13120"),
    ("graphql-core Executor.complete_awaitable_value", Executor.complete_awaitable_value, "9a67e9f91f0aac5c"),
    ("graphql-core Executor.complete_list_value", Executor.complete_list_value, "3ee91ce2f0fa9b62"),
    ("graphql-core Executor.complete_iterable_value", Executor.complete_iterable_value, "bdb49d2d91f1e312"),
    ("graphql-core Executor.complete_list_item_value", Executor.complete_list_item_value, "8883b4d65a1ae099"),
    (
        "graphql-core Executor.complete_async_iterator_value",
        Executor.complete_async_iterator_value,
        "2ea7eb211814cd3a",
    ),
    ("graphql-core Executor.complete_leaf_value", Executor.complete_leaf_value, "a8c54d5838ad9753"),
    ("graphql-core Executor.complete_object_value", Executor.complete_object_value, "55e77f58eca1ddc4"),
    ("graphql-core Executor.settle_in_background", Executor.settle_in_background, "da2b2c7303b6fa2d"),
    ("graphql-core visit_selection_sets", graphql_collect_fields.visit_selection_sets, "16ff57c1f4b4eaeb"),
    ("graphql-core should_include_node", graphql_collect_fields.should_include_node, "45717af42eb0871e"),
    ("graphql-core collect_subfields", graphql_collect_fields.collect_subfields, "1657a3c68d283391"),
    # graph/plans/strawberry_fields.py reads strawberry's basic fields inline, as from_resolver's resolver for them
    # does (get_result: default_resolver(source, python_name)), found through get_field_for_type.
    ("strawberry GraphQLCoreConverter.from_resolver", GraphQLCoreConverter.from_resolver, "bcac1354fecdee79"),
    ("strawberry StrawberryField.get_result", StrawberryField.get_result, "1881f471e7299ddb"),
    ("strawberry StrawberryField.is_basic_field", vars(StrawberryField)["is_basic_field"].fget, "2788ae121972c36e"),
    ("strawberry Schema.get_field_for_type", strawberry.Schema.get_field_for_type, "4db4a96d89eeba86"),
    # PortraitsSchema.execute wraps this one and passes its arguments through.
    ("strawberry Schema.execute", strawberry.Schema.execute, "a4b76c96d614f4d0"),
    # PortraitsSchema.create_extensions_runner replaces this with graph/stages.py's StageRunner, which subclasses the
    # runner and replaces its stage methods; its stage managers subclass strawberry's and call these base methods
    # (and StreamResultContextManager's constructor) for the schema's other extensions.
    (
        "strawberry Schema.create_extensions_runner",
        strawberry.Schema.create_extensions_runner,
        "ee54557db9341b39",
    ),
    ("strawberry SchemaExtensionsRunner.__init__", SchemaExtensionsRunner.__init__, "597f6a751bc826ab"),
    ("strawberry SchemaExtensionsRunner.operation", SchemaExtensionsRunner.operation, "dd42fae9326ecc07"),
    ("strawberry SchemaExtensionsRunner.parsing", SchemaExtensionsRunner.parsing, "b8605ffb6ff8b4cf"),
    ("strawberry SchemaExtensionsRunner.validation", SchemaExtensionsRunner.validation, "1b824d77ebba8b8a"),
    ("strawberry SchemaExtensionsRunner.executing", SchemaExtensionsRunner.executing, "5aaed1634162e822"),
    (
        "strawberry SchemaExtensionsRunner.on_stream_result",
        SchemaExtensionsRunner.on_stream_result,
        "52056f5cfda7959a",
    ),
    ("strawberry ExtensionContextManagerBase.__init__", ExtensionContextManagerBase.__init__, "00f00d1e57c37cb8"),
    ("strawberry ExtensionContextManagerBase.__enter__", ExtensionContextManagerBase.__enter__, "77161a8d9f98bd89"),
    ("strawberry ExtensionContextManagerBase.__exit__", ExtensionContextManagerBase.__exit__, "fbaa8de566230506"),
    ("strawberry ExtensionContextManagerBase.__aenter__", ExtensionContextManagerBase.__aenter__, "c7058e93f7f81f94"),
    ("strawberry ExtensionContextManagerBase.__aexit__", ExtensionContextManagerBase.__aexit__, "cdd9e64136a6c76a"),
    ("strawberry StreamResultContextManager.__init__", StreamResultContextManager.__init__, "e9dad8d707275777"),
    ("strawberry Schema.process_errors", strawberry.Schema.process_errors, "1bafd3450ba5af97"),
    # graph/schema.py: RememberedNames remembers what this gives for each name (it must stay a pure function of
    # the name and auto_camel_case).
    ("strawberry NameConverter.apply_naming_config", NameConverter.apply_naming_config, "18ff305435bd9821"),
    ("strawberry NameConverter.__init__", NameConverter.__init__, "89912251e8d28895"),
    # PortraitsSchema.stream refuses a multi-operation document sent without operationName, else passes through.
    ("strawberry Schema.stream", strawberry.Schema.stream, "e62e57ab6ead5652"),
    # server/app.py: PortraitsGraphQL answers in the negotiated media type (server/media_types.py): get_sub_response
    # makes strawberry's sub-response (no status, no header) carrying it, process_result drops a request error's
    # data, create_response answers as strawberry's does (body, the sub-response's headers, background and status)
    # with that Content-Type and a request error's 4xx unless a resolver set a status; run asks
    # should_render_graphql_ide and is_request_allowed before answering 406.
    ("strawberry GraphQL.get_sub_response", GraphQL.get_sub_response, "dce070c34227fdbc"),
    ("strawberry GraphQL.process_result", GraphQL.process_result, "e51c08852da07fca"),
    ("strawberry GraphQL.create_response", GraphQL.create_response, "c3e2be21da60675b"),
    (
        "strawberry GraphQL.should_render_graphql_ide",
        GraphQL.should_render_graphql_ide,
        "6b404edf0789fba4",
    ),
    ("strawberry GraphQL.is_request_allowed", GraphQL.is_request_allowed, "05e75c5c8a53ac55"),
    # server/websocket.py: TextWebSocketAdapter replaces iter_json (text frames only, strict JSON, each message's
    # shape checked) and send_json, and uses the view and socket __init__ keeps.
    ("strawberry ASGIWebSocketAdapter.iter_json", ASGIWebSocketAdapter.iter_json, "eccc1390e8d7876f"),
    ("strawberry ASGIWebSocketAdapter.send_json", ASGIWebSocketAdapter.send_json, "547ae428486d4b1d"),
    ("strawberry ASGIWebSocketAdapter.__init__", ASGIWebSocketAdapter.__init__, "d6f94c67159ea51b"),
    # TextWebSocketAdapter.close swaps in the code and reason of a refusal chosen by PortraitsGraphQL.on_ws_connect.
    ("strawberry ASGIWebSocketAdapter.close", ASGIWebSocketAdapter.close, "53fd79275b9ac4de"),
    # server/app.py: PortraitsGraphQL.run wraps this one to cancel the socket's token-expiry timer after it returns
    # (get_context, on_ws_connect and encode_json, which it also overrides, are strawberry's documented hooks).
    ("strawberry GraphQL.run", GraphQL.run, "b278e647b7eee2e8"),
    # server/app.py: PortraitsGraphQL.parse_http_body replaces this (server/graphql_request.py reads the request),
    # and its run turns the HTTPExceptions execute_single raises (from the operation errors, kept as __cause__)
    # into GraphQL errors (graphql_request.refusal_of).
    ("strawberry GraphQL.parse_http_body", GraphQL.parse_http_body, "6c7c673a13880c7f"),
    ("strawberry GraphQL.execute_single", GraphQL.execute_single, "bc864c615b4dc12d"),
    # server/app.py: PortraitsGraphQL.render_graphql_ide answers with our GraphiQL page (server/graphiql_assets.py)
    # and falls back to this one, strawberry's CDN page, when GraphiQL's files are not installed.
    ("strawberry GraphQL.render_graphql_ide", GraphQL.render_graphql_ide, "417bb9771be9540d"),
    # server/app.py: PortraitsGraphQL.execute_operation resolves a persisted query's document
    # (server/persisted_queries.py) into the request data it passes on to this one, then keeps a new document once it
    # has validated.
    ("strawberry GraphQL.execute_operation", GraphQL.execute_operation, "7ee9febac728183f"),
    # server/http_head.py: HeadLimitedHttpToolsProtocol wraps these parser callbacks to count the request head,
    # raises from them to stop the parse, and replaces send_400_response (every parse refusal: a GraphQL error body).
    # It also uses two attributes uvicorn's protocol sets in __init__ and connection_made, public by name but not
    # documented: ``transport`` (written and closed) and ``server_state.default_headers`` (sent with the refusal);
    # the fingerprints of those methods below watch them.
    ("uvicorn HttpToolsProtocol.__init__", HttpToolsProtocol.__init__, "4f08999410347141"),
    ("uvicorn HttpToolsProtocol.connection_made", HttpToolsProtocol.connection_made, "6efb565ff3d36b91"),
    ("uvicorn HttpToolsProtocol.data_received", HttpToolsProtocol.data_received, "010a7ae59a5d3b1a"),
    ("uvicorn HttpToolsProtocol.on_message_begin", HttpToolsProtocol.on_message_begin, "96d377fdc7c2baef"),
    ("uvicorn HttpToolsProtocol.on_url", HttpToolsProtocol.on_url, "37be44e962b04ca8"),
    ("uvicorn HttpToolsProtocol.on_header", HttpToolsProtocol.on_header, "65d62c044f61fdbd"),
    ("uvicorn HttpToolsProtocol.on_headers_complete", HttpToolsProtocol.on_headers_complete, "1ea8589acfad92d8"),
    ("uvicorn HttpToolsProtocol.send_400_response", HttpToolsProtocol.send_400_response, "ae5a4a3782b646fd"),
    # server/http_drain.py: DrainOnShutdown replaces shutdown for an idle connection (keeping it open a moment for a
    # request already sent), defers to it otherwise, and relies on the request cycle's ``keep_alive`` (set in
    # on_headers_complete, watched above) to answer with Connection: close; it wraps connection_lost to stop its timer.
    ("uvicorn HttpToolsProtocol.shutdown", HttpToolsProtocol.shutdown, "d7351fa33f00d430"),
    ("uvicorn HttpToolsProtocol.connection_lost", HttpToolsProtocol.connection_lost, "c91a4c9bf2e29c55"),
    # server/cli.py: PortraitsServer wraps these to start and stop the GC pacer, and runs the app's draining steps
    # and waits for the listening sockets' backlog (uvicorn's public ``servers``) before uvicorn's shutdown.
    ("uvicorn Server.startup", uvicorn.Server.startup, "2aa1d70a244bfcf2"),
    ("uvicorn Server.shutdown", uvicorn.Server.shutdown, "9b33c50562992b1e"),
    # server/connection_guard.py wraps uvicorn's protocols by delegation and relies on how these behave: the upgrade
    # builds the ws= class with keyword arguments inside data_received (where the guard's context variable is set)
    # and then hands it the transport; the keep-alive timer is armed after a response; every ping is answered with a
    # write that ignores the write buffer (what GuardedWebSocketProtocol bounds). GuardedWebSocketProtocol logs the
    # peer from the protocol's ``client`` attribute, set in connection_made, public by name but not documented.
    (
        "uvicorn HttpToolsProtocol.handle_websocket_upgrade",
        HttpToolsProtocol.handle_websocket_upgrade,
        "179c4f769386ab89",
    ),
    ("uvicorn H11Protocol.handle_websocket_upgrade", H11Protocol.handle_websocket_upgrade, "6f42a029e35aed5c"),
    ("uvicorn HttpToolsProtocol.on_response_complete", HttpToolsProtocol.on_response_complete, "64e254f28e389e76"),
    ("uvicorn WebSocketsSansIOProtocol.__init__", WebSocketsSansIOProtocol.__init__, "631dcd744eab875f"),
    ("uvicorn WebSocketsSansIOProtocol.handle_ping", WebSocketsSansIOProtocol.handle_ping, "41bcf345d372c55c"),
    (
        "uvicorn WebSocketsSansIOProtocol.connection_made",
        WebSocketsSansIOProtocol.connection_made,
        "f533ec93747c2cbf",
    ),
]


@pytest.mark.parametrize(("what", "method", "expected"), WATCHED, ids=[what for what, _, _ in WATCHED])
def test_overridden_library_method_is_unchanged(what: str, method: Callable[..., Any], expected: str) -> None:
    assert fingerprint(method) == expected, (
        f"{what} changed (graphql-core {graphql.__version__}): check our subclass, then update WATCHED"
    )


def test_our_overrides_keep_the_library_signatures() -> None:
    # given the methods we override, when their signatures are compared with the library's, then they match
    assert inspect.signature(PortraitsExecutionContext.build_per_event_executor).parameters.keys() == (
        inspect.signature(Executor.build_per_event_executor).parameters.keys()
    )
    assert inspect.signature(PortraitsExecutionContext.execute_operation).parameters.keys() == (
        inspect.signature(Executor.execute_operation).parameters.keys()
    )
    assert inspect.signature(PortraitsSchema.execute).parameters.keys() == (
        inspect.signature(strawberry.Schema.execute).parameters.keys()
    )
    assert inspect.signature(PortraitsSchema.stream).parameters.keys() == (
        inspect.signature(strawberry.Schema.stream).parameters.keys()
    )
    assert inspect.signature(PortraitsSchema.create_extensions_runner).parameters.keys() == (
        inspect.signature(strawberry.Schema.create_extensions_runner).parameters.keys()
    )
    for name in ("get_sub_response", "process_result", "create_response", "execute_operation"):
        assert inspect.signature(getattr(PortraitsGraphQL, name)).parameters.keys() == (
            inspect.signature(getattr(GraphQL, name)).parameters.keys()
        ), name
    assert inspect.signature(PortraitsGraphQL.parse_http_body).parameters.keys() == (
        inspect.signature(GraphQL.parse_http_body).parameters.keys()
    )
    assert inspect.signature(PortraitsGraphQL.render_graphql_ide).parameters.keys() == (
        inspect.signature(GraphQL.render_graphql_ide).parameters.keys()
    )
    # storage/database.py: ResyncingConnection passes every argument of these through (asyncpg is pinned to 0.32.x)
    for name in ("execute", "fetch", "fetchrow", "fetchval"):
        ours = inspect.signature(getattr(ResyncingConnection, name)).parameters
        theirs = inspect.signature(getattr(asyncpg.Connection, name)).parameters
        assert [(p.name, p.kind, p.default) for p in ours.values()] == [
            (p.name, p.kind, p.default) for p in theirs.values()
        ], name


def test_the_protocol_classes_we_import_are_the_ones_uvicorn_loads_by_name() -> None:
    # given uvicorn's public way to name its protocols (Config's http= and ws= strings), when a config loads them
    config = uvicorn.Config(lambda scope, receive, send: None, http="httptools", ws="websockets-sansio")
    config.load()
    # then they are the classes server/uvicorn_protocols.py looked up by the same names, which server/http_head.py
    # and server/http_drain.py subclass and server/connection_guard.py wraps (this fails when uvicorn replaces them)
    assert config.http_protocol_class is HttpToolsProtocol
    assert config.ws_protocol_class is WebSocketsSansIOProtocol
