"""The ``portraits`` command: serve, worker, sweep, migrate, token.

Settings are read here, once, and passed down.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import select
import signal
import socket
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path

import uvicorn
from starlette.types import ASGIApp

from devtools.embedded_postgres import EmbeddedPostgres, EmbeddedPostgresError
from devtools.embedded_supervisor import EmbeddedSupervisor
from graph.schema import schema as default_schema
from pipeline.service import Generation
from pipeline.sweeper import SweepReport, sweep
from server import graphiql_assets
from server.app import create_app, open_services
from server.auth import issue_token
from server.connection_guard import ConnectionGuard
from server.cors import cors_description
from server.document_files import read_document_files
from server.gc_pacer import GcPacer
from server.http_drain import AnswerCutRequests, drain_on_shutdown
from server.http_head import head_limited_http_protocol
from server.log_format import configure_logging
from server.metrics import Metrics
from server.metrics_http import MetricsServer, MetricsServerError
from server.settings import (
    JSON,
    ConnectionLimits,
    HttpLimits,
    Settings,
    SettingsError,
    TracingConfig,
    WebSocketConfig,
)
from server.shutdown import Draining
from server.uvicorn_logs import demote_client_faults
from server.websocket import SOCKETS
from storage import persisted_documents
from storage.database import create_pool
from storage.errors import StorageError
from storage.migrate import migrate
from storage.persisted_documents import PersistedDocument

logger = logging.getLogger("portraits")

DEV_TOKEN_TTL = timedelta(days=7)
# On SIGTERM, how long the websockets' goodbyes (SERVICE_UNAVAILABLE, then 1012) may take before uvicorn closes them,
# and then the backlog's. Both come out of SHUTDOWN_GRACE_SECONDS (``http_drain_seconds``), so requests in flight
# end within the grace counted from the signal, as running jobs do, and a stop stays within Docker's 10 s.
SOCKET_GOODBYE_SECONDS = 1.0
# On SIGTERM, how long connections already waiting in the listening socket's backlog may take to be accepted.
BACKLOG_DRAIN_SECONDS = 1.0
DEV_USER_FILE = "dev-user-id"


def http_drain_seconds(grace_seconds: int) -> int:
    """uvicorn's own graceful-shutdown timeout: the grace less the goodbyes and the backlog before it (at least 1 s)."""
    return max(1, grace_seconds - math.ceil(SOCKET_GOODBYE_SECONDS + BACKLOG_DRAIN_SECONDS))


@dataclass(frozen=True, slots=True)
class Database:
    url: str
    description: str
    # The embedded PostgreSQL's watcher (None with DATABASE_URL): `serve` starts it to restart a server that dies.
    supervisor: EmbeddedSupervisor | None = None


@contextmanager
def open_database(settings: Settings) -> Iterator[Database]:
    """DATABASE_URL when set; otherwise the embedded PostgreSQL under the data folder, stopped on exit."""
    if settings.database_url is not None:
        yield Database(url=settings.database_url, description="DATABASE_URL")
        return
    embedded = EmbeddedPostgres(settings.data_dir)
    server = embedded.start()
    supervisor = EmbeddedSupervisor(embedded, settings.embedded_restarts)
    try:
        yield Database(
            url=server.dsn,
            description=f"embedded PostgreSQL {server.version} in {embedded.pgdata}",
            supervisor=supervisor,
        )
    finally:
        supervisor.close()
        logger.info("embedded PostgreSQL stopped")


@contextmanager
def tracing(config: TracingConfig) -> Iterator[None]:
    """OpenTelemetry for this process when an OTLP endpoint is set; the last spans are flushed on the way out."""
    if not config.enabled:
        yield
        return
    # Imported only when on: the SDK and the exporter cost ~0.4 s and ~8 MB to import (server/tracing.py).
    from server.tracing import Tracing

    started = Tracing.start(config)
    try:
        yield
    finally:
        started.shutdown()


class PortraitsServer(uvicorn.Server):
    """uvicorn's server, printing where to go once the socket is really bound, with paced garbage collection.

    Its shutdown runs the app's draining steps (server/shutdown.py) before
    uvicorn's own: subscribers get SERVICE_UNAVAILABLE and 1012, the workers
    begin winding down, and connections the kernel has accepted are taken in
    (and answered) before the listening socket closes.
    """

    def __init__(self, config: uvicorn.Config, banner: Callable[[], str], draining: Draining | None = None) -> None:
        super().__init__(config)
        self.banner = banner
        self.gc_pacer = GcPacer(SOCKETS)
        self.draining = Draining() if draining is None else draining

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            self.gc_pacer.start()
            print(self.banner(), flush=True)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        logger.info("shutting down: ending subscriptions, finishing requests and jobs")
        await self.draining.begin(timeout=SOCKET_GOODBYE_SECONDS)
        await self.take_in_backlog()
        await self.gc_pacer.stop()
        await super().shutdown(sockets)

    async def take_in_backlog(self) -> None:
        """Let the loop accept the connections the kernel has completed, before uvicorn closes the listening socket.

        Closing it resets every connection still in its backlog, whose clients may have sent their request; the
        loop accepts them a few per turn, so a busy server can hold dozens. Waits while a listening socket has a
        connection pending, at most ``BACKLOG_DRAIN_SECONDS`` (clients that keep connecting must not hold the stop).
        """
        poller = select.poll()
        for server in self.servers:
            for listening in server.sockets:
                poller.register(listening.fileno(), select.POLLIN)
        loop = asyncio.get_running_loop()
        give_up = loop.time() + BACKLOG_DRAIN_SECONDS
        while poller.poll(0) and loop.time() < give_up and not self.force_exit:  # a second Ctrl-C: stop now
            await asyncio.sleep(0.005)
        await asyncio.sleep(0)  # the last accepted connections are made (and so told to shut down below)


def uvicorn_config(
    app: ASGIApp,
    *,
    host: str,
    port: int,
    log_level: str,
    websocket: WebSocketConfig = WebSocketConfig(),
    connections: ConnectionLimits = ConnectionLimits(),
    http: HttpLimits = HttpLimits(),
) -> uvicorn.Config:
    """How `serve` (and the tests' live server) run the app."""
    # uvicorn's own HTTP and websocket protocols, behind the connection cap and deadlines (server/connection_guard.py);
    # HTTP is httptools, as "auto" picks, with the head bound it lacks (server/http_head.py) and an idle connection's
    # request still answered once shutdown begins (server/http_drain.py).
    guard = ConnectionGuard.for_process(connections, http=drain_on_shutdown(head_limited_http_protocol(http)))
    config = uvicorn.Config(
        guard.wrap(AnswerCutRequests(app)),
        http=guard.http_protocol,
        interface="asgi3",  # the guard's middleware is a plain callable returning an awaitable (no frame kept)
        host=host,
        port=port,
        log_level=log_level,
        # Logging is configured once, by the CLI (server/log_format.py), uvicorn's loggers included; uvicorn
        # only sets their levels. (Tests' servers log through pytest's handlers.)
        log_config=None,
        lifespan="on",
        server_header=False,
        timeout_graceful_shutdown=http_drain_seconds(connections.shutdown_grace_seconds),
        h11_max_incomplete_event_size=http.max_head_bytes,  # h11's own head bound (httptools': server/http_head.py)
        # (guarded) uvicorn's own websocket protocol on websockets' sans-io core, the one uvicorn 0.54
        # picks by default: maintained with uvicorn, keepalive pings with a pong deadline
        # (1011), the size limit (1009), 1012 to every open socket on shutdown, 403 for a
        # socket refused before accept. Not "wsproto": that is one more dependency, while
        # websockets is already ours (uvicorn[standard], the tests' client); not
        # "websockets": uvicorn's older implementation on websockets' legacy asyncio server.
        ws=guard.ws_protocol,
        timeout_keep_alive=connections.keep_alive_timeout,
        ws_max_size=websocket.max_message_bytes,
        ws_ping_interval=websocket.ping_interval,
        ws_ping_timeout=websocket.ping_timeout,
        # Off unless WS_PER_MESSAGE_DEFLATE=true: subscription messages are ~100-byte JSON,
        # and zlib state costs tens of KB per socket (bench/subscriptions.py).
        ws_per_message_deflate=websocket.per_message_deflate,
    )
    demote_client_faults()
    return config


def serve(settings: Settings, args: argparse.Namespace) -> int:
    with tracing(settings.tracing), open_database(settings) as database:
        settings = replace(settings, database_url=database.url)
        asyncio.run(migrate(database.url))
        draining = Draining()
        config = uvicorn_config(
            create_app(settings, draining=draining),
            host=settings.host,
            port=settings.port,
            log_level=settings.log_level,
            websocket=settings.websocket,
            connections=settings.connections,
            http=settings.http,
        )
        server = PortraitsServer(config, banner=lambda: _banner(settings, database), draining=draining)
        if database.supervisor is not None:
            # A dead embedded PostgreSQL is started again; past the bound, uvicorn shuts down gracefully
            # (its public flag, checked every tenth of a second) and we exit non-zero below.
            def give_up(message: str) -> None:
                server.should_exit = True

            database.supervisor.start(on_give_up=give_up)
        # uvicorn shuts down gracefully on SIGINT/SIGTERM, then re-raises the signal; these
        # handlers turn it into an exception so the embedded PostgreSQL is stopped in order.
        signal.signal(signal.SIGTERM, _stop_requested)
        signal.signal(signal.SIGINT, _stop_requested)
        with contextlib.suppress(StopRequested):
            server.run()
        if database.supervisor is not None and database.supervisor.failure is not None:
            raise EmbeddedPostgresError(database.supervisor.failure)
        if not server.started:
            return 1
    return 0


class StopRequested(Exception):
    """SIGINT or SIGTERM after uvicorn's graceful shutdown."""


def _stop_requested(signum: int, frame: object) -> None:
    raise StopRequested


def worker_command(settings: Settings, args: argparse.Namespace) -> int:
    """Workers without the HTTP server, to scale generation out; at least one even when WORKERS=0."""
    with tracing(settings.tracing), open_database(settings) as database:
        asyncio.run(migrate(database.url))
        asyncio.run(_run_workers(settings, database, max(settings.generation.workers, 1)))
        if database.supervisor is not None and database.supervisor.failure is not None:
            raise EmbeddedPostgresError(database.supervisor.failure)
    return 0


async def _run_workers(settings: Settings, database: Database, count: int) -> None:
    database_url = database.url
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    metrics = Metrics()  # this process's own registry, served on METRICS_PORT when set
    if database.supervisor is not None:
        # Past the embedded PostgreSQL's restart bound, stop as on SIGTERM; the caller then exits non-zero.
        def give_up(message: str) -> None:
            loop.call_soon_threadsafe(stop.set)

        database.supervisor.start(on_give_up=give_up)
    async with open_services(settings, database_url) as (pool, objects):
        metrics.gauges.pool = pool
        generation = await Generation.start(
            settings.generation, dsn=database_url, pool=pool, objects=objects, workers=count, metrics=metrics
        )
        server = None
        try:
            if settings.metrics.port is not None:
                server = MetricsServer(
                    metrics, host=settings.host, port=settings.metrics.port, token=settings.metrics.token
                )
                server.start()
            concurrency = settings.generation.worker.concurrency
            where = "" if server is None else f"; metrics on http://{settings.host}:{server.port}/metrics"
            print(f"portraits worker: {count} worker(s), {concurrency} job(s) each{where}; Ctrl-C stops", flush=True)
            await stop.wait()
        finally:
            if server is not None:
                server.stop()
            await generation.stop()
            metrics.gauges.pool = None


def sweep_command(settings: Settings, args: argparse.Namespace) -> int:
    with open_database(settings) as database:
        report = asyncio.run(_sweep_once(settings, database.url))
    print(
        f"deleted {report.deleted_assets} expired workspace asset(s) ({report.deleted_objects} objects); "
        f"kept {report.kept_in_use} still shown by a character"
    )
    return 0


async def _sweep_once(settings: Settings, database_url: str) -> SweepReport:
    async with open_services(settings, database_url) as (pool, objects):
        return await sweep(pool, objects, recheck_seconds=settings.generation.pipeline.workspace_ttl_seconds)


def migrate_command(settings: Settings, args: argparse.Namespace) -> int:
    with open_database(settings) as database:
        applied = asyncio.run(migrate(database.url))
    print(f"applied {len(applied)} migration(s)" + "".join(f"\n  {m.version:04d}_{m.name}" for m in applied))
    return 0


def documents_register_command(settings: Settings, args: argparse.Namespace) -> int:
    """Register a client's documents ahead of time (server/document_files.py), all or none; print each."""
    read = read_document_files(args.files, default_schema)
    if read.problems:
        problems = "".join(f"\n  {problem}" for problem in read.problems)
        print(f"portraits: nothing registered:{problems}", file=sys.stderr)
        return 1
    if not read.documents:
        print("portraits: the files hold no documents", file=sys.stderr)
        return 1
    documents = list(read.documents.values())
    with open_database(settings) as database:
        asyncio.run(migrate(database.url))
        newly = asyncio.run(_register_documents(database.url, documents))
    for document, new in zip(documents, newly, strict=True):
        name = document.operation_name or "(unnamed)"
        print(f"{'registered' if new else 'already registered'}  {document.sha256}  {name}")
    print(f"{sum(newly)} new, {len(documents) - sum(newly)} already registered, {len(documents)} in all")
    return 0


async def _register_documents(database_url: str, documents: list[PersistedDocument]) -> list[bool]:
    pool = await create_pool(database_url, max_size=1)
    try:
        async with pool.acquire() as connection:
            return await persisted_documents.register(connection, documents)
    finally:
        await pool.close()


def token_command(settings: Settings, args: argparse.Namespace) -> int:
    if settings.jwt_secret is None:  # production with a JWKS only: tokens come from its issuer
        print("portraits token signs HS256 tokens with JWT_SECRET, which is not set", file=sys.stderr)
        return 2
    print(issue_token(settings.jwt_secret, args.user, ttl=timedelta(seconds=args.ttl)))
    return 0


def _banner(settings: Settings, database: Database) -> str:
    lines = [
        "",
        "Portraits is ready.",
        f"  GraphiQL   {settings.public_url}/graphql" + ("" if settings.graphiql else " (GraphiQL off)"),
    ]
    if settings.graphiql:
        lines.append(f"             {graphiql_assets.describe(settings.graphiql_assets)}")
    lines += [
        f"  Database   {database.description}",
        f"  Objects    {_objects_description(settings)}",
        f"  Tracing    {_tracing_description(settings.tracing)}",
        f"  CORS       {cors_description(settings.cors_allowed_origins)}",
    ]
    if not settings.is_production and settings.jwt_secret is not None:  # (development always has one)
        user_id = _dev_user_id(settings.data_dir)
        token = issue_token(settings.jwt_secret, user_id, ttl=DEV_TOKEN_TTL)
        lines += [
            f"  Dev user   {user_id}",
            "  Dev token  (valid 7 days; paste into GraphiQL's Headers tab)",
            f'  {{"Authorization": "Bearer {token}"}}',
        ]
    lines += ["Press Ctrl-C to stop.", ""]
    return "\n".join(lines)


def _objects_description(settings: Settings) -> str:
    s3 = settings.objects.s3
    if s3 is None:
        return f"local folder {settings.objects.local_root}"
    where = s3.endpoint_url or f"AWS S3 ({s3.region})"
    return f"S3 at {where}" + (f", buckets prefixed {s3.bucket_prefix!r}" if s3.bucket_prefix else "")


def _tracing_description(config: TracingConfig) -> str:
    if config.traces_endpoint is None:
        return "off (set OTEL_EXPORTER_OTLP_ENDPOINT to export spans)"
    return f"OTLP/HTTP to {config.traces_endpoint} as {config.service_name!r}"


def _dev_user_id(data_dir: Path) -> uuid.UUID:
    """One development user per data folder, so the printed token sees the same characters each run."""
    path = data_dir / DEV_USER_FILE
    try:
        return uuid.UUID(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        user_id = uuid.uuid4()
        data_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{user_id}\n")
        return user_id


def _positive_int(raw: str) -> int:
    value = int(raw)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be a positive number of seconds")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="portraits", description="GraphQL backend for AI character portraits.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="apply migrations and serve the GraphQL API").set_defaults(run=serve)
    worker = commands.add_parser("worker", help="run generation workers only (scale-out; WORKERS of them, at least 1)")
    worker.set_defaults(run=worker_command)
    sweep_parser = commands.add_parser("sweep", help="delete expired workspace-temp images once and exit")
    sweep_parser.set_defaults(run=sweep_command)
    commands.add_parser("migrate", help="apply database migrations and exit").set_defaults(run=migrate_command)
    token = commands.add_parser("token", help="print a bearer token for a user (development and tests)")
    token.add_argument("--user", required=True, type=uuid.UUID, help="the user's UUID (the token's sub)")
    token.add_argument("--ttl", type=_positive_int, default=3600, help="lifetime in seconds (default 3600)")
    token.set_defaults(run=token_command)
    documents = commands.add_parser("documents", help="persisted documents (PERSISTED_DOCUMENTS)")
    documents_commands = documents.add_subparsers(dest="documents_command", required=True)
    register = documents_commands.add_parser(
        "register",
        help="register documents ahead of time from a client's build output (Apollo's persisted query manifest, "
        "a JSON object of hash -> document, .graphql files)",
    )
    register.add_argument("files", nargs="+", type=Path, metavar="FILE")
    register.set_defaults(run=documents_register_command)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_environ()
    except SettingsError as error:
        print(f"portraits: {error}", file=sys.stderr)
        return 2
    configure_logging(settings)
    try:
        return int(args.run(settings, args))
    except (EmbeddedPostgresError, StorageError, MetricsServerError) as error:
        if settings.log_format == JSON:
            logger.critical("%s", error)  # stderr holds JSON lines only
        else:
            print(f"portraits: {error}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, StopRequested):
        return 0


if __name__ == "__main__":
    sys.exit(main())
