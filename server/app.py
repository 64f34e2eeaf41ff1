"""The Starlette application and its lifespan, assembled in one place."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any, TypedDict

import asyncpg
from cross_web import AsyncHTTPRequestAdapter, HTTPException
from graphql import GraphQLError
from starlette.applications import Starlette
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Scope
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError
from strawberry.http import GraphQLHTTPResponse, GraphQLRequestData
from strawberry.http.base import BaseRequestProtocol
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL, GRAPHQL_WS_PROTOCOL
from strawberry.types import ExecutionResult, SubscriptionExecutionResult
from strawberry.types.execution import PreExecutionError
from strawberry.types.unset import UNSET, UnsetType

from graph.context import AUTH_REQUIRED, Context
from graph.plans import PlanCache
from graph.schema import PortraitsSchema
from graph.schema import schema as default_schema
from observability.log_context import bind_user
from pipeline.service import Generation
from realtime.event_hub import EventHub, open_event_hub
from server import graphql_request, json
from server.auth import (
    BearerTokenBackend,
    TokenError,
    TokenVerifier,
    authorization_param,
    bearer_token,
    unauthenticated_response,
    viewer_of,
)
from server.cors import CrossOrigin, origin_of, websocket_origin_refusal
from server.graphiql_assets import GraphiQLAssets
from server.http_caching import get_cache_headers, with_errors
from server.jwks import signing_keys
from server.media_types import GRAPHQL_RESPONSE_JSON, JSON, response_media_type
from server.metrics import Metrics
from server.metrics_http import CountRequests, metrics_route
from server.object_route import serve_signed_object
from server.persisted_queries import PersistedQueries
from server.probes import livez, readyz
from server.request_errors import not_acceptable, refusal_response, request_error_status, response_content_type
from server.request_ids import RequestIds
from server.request_limits import RequestLimits
from server.settings import Settings
from server.shutdown import Draining
from server.webhooks import Webhooks
from server.websocket import (
    SOCKET_EXPIRY,
    SOCKET_REFUSAL,
    SOCKET_USER,
    TOO_MANY_SOCKETS_CODE,
    GraphQLSocketShortcut,
    LiveSockets,
    SocketCounts,
    TextWebSocketAdapter,
    close_at_expiry,
    too_many_sockets,
)
from storage.database import QueryLogger, create_pool
from storage.errors import StorageError
from storage.health_connection import HealthConnection
from storage.objects.catalog import CatalogedObjectStore
from storage.objects.config import open_object_store
from storage.objects.local import SIGN_ROUTE
from storage.objects.signing import UrlSigner

logger = logging.getLogger(__name__)

GRAPHQL_PATH = "/graphql"
# Key in an HTTP request's ASGI scope: the answer's media type, negotiated from Accept once (server/media_types.py).
NEGOTIATED_MEDIA_TYPE = "portraits.media_type"
# A websocket must send connection_init this soon after opening, or it is closed (4408).
CONNECTION_INIT_TIMEOUT = timedelta(seconds=15)
# Every subscription needs a user: a socket opened with a token naming none is refused as one without a token.
ANONYMOUS_SOCKET = "token names no user (role 'anon' or no 'sub'); a websocket needs a user's token"


class State(TypedDict):
    """What the lifespan opens; Starlette hands a copy to every request as ``request.state``."""

    pool: asyncpg.Pool
    objects: CatalogedObjectStore
    signer: UrlSigner
    events: EventHub
    health: HealthConnection


class PortraitsWebSocketAdapter(TextWebSocketAdapter):
    """With PERSISTED_DOCUMENTS=registered, a websocket operation's document must be registered too."""

    async def refuse_operation(self, query: str) -> GraphQLError | None:
        view = self.view
        assert isinstance(view, PortraitsGraphQL)
        return await view.persisted.refuse_socket_operation(query, self.ws.state.pool)


class PortraitsGraphQL(GraphQL[Context, None]):
    """Strawberry's ASGI view with our context, websocket authentication, strict JSON and JSON refusals.

    Requests are read by server/graphql_request.py (orjson, the spec's
    request shape) instead of strawberry's lenient ``json.loads``, and what
    the view refuses is answered as a GraphQL error body, not plain text.
    """

    websocket_adapter_class = PortraitsWebSocketAdapter

    def __init__(
        self,
        schema: PortraitsSchema,
        settings: Settings,
        metrics: Metrics,
        tokens: TokenVerifier,
        graphiql: GraphiQLAssets | None = None,
        plans: PlanCache | None = None,
    ) -> None:
        super().__init__(
            schema,
            graphql_ide="graphiql" if settings.graphiql else None,
            subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL, GRAPHQL_WS_PROTOCOL),
            connection_init_wait_timeout=CONNECTION_INIT_TIMEOUT,
            # The same rule as GraphQLSocketShortcut's origin check (server/cors.py), which refuses first, saying why.
            allowed_origins=(*settings.cors_allowed_origins, origin_of(settings.public_url)),
        )
        self.settings = settings
        self.metrics = metrics
        self.tokens = tokens
        self.graphiql = graphiql
        self.plans = plans
        self.sockets_per_user = SocketCounts(settings.connections.websockets_per_user)
        self.persisted = PersistedQueries(settings.persisted_documents, introspection=settings.graphiql)

    async def get_context(self, request: Request | WebSocket, response: Response | WebSocket) -> Context:
        # The lifespan's state, as the server hands every request a copy of it (the ASGI scope's "state"), read
        # as it is rather than through Starlette's ``request.state`` wrapper.
        state: State = request.scope["state"]
        settings = self.settings
        return Context(
            request=request,
            response=response,
            pool=state["pool"],
            signer=state["signer"],
            objects=state["objects"],
            job_policy=settings.job_policy,
            subscription_limits=settings.subscription_limits,
            events=state["events"],
            viewer=viewer_of(request),
            metrics=self.metrics,
            plans=self.plans,
        )

    async def on_ws_connect(self, context: Context) -> UnsetType | dict[str, object] | None:
        """Authenticate a websocket by its connection_init ``Authorization``, else its upgrade header.

        A bad or missing token, or a valid one naming no user (an ``anon``
        token: no subscription is public), rejects the connection (4403); a user over the
        per-user websocket cap is refused (4429); an accepted one is closed
        (4403, which graphql-ws retries with a fresh token) when its token expires.
        """
        try:
            authorization = authorization_param(context.connection_params)
            if authorization is not None:
                context.viewer = await self.tokens.verify(bearer_token(authorization))
                if context.viewer is None:
                    raise ConnectionRejectionError(_unauthenticated(ANONYMOUS_SOCKET))
        except TokenError as error:
            raise ConnectionRejectionError(_unauthenticated(str(error))) from None
        if context.viewer is None:
            raise ConnectionRejectionError(_unauthenticated(AUTH_REQUIRED))
        bind_user(context.viewer.user_id)  # the socket's task: its operations, started after, log the user
        websocket = context.request
        assert isinstance(websocket, WebSocket)
        if SOCKET_USER not in websocket.scope:  # graphql-ws (legacy) lets a client send connection_init again
            if not self.sockets_per_user.take(context.viewer.user_id):
                reason = too_many_sockets("user", self.sockets_per_user.limit)
                websocket.scope[SOCKET_REFUSAL] = (TOO_MANY_SOCKETS_CODE, reason)  # TextWebSocketAdapter.close
                raise ConnectionRejectionError({"message": reason, "code": "RATE_LIMITED"})
            websocket.scope[SOCKET_USER] = context.viewer.user_id
        websocket.scope[SOCKET_EXPIRY] = close_at_expiry(websocket, context.viewer.expires_at)
        context.connection_params = None  # read: an idle socket need not keep its token
        return UnsetType()  # strawberry's UNSET (typed Any): acknowledge with no payload

    def should_render_graphql_ide(self, request: BaseRequestProtocol) -> bool:
        """Strawberry's rule (a GET without ``query`` that accepts HTML or ``*/*``), but never for a persisted
        query's GET (``extensions``, no ``query``): its URL is the one CDNs cache, and a page there, asked for by a
        browser or curl's ``*/*``, would be kept and served to every client of that query."""
        return super().should_render_graphql_ide(request) and request.query_params.get("extensions") is None

    async def render_graphql_ide(self, request: Request) -> Response:
        """Our GraphiQL page on the files this server serves (server/graphiql_assets.py); strawberry's CDN page
        when they are not installed. Either varies on Accept: /graphql answers JSON to the same URL."""
        if self.graphiql is not None:
            response = self.graphiql.page_response()
        else:
            response = await super().render_graphql_ide(request)
        response.headers["vary"] = "Accept"  # (CORS adds Origin after)
        return response

    async def parse_http_body(self, request: AsyncHTTPRequestAdapter) -> GraphQLRequestData:
        """One operation per request (no batching, no uploads), strictly decoded."""
        if request.method == "GET":
            return graphql_request.request_from_query(request.query_params)
        return graphql_request.request_from_body(request.content_type, await request.get_body())

    async def get_sub_response(self, request: Request | WebSocket) -> Response:
        """Strawberry's (a Response with no status and no header yet, for resolvers to add theirs), carrying the
        media type the answer will have (server/media_types.py) to ``create_response``."""
        sub_response = Response()
        sub_response.status_code = None  # type: ignore[assignment]  # (strawberry's: None until a resolver sets one)
        sub_response.raw_headers = []  # (Response() gave it a content-length, which strawberry's deletes)
        sub_response.media_type = _media_type_of(request)
        if isinstance(request, Request) and request.method == "GET":
            sub_response.headers.update(get_cache_headers(
                authorized="authorization" in request.headers,
                public_max_age_seconds=self.settings.public_get_max_age_seconds,
            ))
        return sub_response

    async def process_result(self, request: Request, result: ExecutionResult) -> GraphQLHTTPResponse:
        """A request error (graph/schema.py: nothing ran) has no ``data`` entry in application/graphql-response+json,
        as the GraphQL-over-HTTP spec says; application/json keeps ``"data": null`` as it always had."""
        response = await super().process_result(request, result)
        if isinstance(result, PreExecutionError) and _media_type_of(request) == GRAPHQL_RESPONSE_JSON:
            response.pop("data", None)
        return response

    def create_response(
        self, response_data: GraphQLHTTPResponse | list[GraphQLHTTPResponse], sub_response: Response
    ) -> Response:
        """Strawberry's answer (the body encoded, the sub-response's headers, background and status) in the
        negotiated media type: application/graphql-response+json answers a body without ``data`` (a request
        error) with a 4xx (server/request_errors.py), unless a resolver set a status."""
        media_type = sub_response.media_type or JSON
        response = Response(self.encode_json(response_data), media_type=response_content_type(media_type))
        response.raw_headers.extend(sub_response.raw_headers)
        if sub_response.background:
            response.background = sub_response.background
        if sub_response.status_code:
            response.status_code = sub_response.status_code
        if isinstance(response_data, dict) and response_data.get("errors"):
            response.headers["cache-control"] = with_errors(response.headers.get("cache-control"))
        response.headers.add_vary_header("Accept")  # a cache (a CDN keeping GETs) must not serve one type for the other
        if (
            media_type == GRAPHQL_RESPONSE_JSON
            and isinstance(response_data, dict)
            and "data" not in response_data
            and not sub_response.status_code
        ):
            response.status_code = request_error_status(response_data.get("errors") or [])
        return response

    async def execute_operation(
        self,
        request: Request,
        request_adapter: AsyncHTTPRequestAdapter,
        request_data: GraphQLRequestData | list[GraphQLRequestData],
        context: Context,
        root_value: None,
        sub_response: Response,
    ) -> ExecutionResult | list[ExecutionResult] | SubscriptionExecutionResult:
        """A persisted query's document looked up (or refused) first; a new one kept once it has validated."""
        assert isinstance(request_data, GraphQLRequestData)  # parse_http_body refuses batches
        persisted = self.persisted
        if not persisted.concerns(request_data):
            return await super().execute_operation(
                request, request_adapter, request_data, context, root_value, sub_response
            )
        resolved = await persisted.resolve(request_data, context.pool)
        result = await super().execute_operation(
            request, request_adapter, resolved.request, context, root_value, sub_response
        )
        await persisted.keep_if_valid(resolved, context.pool)
        return result

    def decode_json(self, data: str | bytes) -> object:
        """Websocket messages too: orjson refuses what ``json.loads`` lets through (graphql_request.py)."""
        return graphql_request.decode_json(data)

    async def run(self, request: Request | WebSocket, context: Any = UNSET, root_value: Any = UNSET) -> Any:
        if not isinstance(request, WebSocket):
            # Negotiated once per request; get_sub_response, process_result and the refusals below read it back.
            media_type = request.scope[NEGOTIATED_MEDIA_TYPE] = response_media_type(request.headers.get("accept"))
            if media_type is None:
                adapter = self.request_adapter_class(request)
                # (GraphiQL's page is HTML: a browser asking for it accepts neither JSON type)
                if self.is_request_allowed(adapter) and not self.should_render_graphql_ide(adapter):
                    return refusal_response(not_acceptable(request.headers.get("accept", "")))
        try:
            return await super().run(request, context, root_value)
        except HTTPException as error:  # only HTTP requests raise it: a refusal before any GraphQL ran
            return refusal_response(graphql_request.refusal_of(error), _media_type_of(request))
        finally:
            if isinstance(request, WebSocket):
                if (timer := request.scope.pop(SOCKET_EXPIRY, None)) is not None:
                    timer.cancel()
                if (user_id := request.scope.pop(SOCKET_USER, None)) is not None:
                    self.sockets_per_user.give_back(user_id)

    def encode_json(self, data: object) -> bytes:
        return json.dumps(data)


def _media_type_of(request: Request | WebSocket) -> str:
    """The media type of the answer to ``request``, as ``run`` negotiated it (one that accepts neither type was
    refused 406 there, but for GraphiQL's page)."""
    if NEGOTIATED_MEDIA_TYPE in request.scope:
        return request.scope[NEGOTIATED_MEDIA_TYPE] or JSON
    return response_media_type(request.headers.get("accept")) or JSON


def _unauthenticated(reason: str) -> dict[str, object]:
    """The connection_error / close payload of a refused websocket."""
    return {"message": f"Unauthenticated: {reason}", "code": "UNAUTHENTICATED"}


async def healthz(request: Request) -> Response:
    """200 when the database answers, 503 when it does not (for the Docker HEALTHCHECK and load balancers).

    It asks on a connection of its own, never the pool's: a pool busy with
    requests is a busy instance, not a database that is down.
    """
    try:
        await request.state.health.ping()
    except StorageError as error:
        logger.warning("health check failed: %s", error)
        return json.json_response({"status": "unavailable", "database": "unreachable"}, status_code=503)
    return json.json_response({"status": "ok"})


@asynccontextmanager
async def open_services(
    settings: Settings, database_url: str, *, query_logger: QueryLogger | None = None
) -> AsyncIterator[tuple[asyncpg.Pool, CatalogedObjectStore]]:
    """The pool and the catalogued object store, as the app, workers and the sweeper all use them."""
    pool = await create_pool(database_url, max_size=settings.database_pool_size, query_logger=query_logger)
    try:
        objects = CatalogedObjectStore(await open_object_store(settings.objects), pool)
        try:
            yield pool, objects
        finally:
            await objects.close()
    finally:
        await pool.close()


def create_app(
    settings: Settings,
    *,
    schema: PortraitsSchema = default_schema,
    query_logger: QueryLogger | None = None,
    draining: Draining | None = None,
    plans: PlanCache | None = None,
) -> ASGIApp:
    """The ASGI app; ``settings.database_url`` must be set (the CLI resolves the embedded one).

    Starlette serves every HTTP route; GraphQL websockets take a shortcut past
    its middleware (server/websocket.py: ``GraphQLSocketShortcut``). The app
    registers what it does when the server begins to stop on ``draining``
    (server/shutdown.py): its websockets end with SERVICE_UNAVAILABLE and
    1012, and its workers start handing back what they cannot finish.
    With ``EXECUTION_PLANS`` on, operations run through ``plans`` (a cache of
    its own when None; graph/plans/); off, ``plans`` is not used.
    """
    if settings.database_url is None:
        raise ValueError("create_app needs settings.database_url")
    database_url = settings.database_url
    # This app's own registry (server/metrics.py): the request path, the workers and the event hub record into it.
    metrics = Metrics()
    per_address = SocketCounts(settings.connections.websockets_per_address)
    live_sockets = LiveSockets()
    if draining is not None:
        draining.add("websockets", live_sockets.end_all, before_close=True)

    tokens = TokenVerifier(settings.jwt_secret, settings.tokens, signing_keys(settings.tokens.jwks))
    # PROVIDER_WEBHOOKS=on: /webhooks/fal (and /webhooks/replicate with its secret), verified, waking the workers.
    webhooks = Webhooks(settings.webhooks)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[State]:
        # tokens: a JWKS is fetched before the first request (a failure is logged, not fatal), its client closed after.
        async with (
            open_services(settings, database_url, query_logger=query_logger) as (pool, objects),
            tokens,
            webhooks,
        ):
            generation = None
            if settings.generation.workers > 0:
                generation = await Generation.start(
                    settings.generation,
                    dsn=database_url,
                    pool=pool,
                    objects=objects,
                    workers=settings.generation.workers,
                    metrics=metrics,
                )
                if draining is not None:
                    draining.add("generation workers", generation.stop, before_close=False)
            try:
                async with open_event_hub(
                    database_url, broadcast_url=settings.broadcast_url, metrics=metrics
                ) as events:
                    signer = UrlSigner(objects, settings.signing)
                    health = HealthConnection(database_url)
                    gauges = metrics.gauges
                    gauges.pool, gauges.subscriptions = pool, lambda: events.subscriber_count
                    try:
                        yield {"pool": pool, "objects": objects, "signer": signer, "events": events, "health": health}
                    finally:
                        gauges.pool = gauges.subscriptions = None
                        await health.close()
            finally:
                if generation is not None:
                    await generation.stop()

    graphiql = GraphiQLAssets.load(settings.graphiql_assets) if settings.graphiql else None
    # One per app: the compiled plans of the operations it has run (graph/plans/), when EXECUTION_PLANS is on.
    if not settings.execution_plans:
        plans = None
    elif plans is None:
        plans = PlanCache(generate=settings.generated_plans)
    view = PortraitsGraphQL(schema, settings, metrics, tokens, graphiql, plans)
    backend = BearerTokenBackend(tokens)
    routes: list[Any] = [
        # Every method: the view answers those it does not serve with a GraphQL 405.
        Route(GRAPHQL_PATH, AuthenticationMiddleware(view, backend=backend, on_error=unauthenticated_response)),
        Route("/healthz", healthz, methods=["GET", "HEAD"]),
        Route("/livez", livez, methods=["GET", "HEAD"]),
        Route("/readyz", readyz, methods=["GET", "HEAD"]),
        metrics_route(metrics, settings.metrics.token),
        Route(SIGN_ROUTE + "/{bucket}/{path:path}", serve_signed_object, methods=["GET", "HEAD"]),
    ]
    routes.extend(webhooks.routes)
    if graphiql is not None:
        routes.append(graphiql.route())
    http: ASGIApp = CountRequests(RequestLimits(Starlette(routes=routes, lifespan=lifespan), settings.http), metrics)
    # Every socket past the per-address cap holds one count there until it ends: the open-websockets gauge.
    metrics.gauges.websockets = lambda: sum(per_address.counts.values())
    if settings.tracing.enabled:
        # Imported only when on (server/tracing.py); outside RequestLimits, so its refusals are traced too.
        from server.tracing import traced_http

        http = traced_http(http, routes)
    # Outside everything that answers, so each refusal too carries the request's id (server/request_ids.py).
    return RequestIds(
        # Outside the request limits, so their refusals carry CORS headers too (server/cors.py).
        CrossOrigin(
            GraphQLSocketShortcut(
                http, view, path=GRAPHQL_PATH, backend=backend, per_address=per_address, live=live_sockets,
                origin_refusal=_origin_check(settings),
            ),
            origins=settings.cors_allowed_origins,
            paths=(GRAPHQL_PATH,),
            prefixes=(SIGN_ROUTE + "/",),
        )
    )


def _origin_check(settings: Settings) -> Callable[[Scope], str | None]:
    """A websocket upgrade's Origin checked against CORS_ALLOWED_ORIGINS and the server's own (PUBLIC_URL)."""
    own = origin_of(settings.public_url)

    def refusal(scope: Scope) -> str | None:
        return websocket_origin_refusal(scope, settings.cors_allowed_origins, own)

    return refusal
