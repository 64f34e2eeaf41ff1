"""Settings, read once from the environment at start and passed down.

Nothing else in the code base reads ``os.environ``: the CLI calls
``Settings.from_environ`` once and hands the result to whatever it starts.
Every variable is listed, with its default, in the README's settings table.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from devtools.embedded_supervisor import RestartPolicy
from pipeline.address_policy import AddressPolicy
from pipeline.generation import PipelineConfig
from pipeline.providers.fal import FalConfig
from pipeline.providers.replicate import API_URL as REPLICATE_API_URL
from pipeline.providers.replicate import ReplicateConfig
from pipeline.service import GenerationSettings
from pipeline.worker import WorkerConfig
from realtime.event_hub import REDIS_SCHEMES
from resolvers.jobs import JobPolicy
from resolvers.subscriptions import SubscriptionLimits
from server import cors
from server.auth import AUDIENCE, TokenSettings
from server.graphiql_assets import DEFAULT_ASSETS_DIR
from server.jwks import JwksConfig, JwksError, read_jwks_file
from server.webhook_standard import decode_secret
from server.webhooks import FAL_PATH, REPLICATE_PATH, WebhookSettings
from storage.objects.config import LOCAL, S3, ObjectStoreConfig
from storage.objects.paths import Bucket
from storage.objects.s3 import S3Config
from storage.objects.signing import DEFAULT_TTL_SECONDS, DEFAULT_WINDOW_RATIO, SigningPolicy
from storage.objects.sigv4 import MAX_EXPIRES_SECONDS

DEVELOPMENT = "development"
# LOG_FORMAT: "text" (what `make run` prints) or "json" (one object per line: server/log_format.py).
TEXT = "text"
JSON = "json"
LOG_FORMATS = (TEXT, JSON)
PRODUCTION = "production"

# A production secret must at least match what Supabase issues (40+ chars).
MIN_PRODUCTION_SECRET_LENGTH = 32
DEV_SECRET_FILE = "jwt-secret"
# MAX_REQUEST_BODY_BYTES's default, which a websocket message's cap follows (WebSocketConfig.max_message_bytes).
DEFAULT_MAX_BODY_BYTES = 2 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class WebSocketConfig:
    """How uvicorn serves websockets (README: Limits).

    Compression is a setting (WS_PER_MESSAGE_DEFLATE) and the message cap is the HTTP body cap
    (MAX_REQUEST_BODY_BYTES); the rest are fixed, and tests shorten them.
    """

    # Off by default: subscription messages are ~100-byte JSON and zlib state costs tens of KB per socket.
    per_message_deflate: bool = False
    # The server pings this often and closes (1011) a socket whose pong is this late.
    ping_interval: float = 20.0
    ping_timeout: float = 20.0
    # A larger message from a client closes its socket with 1009: the HTTP body cap (MAX_REQUEST_BODY_BYTES).
    max_message_bytes: int = DEFAULT_MAX_BODY_BYTES


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """Bounds on connections and websockets that one client could otherwise exhaust (README: Limits)."""

    # Open connections (HTTP and websocket) per process; more are answered 503. One process holds 10,000 idle
    # subscribers (bench/subscriptions.py); RLIMIT_NOFILE is raised to fit at start (server/connection_guard.py).
    max_connections: int = 10_000
    # A connection must send a request's headers within this many seconds of opening (or of the request's first
    # byte after the previous response), else it is closed: slow-header clients hold nothing for long.
    header_timeout: float = 10.0
    # uvicorn's own (whole seconds): an idle keep-alive connection is closed this long after its last response.
    keep_alive_timeout: int = 5
    # A websocket peer that keeps sending while more than this much of ours waits unread is aborted.
    ws_max_unread_bytes: int = 1024 * 1024
    # Open GraphQL websockets per user (a browser tab holds one) and per client address (users behind one NAT).
    websockets_per_user: int = 20
    websockets_per_address: int = 200
    # On SIGTERM: how long requests in flight may take to finish (uvicorn's timeout_graceful_shutdown) and, at the
    # same time, running jobs of the process's workers before they are handed back; within Docker's 10 s.
    shutdown_grace_seconds: int = 8


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """Bounds on one HTTP request, checked before any GraphQL work (README: Limits).

    GraphQL clients send a document and its variables, never uploads: the
    largest legal request (2000 tokens, a 4000-character description, a
    16 KiB ``sceneBehaviorRules``) is well under 100 KB.
    """

    # A larger body is answered 413 as soon as it passes this (at once when Content-Length says so).
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    # A body must arrive whole within this many seconds of its request's headers, else 408 and the connection
    # closed: a client dripping its body holds neither its connection nor the bytes it sent for long.
    body_timeout: float = 30.0
    # Request-body bytes this process holds at once, over all requests (received, not yet answered); a request
    # whose body would pass it is answered 503 and closed, so bodies in flight take bounded memory whatever the
    # number of connections (32 bodies at the default cap).
    max_buffered_body_bytes: int = 64 * 1024 * 1024
    # A longer query string (a GET's document and variables) is answered 414.
    max_query_string_bytes: int = 8 * 1024
    # The request line and headers together; larger is answered 414 (a long URL) or 431 and the connection closed.
    max_head_bytes: int = 32 * 1024


@dataclass(frozen=True, slots=True)
class MetricsSettings:
    """Who may read the Prometheus metrics, and where a ``portraits worker`` serves them (README: Operations)."""

    # None: /metrics is public (it holds no user data); else scrapes must send 'Authorization: Bearer <token>'.
    token: str | None = None
    # `portraits worker` only: the port its metrics server listens on (on HOST); None: no metrics server.
    # `serve` exposes its in-process workers' metrics on /metrics and ignores it.
    port: int | None = None


# A METRICS_TOKEN goes in a header: visible ASCII, no spaces, and long enough not to be guessed.
MIN_METRICS_TOKEN_LENGTH = 16


# OTEL_SERVICE_NAME's default: the service.name of every span this process exports.
DEFAULT_SERVICE_NAME = "portraits"


@dataclass(frozen=True, slots=True)
class TracingConfig:
    """OpenTelemetry tracing (server/tracing.py): on only when an OTLP endpoint is set (README: Tracing).

    Only the switch, the endpoint and the service name are read here; the SDK and its exporter read the other
    standard OTEL_* variables themselves when tracing starts (headers, timeout, compression, sampler, batching,
    resource attributes).
    """

    # Where spans are POSTed (OTLP over HTTP/protobuf): OTEL_EXPORTER_OTLP_TRACES_ENDPOINT as given, else
    # OTEL_EXPORTER_OTLP_ENDPOINT + /v1/traces, as the OTLP exporter spec composes them. None: tracing is off.
    traces_endpoint: str | None = None
    service_name: str = DEFAULT_SERVICE_NAME

    @property
    def enabled(self) -> bool:
        return self.traces_endpoint is not None


# PERSISTED_DOCUMENTS (server/persisted_queries.py): Apollo's automatic persisted queries, registered documents only,
# or no persisted queries at all.
PERSISTED_AUTOMATIC = "automatic"
PERSISTED_REGISTERED = "registered"
PERSISTED_OFF = "off"
PERSISTED_MODES = (PERSISTED_AUTOMATIC, PERSISTED_REGISTERED, PERSISTED_OFF)


@dataclass(frozen=True, slots=True)
class PersistedDocumentsConfig:
    """Persisted queries (README: Persisted queries): which documents run, and how many automatic ones are kept."""

    mode: str = PERSISTED_AUTOMATIC
    # Documents clients registered by hash and text, kept in the database; past this the least recently used go.
    # At most 10,000 characters each (the schema's cached-document bound), so at most ~20 MB.
    max_count: int = 2000


class SettingsError(Exception):
    """A setting is missing or malformed; the message says which and how to fix it."""


@dataclass(frozen=True, slots=True)
class Settings:
    environment: str
    data_dir: Path
    database_url: str | None
    # HS256 tokens' secret, and the key of the local object store's signed URLs; None only in production with a JWKS
    # and S3 (then HS256 tokens are refused).
    jwt_secret: str | None
    # What a bearer token must say, and where RS256/ES256 keys come from (JWT_AUDIENCE, JWT_ISSUER, JWT_JWKS_*).
    tokens: TokenSettings
    host: str
    port: int
    public_url: str
    log_level: str
    log_format: str
    database_pool_size: int
    graphiql: bool
    objects: ObjectStoreConfig
    signing: SigningPolicy
    generation: GenerationSettings
    job_policy: JobPolicy
    # None: fan-out on our PostgreSQL LISTEN/NOTIFY backend; redis://...: our Redis pub/sub backend
    # (both under broadcaster).
    broadcast_url: str | None
    subscription_limits: SubscriptionLimits
    websocket: WebSocketConfig
    connections: ConnectionLimits
    http: HttpLimits
    tracing: TracingConfig
    # How often `serve` starts its embedded PostgreSQL again before it gives up and exits (no DATABASE_URL only).
    embedded_restarts: RestartPolicy
    metrics: MetricsSettings = MetricsSettings()
    persisted_documents: PersistedDocumentsConfig = PersistedDocumentsConfig()
    # GraphiQL's scripts and styles, an npm node_modules layout (server/graphiql_assets.py); CDN page when missing.
    graphiql_assets: Path = DEFAULT_ASSETS_DIR
    # Browser origins allowed to call /graphql, load signed objects and open websockets (server/cors.py).
    cors_allowed_origins: tuple[str, ...] = ()
    # How long a shared cache (a CDN) may keep a GET answer without a token or errors (server/http_caching.py).
    public_get_max_age_seconds: int = 60
    # PROVIDER_WEBHOOKS and their verification (server/webhooks.py); off by default.
    webhooks: WebhookSettings = field(default_factory=WebhookSettings)
    # EXECUTION_PLANS: operations executed by compiled plans (graph/plans/); off: graphql-core executes them all.
    execution_plans: bool = True
    # ... with their objects' code generated (graph/plans/generate.py); EXECUTION_PLANS=closures: closures only.
    generated_plans: bool = True

    @property
    def is_production(self) -> bool:
        return self.environment == PRODUCTION

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``environ`` (``os.environ`` by default), creating dev secrets on first use."""
        env = os.environ if environ is None else environ
        environment = env.get("PORTRAITS_ENV", DEVELOPMENT).strip().lower()
        if environment not in (DEVELOPMENT, PRODUCTION):
            raise SettingsError(f"PORTRAITS_ENV must be 'development' or 'production', not {environment!r}")
        data_dir = Path(env.get("PORTRAITS_DATA_DIR", ".portraits")).expanduser().absolute()
        database_url = env.get("DATABASE_URL") or None
        host = env.get("HOST", "127.0.0.1")
        port = _int_setting(env, "PORT", 8000, minimum=0, maximum=65535)
        log_level = env.get("LOG_LEVEL", "info").lower()
        if log_level not in ("critical", "error", "warning", "info", "debug"):
            raise SettingsError(f"LOG_LEVEL must be one of critical, error, warning, info, debug; not {log_level!r}")
        log_format = (env.get("LOG_FORMAT") or TEXT).strip().lower()
        if log_format not in LOG_FORMATS:
            raise SettingsError(f"LOG_FORMAT must be 'text' or 'json', not {log_format!r}")

        jwt_secret = env.get("JWT_SECRET") or None
        tokens = _token_settings(env, production=environment == PRODUCTION)
        if environment == PRODUCTION:
            if jwt_secret is None and tokens.jwks is None:
                raise SettingsError(
                    "PORTRAITS_ENV=production needs JWT_SECRET (your Supabase project's JWT secret) "
                    "or JWT_JWKS_URL / JWT_JWKS_FILE (its signing keys)"
                )
            if jwt_secret is not None and len(jwt_secret) < MIN_PRODUCTION_SECRET_LENGTH:
                raise SettingsError(
                    f"JWT_SECRET must be at least {MIN_PRODUCTION_SECRET_LENGTH} characters in production"
                )
            if database_url is None:
                raise SettingsError(
                    "PORTRAITS_ENV=production needs DATABASE_URL; the embedded PostgreSQL is for development"
                )
        if jwt_secret is None and environment != PRODUCTION:
            jwt_secret = load_or_create_dev_secret(data_dir)

        connections = _connection_limits(env)
        public_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        public_url = env.get("PUBLIC_URL") or f"http://{public_host}:{port}"
        webhooks = _webhook_settings(env, public_url=public_url, production=environment == PRODUCTION)
        generation = _generation_settings(
            env, shutdown_grace_seconds=connections.shutdown_grace_seconds, webhooks=webhooks
        )
        http = _http_limits(env)
        return cls(
            environment=environment,
            data_dir=data_dir,
            database_url=database_url,
            jwt_secret=jwt_secret,
            tokens=tokens,
            host=host,
            port=port,
            public_url=public_url.rstrip("/"),
            log_level=log_level,
            log_format=log_format,
            database_pool_size=_int_setting(env, "DATABASE_POOL_SIZE", 10, minimum=1, maximum=500),
            graphiql=_bool_setting(env, "GRAPHIQL", True),
            objects=_object_store_config(env, data_dir=data_dir, public_url=public_url.rstrip("/"), secret=jwt_secret),
            signing=_signing_policy(env),
            generation=generation,
            job_policy=JobPolicy(
                max_active_per_user=_int_setting(env, "MAX_ACTIVE_JOBS_PER_USER", 10, minimum=1, maximum=10_000),
                max_attempts=_int_setting(env, "JOB_MAX_ATTEMPTS", 3, minimum=1, maximum=20),
                providers=generation.provider_names,
            ),
            broadcast_url=_broadcast_url(env),
            subscription_limits=SubscriptionLimits(
                max_pending=_int_setting(env, "SUBSCRIPTION_MAX_PENDING", 256, minimum=1, maximum=100_000),
                max_lag_seconds=_float_setting(env, "SUBSCRIPTION_MAX_LAG_SECONDS", 60, minimum=0.1, maximum=3600),
                max_per_user=_int_setting(env, "MAX_SUBSCRIPTIONS_PER_USER", 100, minimum=1, maximum=1_000_000),
            ),
            websocket=WebSocketConfig(
                per_message_deflate=_bool_setting(env, "WS_PER_MESSAGE_DEFLATE", False),
                max_message_bytes=http.max_body_bytes,
            ),
            connections=connections,
            http=http,
            tracing=_tracing(env),
            embedded_restarts=RestartPolicy(
                max_restarts=_int_setting(env, "EMBEDDED_POSTGRES_MAX_RESTARTS", 5, minimum=0, maximum=1000),
                window_seconds=_float_setting(
                    env, "EMBEDDED_POSTGRES_RESTART_WINDOW_SECONDS", 300, minimum=1, maximum=24 * 3600
                ),
            ),
            metrics=_metrics_settings(env),
            persisted_documents=_persisted_documents(env),
            graphiql_assets=Path(env.get("GRAPHIQL_ASSETS_DIR") or DEFAULT_ASSETS_DIR).expanduser().absolute(),
            cors_allowed_origins=_cors_allowed_origins(env, environment),
            public_get_max_age_seconds=_int_setting(
                env, "PUBLIC_GET_MAX_AGE_SECONDS", 60, minimum=0, maximum=24 * 3600
            ),
            webhooks=webhooks,
            execution_plans=_execution_plans(env) != "off",
            generated_plans=_execution_plans(env) == "on",
        )


def load_or_create_dev_secret(data_dir: Path) -> str:
    """A development JWT secret made once and kept, so tokens survive restarts."""
    path = data_dir / DEV_SECRET_FILE
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        secret = path.read_text().strip()
        if not secret:
            raise SettingsError(f"{path} is empty; delete it to have a new development secret made") from None
        return secret
    secret = secrets.token_urlsafe(48)
    with os.fdopen(fd, "w") as handle:
        handle.write(secret + "\n")
    logging.getLogger(__name__).info("created a development JWT secret in %s", path)
    return secret


def _object_store_config(
    env: Mapping[str, str], *, data_dir: Path, public_url: str, secret: str | None
) -> ObjectStoreConfig:
    """Local folder unless S3_ENDPOINT_URL (or OBJECT_STORE=s3, for AWS itself) says S3."""
    endpoint_url = env.get("S3_ENDPOINT_URL") or None
    backend = (env.get("OBJECT_STORE") or (S3 if endpoint_url else LOCAL)).strip().lower()
    if backend not in (LOCAL, S3):
        raise SettingsError(f"OBJECT_STORE must be 'local' or 's3', not {backend!r}")
    s3 = None
    if backend == S3:
        access_key = env.get("AWS_ACCESS_KEY_ID") or None
        secret_key = env.get("AWS_SECRET_ACCESS_KEY") or None
        if (access_key is None) != (secret_key is None):
            raise SettingsError(
                "set both AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or neither (to use a profile or role)"
            )
        path_style = env.get("S3_FORCE_PATH_STYLE")
        s3 = S3Config(
            endpoint_url=endpoint_url.rstrip("/") if endpoint_url else None,
            region=env.get("S3_REGION") or env.get("AWS_REGION") or "us-east-1",
            bucket_prefix=env.get("S3_BUCKET_PREFIX", ""),
            path_style=None if not path_style else _bool_setting(env, "S3_FORCE_PATH_STYLE", False),
            access_key_id=access_key,
            secret_access_key=secret_key,
            session_token=env.get("AWS_SESSION_TOKEN") or None,
        )
    if backend == LOCAL and secret is None:  # production only: development always has a secret
        raise SettingsError(
            "PORTRAITS_ENV=production with the local object store needs JWT_SECRET: it keys the local signed URLs "
            "(or store objects on S3)"
        )
    local_root = Path(env.get("OBJECTS_DIR") or data_dir / "objects").expanduser().absolute()
    return ObjectStoreConfig(
        backend=backend, local_root=local_root, public_url=public_url, signing_secret=secret, s3=s3
    )


def _token_settings(env: Mapping[str, str], *, production: bool) -> TokenSettings:
    """JWT_AUDIENCE, JWT_ISSUER, and the JWKS: JWT_JWKS_URL (fetched; https in production) or JWT_JWKS_FILE."""
    audience = (env.get("JWT_AUDIENCE") or "").strip() or AUDIENCE
    issuer = (env.get("JWT_ISSUER") or "").strip() or None
    url = (env.get("JWT_JWKS_URL") or "").strip() or None
    file = (env.get("JWT_JWKS_FILE") or "").strip() or None
    if url is not None and file is not None:
        raise SettingsError("set JWT_JWKS_URL or JWT_JWKS_FILE, not both")
    defaults = JwksConfig()
    cache_seconds = _float_setting(
        env, "JWT_JWKS_CACHE_SECONDS", defaults.cache_seconds, minimum=1, maximum=24 * 3600
    )
    min_refresh_seconds = _float_setting(
        env, "JWT_JWKS_MIN_REFRESH_SECONDS", defaults.min_refresh_seconds, minimum=0.1, maximum=3600
    )
    jwks = None
    if url is not None:
        parsed = urlparse(url)
        schemes = ("https",) if production else ("https", "http")
        if parsed.scheme not in schemes or not parsed.hostname:
            raise SettingsError(
                f"JWT_JWKS_URL must be an {' or '.join(f'{s}://' for s in schemes)} URL, not {url!r}"
                + (" (production fetches signing keys over TLS only)" if production else "")
            )
        jwks = JwksConfig(url=url, cache_seconds=cache_seconds, min_refresh_seconds=min_refresh_seconds)
    elif file is not None:
        try:
            jwks = JwksConfig(keys=read_jwks_file(Path(file).expanduser()))
        except JwksError as error:
            raise SettingsError(f"JWT_JWKS_FILE: {error}") from None
    return TokenSettings(audience=audience, issuer=issuer, jwks=jwks)


def _signing_policy(env: Mapping[str, str]) -> SigningPolicy:
    week = MAX_EXPIRES_SECONDS  # SigningPolicy checks TTL plus window against it too
    ttls = {
        Bucket.USER_LIBRARY: _int_setting(
            env, "SIGNED_URL_TTL_USER_LIBRARY", DEFAULT_TTL_SECONDS[Bucket.USER_LIBRARY], minimum=1, maximum=week
        ),
        Bucket.WORKSPACE_TEMP: _int_setting(
            env, "SIGNED_URL_TTL_WORKSPACE_TEMP", DEFAULT_TTL_SECONDS[Bucket.WORKSPACE_TEMP], minimum=1, maximum=week
        ),
    }
    raw_ratio = env.get("SIGNED_URL_WINDOW_RATIO") or str(DEFAULT_WINDOW_RATIO)
    try:
        ratio = float(raw_ratio)
    except ValueError:
        raise SettingsError(f"SIGNED_URL_WINDOW_RATIO must be a number, not {raw_ratio!r}") from None
    try:
        return SigningPolicy(ttl_seconds=ttls, window_ratio=ratio)
    except ValueError as error:
        raise SettingsError(f"signed URL settings: {error}") from None


def _webhook_settings(env: Mapping[str, str], *, public_url: str, production: bool) -> WebhookSettings:
    """PROVIDER_WEBHOOKS=on needs a PUBLIC_URL the providers can call: https in production, any http(s) else."""
    defaults = WebhookSettings()
    enabled = _bool_setting(env, "PROVIDER_WEBHOOKS", False)
    secret = (env.get("REPLICATE_WEBHOOK_SECRET") or "").strip() or None
    if secret is not None:
        try:
            decode_secret(secret)
        except ValueError as error:
            raise SettingsError(f"REPLICATE_WEBHOOK_SECRET: {error}") from None
    jwks_url = (env.get("FAL_WEBHOOK_JWKS_URL") or "").strip() or defaults.fal_jwks_url
    if enabled:
        schemes = ("https",) if production else ("https", "http")
        for name, url in (("PUBLIC_URL", public_url), ("FAL_WEBHOOK_JWKS_URL", jwks_url)):
            parsed = urlparse(url)
            if parsed.scheme not in schemes or not parsed.hostname:
                raise SettingsError(
                    f"PROVIDER_WEBHOOKS=on needs {name} to be an {' or '.join(f'{s}://' for s in schemes)} URL, "
                    f"not {url!r}" + (" (providers call back over TLS only in production)" if production else "")
                )
    return WebhookSettings(
        enabled=enabled,
        public_url=public_url.rstrip("/"),
        fal_jwks_url=jwks_url,
        fal_jwks_min_refresh_seconds=_float_setting(
            env, "FAL_WEBHOOK_JWKS_MIN_REFRESH_SECONDS", defaults.fal_jwks_min_refresh_seconds,
            minimum=0.1, maximum=24 * 3600,
        ),
        replicate_secret=secret,
        tolerance_seconds=_float_setting(
            env, "PROVIDER_WEBHOOK_TOLERANCE_SECONDS", defaults.tolerance_seconds, minimum=1, maximum=3600
        ),
        max_body_bytes=_int_setting(
            env, "PROVIDER_WEBHOOK_MAX_BODY_BYTES", defaults.max_body_bytes, minimum=1024, maximum=16 * 1024 * 1024
        ),
        poll_factor=_float_setting(env, "PROVIDER_WEBHOOK_POLL_FACTOR", defaults.poll_factor, minimum=1, maximum=100),
    )


def _generation_settings(
    env: Mapping[str, str], *, shutdown_grace_seconds: float, webhooks: WebhookSettings
) -> GenerationSettings:
    """Workers, providers and the pipeline's bounds; fal.ai only when FAL_KEY is set, Replicate only with
    REPLICATE_API_TOKEN."""
    fal_key = env.get("FAL_KEY") or None
    fal = None
    if fal_key is not None:
        fal = FalConfig(
            key=fal_key,
            queue_url=(env.get("FAL_QUEUE_URL") or "https://queue.fal.run").rstrip("/"),
            poll_interval=_float_setting(env, "FAL_POLL_SECONDS", 1.0, minimum=0.01, maximum=60),
            timeout=_float_setting(env, "FAL_TIMEOUT_SECONDS", 600, minimum=1, maximum=24 * 3600),
            webhook_url=webhooks.url(FAL_PATH),
            webhook_poll_factor=webhooks.poll_factor,
        )
    replicate_token = env.get("REPLICATE_API_TOKEN") or None
    replicate = None
    if replicate_token is not None:
        replicate = ReplicateConfig(
            token=replicate_token,
            api_url=(env.get("REPLICATE_API_URL") or REPLICATE_API_URL).rstrip("/"),
            poll_interval=_float_setting(env, "REPLICATE_POLL_SECONDS", 1.0, minimum=0.01, maximum=60),
            timeout=_float_setting(env, "REPLICATE_TIMEOUT_SECONDS", 600, minimum=1, maximum=24 * 3600),
            webhook_url=webhooks.url(REPLICATE_PATH),
            webhook_poll_factor=webhooks.poll_factor,
        )
        if webhooks.enabled and webhooks.replicate_secret is None:
            raise SettingsError(
                "PROVIDER_WEBHOOKS=on with REPLICATE_API_TOKEN needs REPLICATE_WEBHOOK_SECRET (Replicate's signing "
                "secret, whsec_...): without it /webhooks/replicate could verify nothing"
            )
    size = _int_setting(env, "IMAGE_SIZE", 1024, minimum=64, maximum=4096)
    return GenerationSettings(
        workers=_int_setting(env, "WORKERS", 1, minimum=0, maximum=64),
        worker=WorkerConfig(
            concurrency=_int_setting(env, "WORKER_CONCURRENCY", 4, minimum=1, maximum=256),
            lease_seconds=_float_setting(env, "JOB_LEASE_SECONDS", 30, minimum=3, maximum=3600),
            poll_seconds=_float_setting(env, "WORKER_POLL_SECONDS", 5, minimum=0.05, maximum=300),
            retry_base_seconds=_float_setting(env, "JOB_RETRY_BASE_SECONDS", 2, minimum=0, maximum=3600),
            sweep_interval_seconds=_float_setting(env, "SWEEP_INTERVAL_SECONDS", 600, minimum=0, maximum=7 * 24 * 3600),
            shutdown_grace_seconds=shutdown_grace_seconds,
        ),
        pipeline=PipelineConfig(
            image_width=size,
            image_height=size,
            thumbnail_max_side=_int_setting(env, "THUMBNAIL_MAX_SIDE", 256, minimum=16, maximum=2048),
            workspace_ttl_seconds=_float_setting(
                env, "WORKSPACE_TTL_SECONDS", 24 * 3600, minimum=1, maximum=90 * 24 * 3600
            ),
            download_addresses=_download_addresses(env),
            reference_url_ttl_seconds=_int_setting(env, "REFERENCE_URL_TTL_SECONDS", 900, minimum=60, maximum=86400),
        ),
        fal=fal,
        replicate=replicate,
        local_latency_seconds=_float_setting(env, "LOCAL_RENDER_LATENCY_MS", 0, minimum=0, maximum=600_000) / 1000,
    )


def _download_addresses(env: Mapping[str, str]) -> AddressPolicy:
    """DOWNLOAD_ALLOW_NETWORKS: comma-separated addresses or CIDR networks downloads may reach besides public ones."""
    raw = env.get("DOWNLOAD_ALLOW_NETWORKS") or ""
    try:
        return AddressPolicy.allowing(part for part in raw.split(",") if part.strip())
    except ValueError as error:
        raise SettingsError(f"DOWNLOAD_ALLOW_NETWORKS: {error}") from None


def _connection_limits(env: Mapping[str, str]) -> ConnectionLimits:
    default = ConnectionLimits()
    return ConnectionLimits(
        max_connections=_int_setting(env, "MAX_CONNECTIONS", default.max_connections, minimum=1, maximum=1_000_000),
        header_timeout=_float_setting(
            env, "HEADER_TIMEOUT_SECONDS", default.header_timeout, minimum=0.1, maximum=3600
        ),
        keep_alive_timeout=_int_setting(
            env, "KEEP_ALIVE_TIMEOUT_SECONDS", default.keep_alive_timeout, minimum=1, maximum=3600
        ),
        ws_max_unread_bytes=_int_setting(
            env, "WS_MAX_UNREAD_BYTES", default.ws_max_unread_bytes, minimum=64 * 1024, maximum=1024**3
        ),
        shutdown_grace_seconds=_int_setting(
            env, "SHUTDOWN_GRACE_SECONDS", default.shutdown_grace_seconds, minimum=1, maximum=3600
        ),
        websockets_per_user=_int_setting(
            env, "MAX_WEBSOCKETS_PER_USER", default.websockets_per_user, minimum=1, maximum=1_000_000
        ),
        websockets_per_address=_int_setting(
            env, "MAX_WEBSOCKETS_PER_ADDRESS", default.websockets_per_address, minimum=1, maximum=1_000_000
        ),
    )


def _http_limits(env: Mapping[str, str]) -> HttpLimits:
    defaults = HttpLimits()
    query_string = _int_setting(
        env, "MAX_QUERY_STRING_BYTES", defaults.max_query_string_bytes, minimum=256, maximum=1024 * 1024
    )
    head = _int_setting(env, "MAX_REQUEST_HEAD_BYTES", defaults.max_head_bytes, minimum=1024, maximum=1024 * 1024)
    if head < query_string + 1024:
        raise SettingsError(
            f"MAX_REQUEST_HEAD_BYTES ({head}) must exceed MAX_QUERY_STRING_BYTES ({query_string}) by at least 1024, "
            "or a query string under its cap could never arrive"
        )
    body = _int_setting(
        env, "MAX_REQUEST_BODY_BYTES", defaults.max_body_bytes, minimum=1024, maximum=1024 * 1024 * 1024
    )
    buffered = _int_setting(
        env, "MAX_BUFFERED_BODY_BYTES", defaults.max_buffered_body_bytes, minimum=1024, maximum=1024**4
    )
    if buffered < body:
        raise SettingsError(
            f"MAX_BUFFERED_BODY_BYTES ({buffered}) must be at least MAX_REQUEST_BODY_BYTES ({body}), "
            "or a body under its cap could never be held"
        )
    return HttpLimits(
        max_body_bytes=body,
        body_timeout=_float_setting(env, "BODY_TIMEOUT_SECONDS", defaults.body_timeout, minimum=0.1, maximum=3600),
        max_buffered_body_bytes=buffered,
        max_query_string_bytes=query_string,
        max_head_bytes=head,
    )


def _metrics_settings(env: Mapping[str, str]) -> MetricsSettings:
    token = env.get("METRICS_TOKEN") or None
    if token is not None and (
        len(token) < MIN_METRICS_TOKEN_LENGTH or not all("!" <= character <= "~" for character in token)
    ):
        raise SettingsError(
            f"METRICS_TOKEN must be at least {MIN_METRICS_TOKEN_LENGTH} visible ASCII characters without spaces"
        )
    port = None
    if env.get("METRICS_PORT"):
        port = _int_setting(env, "METRICS_PORT", 0, minimum=1, maximum=65535)
    return MetricsSettings(token=token, port=port)


def _persisted_documents(env: Mapping[str, str]) -> PersistedDocumentsConfig:
    mode = (env.get("PERSISTED_DOCUMENTS") or PERSISTED_AUTOMATIC).strip().lower()
    if mode not in PERSISTED_MODES:
        raise SettingsError(f"PERSISTED_DOCUMENTS must be one of {', '.join(PERSISTED_MODES)}; not {mode!r}")
    return PersistedDocumentsConfig(
        mode=mode, max_count=_int_setting(env, "PERSISTED_DOCUMENTS_MAX", 2000, minimum=1, maximum=1_000_000)
    )
def _cors_allowed_origins(env: Mapping[str, str], environment: str) -> tuple[str, ...]:
    """CORS_ALLOWED_ORIGINS as given (set but empty: none); unset: none in production, the dev tools' in development."""
    raw = env.get(cors.SETTING)
    if raw is None:
        return () if environment == PRODUCTION else cors.DEV_ORIGINS
    try:
        return cors.parse_origins(raw)
    except ValueError as error:
        raise SettingsError(str(error)) from None


def _broadcast_url(env: Mapping[str, str]) -> str | None:
    url = (env.get("BROADCAST_URL") or "").strip() or None
    if url is not None and urlparse(url).scheme not in REDIS_SCHEMES:
        raise SettingsError(
            f"BROADCAST_URL must be a redis:// or rediss:// URL (or unset, for PostgreSQL LISTEN/NOTIFY), not {url!r}"
        )
    return url


# What OTEL_EXPORTER_OTLP_PROTOCOL may say: the exporter installed speaks OTLP over HTTP with protobuf bodies.
OTLP_PROTOCOL = "http/protobuf"


def _tracing(env: Mapping[str, str]) -> TracingConfig:
    """The standard OTEL_* variables that decide whether and where this process traces."""
    service_name = (env.get("OTEL_SERVICE_NAME") or "").strip() or DEFAULT_SERVICE_NAME
    if _bool_setting(env, "OTEL_SDK_DISABLED", False):
        return TracingConfig(service_name=service_name)
    for name in ("OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"):
        protocol = (env.get(name) or OTLP_PROTOCOL).strip().lower()
        if protocol != OTLP_PROTOCOL:
            raise SettingsError(f"{name} must be {OTLP_PROTOCOL!r} (spans are exported over HTTP), not {protocol!r}")
    traces = (env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or "").strip()
    base = (env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or "").strip()
    if traces:
        endpoint = _otlp_url("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", traces)
    elif base:
        endpoint = _otlp_url("OTEL_EXPORTER_OTLP_ENDPOINT", base).rstrip("/") + "/v1/traces"
    else:
        return TracingConfig(service_name=service_name)
    return TracingConfig(traces_endpoint=endpoint, service_name=service_name)


def _otlp_url(name: str, raw: str) -> str:
    parsed = urlparse(raw)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise SettingsError(f"{name} must be an http:// or https:// URL of an OTLP collector, not {raw!r}")
    if parsed.username is not None or parsed.password is not None:
        # The endpoint is printed at start; credentials belong in OTEL_EXPORTER_OTLP_HEADERS, which is not.
        raise SettingsError(f"{name} must not hold credentials; put them in OTEL_EXPORTER_OTLP_HEADERS")
    return raw


def _float_setting(env: Mapping[str, str], name: str, default: float, *, minimum: float, maximum: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, not {raw!r}") from None
    if not minimum <= value <= maximum:  # NaN fails this too
        raise SettingsError(f"{name} must be between {minimum:g} and {maximum:g}, not {raw}")
    return value


def _int_setting(env: Mapping[str, str], name: str, default: int, *, minimum: int, maximum: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, not {raw!r}") from None
    if not minimum <= value <= maximum:
        raise SettingsError(f"{name} must be between {minimum} and {maximum}, not {value}")
    return value


def _execution_plans(env: Mapping[str, str]) -> str:
    """EXECUTION_PLANS: on (the default), closures (plans without generated code) or off."""
    raw = (env.get("EXECUTION_PLANS") or "on").strip().lower()
    if raw not in ("on", "closures", "off"):
        raise SettingsError(f"EXECUTION_PLANS must be 'on', 'closures' or 'off', not {env.get('EXECUTION_PLANS')!r}")
    return raw


def _on_off_setting(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = (env.get(name) or "").strip().lower()
    if not raw:
        return default
    if raw in ("on", "off"):
        return raw == "on"
    raise SettingsError(f"{name} must be 'on' or 'off', not {env.get(name)!r}")


def _bool_setting(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name} must be true or false, not {raw!r}")
