"""Settings: read from a mapping once; the development secret is made once and kept."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from server.log_format import log_secrets
from server.settings import PersistedDocumentsConfig, Settings, SettingsError, TracingConfig
from storage.objects.paths import Bucket
from tests.jwks_support import SigningKey


def test_defaults_need_no_configuration(tmp_path: Path) -> None:
    settings = Settings.from_environ({"PORTRAITS_DATA_DIR": str(tmp_path)})

    assert (settings.host, settings.port, settings.public_url) == ("127.0.0.1", 8000, "http://127.0.0.1:8000")
    assert settings.database_url is None
    assert settings.environment == "development"
    assert settings.graphiql is True


def test_logs_are_text_unless_json_is_asked_for(tmp_path: Path) -> None:
    def log_format(**environ: str) -> str:
        return Settings.from_environ({"PORTRAITS_DATA_DIR": str(tmp_path), **environ}).log_format

    assert log_format() == "text"
    assert log_format(LOG_FORMAT="") == "text"
    assert log_format(LOG_FORMAT="json") == "json"
    assert log_format(LOG_FORMAT=" JSON ") == "json"
    assert log_format(LOG_FORMAT="text") == "text"


def test_the_development_secret_is_made_once_and_kept_private(tmp_path: Path) -> None:
    first = Settings.from_environ({"PORTRAITS_DATA_DIR": str(tmp_path)}).jwt_secret
    second = Settings.from_environ({"PORTRAITS_DATA_DIR": str(tmp_path)}).jwt_secret

    assert first == second
    assert first is not None and len(first) >= 40
    assert (tmp_path / "jwt-secret").stat().st_mode & 0o777 == 0o600


def test_jwt_secret_from_the_environment_wins(tmp_path: Path) -> None:
    settings = Settings.from_environ({"PORTRAITS_DATA_DIR": str(tmp_path), "JWT_SECRET": "s3cret"})

    assert settings.jwt_secret == "s3cret"
    assert not (tmp_path / "jwt-secret").exists()


@pytest.mark.parametrize(
    "environ,message",
    [
        ({"PORTRAITS_ENV": "production", "DATABASE_URL": "postgresql://x/y"}, "needs JWT_SECRET"),
        ({"PORTRAITS_ENV": "production", "DATABASE_URL": "postgresql://x/y", "JWT_SECRET": "short"}, "at least 32"),
        ({"PORTRAITS_ENV": "production", "JWT_SECRET": "x" * 40}, "needs DATABASE_URL"),
        ({"PORTRAITS_ENV": "staging"}, "PORTRAITS_ENV must be"),
        ({"PORT": "eighty"}, "PORT must be an integer"),
        ({"PORT": "70000"}, "PORT must be between"),
        ({"LOG_LEVEL": "loud"}, "LOG_LEVEL must be one of"),
        ({"LOG_FORMAT": "xml"}, "LOG_FORMAT must be 'text' or 'json'"),
        ({"LOG_FORMAT": "logfmt"}, "LOG_FORMAT must be 'text' or 'json'"),
        ({"GRAPHIQL": "maybe"}, "GRAPHIQL must be true or false"),
        ({"OBJECT_STORE": "ftp"}, "OBJECT_STORE must be"),
        ({"OBJECT_STORE": "s3", "AWS_ACCESS_KEY_ID": "only-half"}, "set both AWS_ACCESS_KEY_ID"),
        ({"SIGNED_URL_TTL_USER_LIBRARY": "0"}, "SIGNED_URL_TTL_USER_LIBRARY must be between"),
        ({"SIGNED_URL_TTL_WORKSPACE_TEMP": "999999999"}, "SIGNED_URL_TTL_WORKSPACE_TEMP must be between"),
        ({"SIGNED_URL_TTL_USER_LIBRARY": "604800"}, "within 7 days"),
        ({"SIGNED_URL_WINDOW_RATIO": "lots"}, "SIGNED_URL_WINDOW_RATIO must be a number"),
        ({"SIGNED_URL_WINDOW_RATIO": "2"}, "window ratio must be between 0 and 1"),
        ({"WORKERS": "-1"}, "WORKERS must be between"),
        ({"WORKER_CONCURRENCY": "0"}, "WORKER_CONCURRENCY must be between"),
        ({"JOB_LEASE_SECONDS": "1"}, "JOB_LEASE_SECONDS must be between"),
        ({"WORKER_POLL_SECONDS": "nan"}, "WORKER_POLL_SECONDS must be between"),
        ({"JOB_RETRY_BASE_SECONDS": "soon"}, "JOB_RETRY_BASE_SECONDS must be a number"),
        ({"MAX_ACTIVE_JOBS_PER_USER": "0"}, "MAX_ACTIVE_JOBS_PER_USER must be between"),
        ({"THUMBNAIL_MAX_SIDE": "8"}, "THUMBNAIL_MAX_SIDE must be between"),
        ({"FAL_KEY": "k", "FAL_POLL_SECONDS": "0"}, "FAL_POLL_SECONDS must be between"),
        ({"REPLICATE_API_TOKEN": "t", "REPLICATE_TIMEOUT_SECONDS": "0"}, "REPLICATE_TIMEOUT_SECONDS must be between"),
        ({"BROADCAST_URL": "kafka://localhost:9092"}, "BROADCAST_URL must be a redis://"),
        ({"SUBSCRIPTION_MAX_PENDING": "0"}, "SUBSCRIPTION_MAX_PENDING must be between"),
        ({"SUBSCRIPTION_MAX_LAG_SECONDS": "never"}, "SUBSCRIPTION_MAX_LAG_SECONDS must be a number"),
        ({"MAX_SUBSCRIPTIONS_PER_USER": "0"}, "MAX_SUBSCRIPTIONS_PER_USER must be between"),
        ({"WS_PER_MESSAGE_DEFLATE": "gzip"}, "WS_PER_MESSAGE_DEFLATE must be true or false"),
        ({"DOWNLOAD_ALLOW_NETWORKS": "127.0.0.1, localhost"}, "DOWNLOAD_ALLOW_NETWORKS: 'localhost' is not an IP"),
        ({"MAX_CONNECTIONS": "0"}, "MAX_CONNECTIONS must be between"),
        ({"HEADER_TIMEOUT_SECONDS": "0"}, "HEADER_TIMEOUT_SECONDS must be between"),
        ({"KEEP_ALIVE_TIMEOUT_SECONDS": "0.5"}, "KEEP_ALIVE_TIMEOUT_SECONDS must be an integer"),
        ({"WS_MAX_UNREAD_BYTES": "1000"}, "WS_MAX_UNREAD_BYTES must be between"),
        ({"MAX_WEBSOCKETS_PER_USER": "0"}, "MAX_WEBSOCKETS_PER_USER must be between"),
        ({"MAX_WEBSOCKETS_PER_ADDRESS": "many"}, "MAX_WEBSOCKETS_PER_ADDRESS must be an integer"),
        ({"SHUTDOWN_GRACE_SECONDS": "0"}, "SHUTDOWN_GRACE_SECONDS must be between"),
        ({"SHUTDOWN_GRACE_SECONDS": "2.5"}, "SHUTDOWN_GRACE_SECONDS must be an integer"),
        ({"MAX_REQUEST_BODY_BYTES": "1mb"}, "MAX_REQUEST_BODY_BYTES must be an integer"),
        ({"MAX_REQUEST_BODY_BYTES": "0"}, "MAX_REQUEST_BODY_BYTES must be between"),
        ({"MAX_QUERY_STRING_BYTES": "10"}, "MAX_QUERY_STRING_BYTES must be between"),
        ({"MAX_REQUEST_HEAD_BYTES": "100"}, "MAX_REQUEST_HEAD_BYTES must be between"),
        ({"MAX_QUERY_STRING_BYTES": "32768"}, "must exceed MAX_QUERY_STRING_BYTES"),
        ({"BODY_TIMEOUT_SECONDS": "0"}, "BODY_TIMEOUT_SECONDS must be between"),
        ({"MAX_BUFFERED_BODY_BYTES": "lots"}, "MAX_BUFFERED_BODY_BYTES must be an integer"),
        ({"MAX_BUFFERED_BODY_BYTES": "1048576"}, "must be at least MAX_REQUEST_BODY_BYTES"),
        ({"METRICS_TOKEN": "short"}, "METRICS_TOKEN must be at least 16 visible ASCII"),
        ({"METRICS_TOKEN": "a token with spaces in it"}, "METRICS_TOKEN must be at least 16 visible ASCII"),
        ({"METRICS_PORT": "0"}, "METRICS_PORT must be between 1 and 65535"),
        ({"METRICS_PORT": "metrics"}, "METRICS_PORT must be an integer"),
        ({"EMBEDDED_POSTGRES_MAX_RESTARTS": "-1"}, "EMBEDDED_POSTGRES_MAX_RESTARTS must be between"),
        ({"EMBEDDED_POSTGRES_RESTART_WINDOW_SECONDS": "0"}, "EMBEDDED_POSTGRES_RESTART_WINDOW_SECONDS must be between"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4318"}, "OTEL_EXPORTER_OTLP_ENDPOINT must be an http"),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "grpc://c:4317"}, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT must be an"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "https://u:secret@c:4318"}, "put them in OTEL_EXPORTER_OTLP_HEADERS"),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "OTEL_EXPORTER_OTLP_PROTOCOL must be 'http/protobuf'"),
        ({"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/json"}, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL must be"),
        ({"OTEL_SDK_DISABLED": "perhaps"}, "OTEL_SDK_DISABLED must be true or false"),
    ],
)
def test_bad_settings_say_what_to_fix(tmp_path: Path, environ: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_environ({"PORTRAITS_DATA_DIR": str(tmp_path), **environ})


def test_public_url_follows_host_and_port_unless_set(tmp_path: Path) -> None:
    wildcard = Settings.from_environ({"PORTRAITS_DATA_DIR": str(tmp_path), "HOST": "0.0.0.0", "PORT": "9000"})
    explicit = Settings.from_environ({"PORTRAITS_DATA_DIR": str(tmp_path), "PUBLIC_URL": "https://api.example.com/"})

    assert wildcard.public_url == "http://127.0.0.1:9000"
    assert explicit.public_url == "https://api.example.com"


def test_objects_default_to_a_local_folder_with_the_seed_ttls(tmp_path: Path) -> None:
    settings = Settings.from_environ({"PORTRAITS_DATA_DIR": str(tmp_path)})

    assert settings.objects.backend == "local"
    assert settings.objects.local_root == tmp_path / "objects"
    assert settings.objects.s3 is None
    assert settings.signing.ttl_seconds == {Bucket.USER_LIBRARY: 86400, Bucket.WORKSPACE_TEMP: 3600}
    assert settings.signing.window_ratio == 0.1


def test_an_s3_endpoint_alone_switches_to_s3(tmp_path: Path) -> None:
    settings = Settings.from_environ(
        {
            "PORTRAITS_DATA_DIR": str(tmp_path),
            "S3_ENDPOINT_URL": "http://127.0.0.1:9000/",
            "AWS_ACCESS_KEY_ID": "minio",
            "AWS_SECRET_ACCESS_KEY": "minio-secret",
        }
    )

    assert settings.objects.backend == "s3"
    assert settings.objects.s3 is not None
    assert settings.objects.s3.endpoint_url == "http://127.0.0.1:9000"
    assert (settings.objects.s3.region, settings.objects.s3.bucket_prefix) == ("us-east-1", "")
    assert settings.objects.s3.path_style is None


def test_signed_url_lifetimes_are_configurable(tmp_path: Path) -> None:
    settings = Settings.from_environ(
        {
            "PORTRAITS_DATA_DIR": str(tmp_path),
            "SIGNED_URL_TTL_USER_LIBRARY": "7200",
            "SIGNED_URL_TTL_WORKSPACE_TEMP": "600",
            "SIGNED_URL_WINDOW_RATIO": "0",
        }
    )

    assert settings.signing.ttl_seconds == {Bucket.USER_LIBRARY: 7200, Bucket.WORKSPACE_TEMP: 600}
    assert settings.signing.window_ratio == 0


def test_generation_settings_default_to_one_local_worker_and_fal_only_with_a_key(tmp_path: Path) -> None:
    # given no generation settings, then one in-process worker and only the local provider
    plain = Settings.from_environ({"PORTRAITS_DATA_DIR": str(tmp_path)})
    assert plain.generation.workers == 1 and plain.generation.fal is None
    assert plain.job_policy.providers == frozenset({"local"})

    # given FAL_KEY and WORKERS=0, then fal models are allowed and serve runs no worker
    with_fal = Settings.from_environ({"PORTRAITS_DATA_DIR": str(tmp_path), "FAL_KEY": "secret", "WORKERS": "0"})
    assert with_fal.generation.workers == 0
    assert with_fal.job_policy.providers == frozenset({"local", "fal"})
    assert with_fal.generation.fal is not None and "secret" not in repr(with_fal.generation.fal)


def test_replicate_is_configured_only_with_a_token(tmp_path: Path) -> None:
    """Given no REPLICATE_API_TOKEN, then Replicate models are refused; given one (and an API URL with a trailing
    slash), then they are allowed, the provider points at that URL, and the token is in no repr and no log line."""
    plain = Settings.from_environ({"PORTRAITS_DATA_DIR": str(tmp_path)})
    assert plain.generation.replicate is None and "replicate" not in plain.job_policy.providers

    configured = Settings.from_environ(
        {
            "PORTRAITS_DATA_DIR": str(tmp_path),
            "REPLICATE_API_TOKEN": "r8_secret_token_value",
            "REPLICATE_API_URL": "http://127.0.0.1:9999/",
            "REPLICATE_POLL_SECONDS": "0.5",
        }
    )
    replicate = configured.generation.replicate
    assert replicate is not None
    assert (replicate.api_url, replicate.poll_interval, replicate.timeout) == ("http://127.0.0.1:9999", 0.5, 600)
    assert configured.job_policy.providers == frozenset({"local", "replicate"})
    assert "r8_secret_token_value" not in repr(replicate)
    assert "r8_secret_token_value" in log_secrets(configured)

    default_url = Settings.from_environ({"PORTRAITS_DATA_DIR": str(tmp_path), "REPLICATE_API_TOKEN": "r8_x"})
    assert default_url.generation.replicate is not None
    assert default_url.generation.replicate.api_url == "https://api.replicate.com"


def test_realtime_defaults_to_postgres_fan_out_and_redis_is_one_setting(tmp_path: Path) -> None:
    default = Settings.from_environ({"PORTRAITS_DATA_DIR": str(tmp_path)})
    redis = Settings.from_environ({"PORTRAITS_DATA_DIR": str(tmp_path), "BROADCAST_URL": "redis://127.0.0.1:6379/0"})

    assert default.broadcast_url is None
    assert (default.subscription_limits.max_pending, default.subscription_limits.max_lag_seconds) == (256, 60)
    assert default.subscription_limits.max_per_user == 100
    assert redis.broadcast_url == "redis://127.0.0.1:6379/0"


def test_websocket_compression_is_off_unless_turned_on(tmp_path: Path) -> None:
    default = Settings.from_environ({"PORTRAITS_DATA_DIR": str(tmp_path)})
    deflate = Settings.from_environ({"PORTRAITS_DATA_DIR": str(tmp_path), "WS_PER_MESSAGE_DEFLATE": "true"})

    assert default.websocket.per_message_deflate is False
    assert deflate.websocket.per_message_deflate is True
    # the rest are the limits the README states
    assert (default.websocket.ping_interval, default.websocket.ping_timeout) == (20, 20)
    assert default.websocket.max_message_bytes == 2 * 1024 * 1024


def test_connection_limits_default_to_the_readmes_and_each_is_a_setting(tmp_path: Path) -> None:
    default = Settings.from_environ({"PORTRAITS_DATA_DIR": str(tmp_path)}).connections
    tuned = Settings.from_environ({
        "PORTRAITS_DATA_DIR": str(tmp_path),
        "MAX_CONNECTIONS": "50000",
        "HEADER_TIMEOUT_SECONDS": "2.5",
        "KEEP_ALIVE_TIMEOUT_SECONDS": "75",
        "WS_MAX_UNREAD_BYTES": "4194304",
        "MAX_WEBSOCKETS_PER_USER": "5",
        "MAX_WEBSOCKETS_PER_ADDRESS": "20000",
    }).connections

    assert (default.max_connections, default.header_timeout, default.keep_alive_timeout) == (10_000, 10, 5)
    assert default.ws_max_unread_bytes == 1024 * 1024
    assert (default.websockets_per_user, default.websockets_per_address) == (20, 200)
    assert (tuned.max_connections, tuned.header_timeout, tuned.keep_alive_timeout) == (50_000, 2.5, 75)
    assert tuned.ws_max_unread_bytes == 4 * 1024 * 1024
    assert (tuned.websockets_per_user, tuned.websockets_per_address) == (5, 20_000)


def test_the_shutdown_grace_bounds_both_requests_in_flight_and_running_jobs(tmp_path: Path) -> None:
    # given the default, and a tuned grace
    default = Settings.from_environ({"PORTRAITS_DATA_DIR": str(tmp_path)})
    tuned = Settings.from_environ({"PORTRAITS_DATA_DIR": str(tmp_path), "SHUTDOWN_GRACE_SECONDS": "25"})

    # then one value, within Docker's 10 s stop timeout by default, bounds uvicorn's drain and the workers' jobs alike
    assert default.connections.shutdown_grace_seconds == default.generation.worker.shutdown_grace_seconds == 8
    assert tuned.connections.shutdown_grace_seconds == tuned.generation.worker.shutdown_grace_seconds == 25


def test_http_limits_default_to_a_few_megabytes_of_body_and_kilobytes_of_head(tmp_path: Path) -> None:
    default = Settings.from_environ({"PORTRAITS_DATA_DIR": str(tmp_path)}).http
    custom = Settings.from_environ(
        {
            "PORTRAITS_DATA_DIR": str(tmp_path),
            "MAX_REQUEST_BODY_BYTES": "65536",
            "MAX_QUERY_STRING_BYTES": "2048",
            "MAX_REQUEST_HEAD_BYTES": "4096",
            "BODY_TIMEOUT_SECONDS": "5",
            "MAX_BUFFERED_BODY_BYTES": "1048576",
        }
    ).http

    assert (default.max_body_bytes, default.max_query_string_bytes, default.max_head_bytes) == (
        2 * 1024 * 1024, 8 * 1024, 32 * 1024
    )
    assert (custom.max_body_bytes, custom.max_query_string_bytes, custom.max_head_bytes) == (65536, 2048, 4096)
    assert (default.body_timeout, default.max_buffered_body_bytes) == (30, 64 * 1024 * 1024)
    assert (custom.body_timeout, custom.max_buffered_body_bytes) == (5, 1024 * 1024)


def test_a_websocket_message_is_capped_as_an_http_body(tmp_path: Path) -> None:
    # given the HTTP body cap, default or set, then a websocket message has the same cap
    default = Settings.from_environ({"PORTRAITS_DATA_DIR": str(tmp_path)})
    custom = Settings.from_environ({"PORTRAITS_DATA_DIR": str(tmp_path), "MAX_REQUEST_BODY_BYTES": "65536"})

    assert default.websocket.max_message_bytes == default.http.max_body_bytes == 2 * 1024 * 1024
    assert custom.websocket.max_message_bytes == custom.http.max_body_bytes == 65536


def test_metrics_are_public_without_a_port_unless_set(tmp_path: Path) -> None:
    defaults = Settings.from_environ({"PORTRAITS_DATA_DIR": str(tmp_path)}).metrics
    configured = Settings.from_environ(
        {"PORTRAITS_DATA_DIR": str(tmp_path), "METRICS_TOKEN": "scrape-0123456789abcdef", "METRICS_PORT": "9100"}
    ).metrics

    assert (defaults.token, defaults.port) == (None, None)
    assert (configured.token, configured.port) == ("scrape-0123456789abcdef", 9100)


def test_the_embedded_postgres_is_restarted_5_times_in_5_minutes_unless_set(tmp_path: Path) -> None:
    default = Settings.from_environ({"PORTRAITS_DATA_DIR": str(tmp_path)}).embedded_restarts
    tuned = Settings.from_environ({
        "PORTRAITS_DATA_DIR": str(tmp_path),
        "EMBEDDED_POSTGRES_MAX_RESTARTS": "0",
        "EMBEDDED_POSTGRES_RESTART_WINDOW_SECONDS": "30",
    }).embedded_restarts

    assert (default.max_restarts, default.window_seconds) == (5, 300)
    assert [default.delay(n) for n in range(6)] == [0.5, 1, 2, 4, 8, 10]
    assert (tuned.max_restarts, tuned.window_seconds) == (0, 30)


def test_tracing_is_off_without_an_otlp_endpoint(tmp_path: Path) -> None:
    settings = Settings.from_environ(
        {"PORTRAITS_DATA_DIR": str(tmp_path), "OTEL_SERVICE_NAME": "api", "OTEL_TRACES_SAMPLER": "always_on"}
    )

    assert settings.tracing == TracingConfig(traces_endpoint=None, service_name="api")
    assert not settings.tracing.enabled
    assert Settings.from_environ({"PORTRAITS_DATA_DIR": str(tmp_path)}).tracing.service_name == "portraits"


@pytest.mark.parametrize(
    "environ,endpoint",
    [
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, "http://collector:4318/v1/traces"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "https://otel.example.com/otlp/"}, "https://otel.example.com/otlp/v1/traces"),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:4318", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://b/traces"},
            "http://b/traces",
        ),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"},
            "http://c:4318/v1/traces",
        ),
    ],
)
def test_an_otlp_endpoint_turns_tracing_on(tmp_path: Path, environ: dict[str, str], endpoint: str) -> None:
    tracing = Settings.from_environ({"PORTRAITS_DATA_DIR": str(tmp_path), **environ}).tracing

    assert tracing.enabled
    assert tracing.traces_endpoint == endpoint
    assert tracing.service_name == "portraits"


def test_otel_sdk_disabled_turns_tracing_off_whatever_the_endpoint(tmp_path: Path) -> None:
    environ = {"PORTRAITS_DATA_DIR": str(tmp_path), "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}

    assert not Settings.from_environ({**environ, "OTEL_SDK_DISABLED": "true"}).tracing.enabled
    assert Settings.from_environ({**environ, "OTEL_SDK_DISABLED": "false"}).tracing.enabled


def test_persisted_documents_are_automatic_unless_set(tmp_path: Path) -> None:
    """Given no PERSISTED_DOCUMENTS, then each mode, then a misspelt one and a cap of 0,
    when settings are read,
    then the default is automatic with 2000 documents kept, each mode is taken, and the bad values are refused
    saying what is allowed."""

    def read(**environ: str) -> Settings:
        return Settings.from_environ({"PORTRAITS_DATA_DIR": str(tmp_path), **environ})

    assert read().persisted_documents == PersistedDocumentsConfig(mode="automatic", max_count=2000)
    for mode in ("automatic", "registered", "off"):
        assert read(PERSISTED_DOCUMENTS=f" {mode.upper()} ").persisted_documents.mode == mode
    assert read(PERSISTED_DOCUMENTS_MAX="50").persisted_documents.max_count == 50
    with pytest.raises(SettingsError, match="PERSISTED_DOCUMENTS must be one of automatic, registered, off"):
        read(PERSISTED_DOCUMENTS="allowlist")
    with pytest.raises(SettingsError, match="PERSISTED_DOCUMENTS_MAX must be between 1"):
        read(PERSISTED_DOCUMENTS_MAX="0")
SUPABASE_JWKS_URL = "https://abcdefghijklmnopqrst.supabase.co/auth/v1/.well-known/jwks.json"
PRODUCTION = {"PORTRAITS_ENV": "production", "DATABASE_URL": "postgresql://x/y"}
S3 = {"OBJECT_STORE": "s3", "AWS_ACCESS_KEY_ID": "key", "AWS_SECRET_ACCESS_KEY": "secret"}


def test_tokens_need_aud_authenticated_and_any_issuer_with_hs256_only_by_default(tmp_path: Path) -> None:
    """Without JWT_* settings, tokens are checked as before: HS256, aud 'authenticated', no issuer, no JWKS."""
    tokens = Settings.from_environ({"PORTRAITS_DATA_DIR": str(tmp_path)}).tokens

    assert (tokens.audience, tokens.issuer, tokens.jwks) == ("authenticated", None, None)


def test_a_jwks_url_with_its_issuer_and_cache_bounds(tmp_path: Path) -> None:
    """A Supabase project's JWKS URL and issuer are taken as given, with jose's cache defaults unless set."""
    issuer = "https://abcdefghijklmnopqrst.supabase.co/auth/v1"
    base = {"PORTRAITS_DATA_DIR": str(tmp_path), "JWT_JWKS_URL": SUPABASE_JWKS_URL, "JWT_ISSUER": issuer}
    default = Settings.from_environ(base).tokens
    tuned = Settings.from_environ(
        {**base, "JWT_JWKS_CACHE_SECONDS": "60", "JWT_JWKS_MIN_REFRESH_SECONDS": "5", "JWT_AUDIENCE": "api"}
    ).tokens

    assert default.issuer == issuer and default.jwks is not None
    assert (default.jwks.url, default.jwks.cache_seconds, default.jwks.min_refresh_seconds) == (
        SUPABASE_JWKS_URL, 600, 30
    )
    assert tuned.audience == "api" and tuned.jwks is not None
    assert (tuned.jwks.cache_seconds, tuned.jwks.min_refresh_seconds) == (60, 5)


def test_a_jwks_file_is_read_at_start(tmp_path: Path) -> None:
    """JWT_JWKS_FILE's keys are parsed by from_environ: a bad file stops the start, not a request."""
    path = tmp_path / "jwks.json"
    path.write_bytes(orjson.dumps({"keys": [SigningKey.ec("ec-1").public_jwk]}))

    jwks = Settings.from_environ({"PORTRAITS_DATA_DIR": str(tmp_path), "JWT_JWKS_FILE": str(path)}).tokens.jwks

    assert jwks is not None and jwks.url is None and jwks.keys is not None
    assert list(jwks.keys.keys) == ["ec-1"]


def test_production_with_a_jwks_and_s3_needs_no_jwt_secret(tmp_path: Path) -> None:
    """With the keys from a JWKS and objects signed by S3, nothing needs JWT_SECRET: HS256 tokens are refused."""
    settings = Settings.from_environ(
        {"PORTRAITS_DATA_DIR": str(tmp_path), "JWT_JWKS_URL": SUPABASE_JWKS_URL, **PRODUCTION, **S3}
    )

    assert settings.jwt_secret is None
    assert settings.objects.signing_secret is None
    assert not (tmp_path / "jwt-secret").exists()


@pytest.mark.parametrize(
    "environ,message",
    [
        ({"JWT_JWKS_URL": SUPABASE_JWKS_URL, "JWT_JWKS_FILE": "/x.json"}, "JWT_JWKS_URL or JWT_JWKS_FILE, not both"),
        ({"JWT_JWKS_URL": "ftp://issuer/jwks.json"}, "JWT_JWKS_URL must be an https:// or http:// URL"),
        ({"JWT_JWKS_URL": "/relative/jwks.json"}, "JWT_JWKS_URL must be an https:// or http:// URL"),
        ({**PRODUCTION, "JWT_JWKS_URL": "http://issuer/jwks.json"}, "production fetches signing keys over TLS"),
        ({**PRODUCTION, "JWT_JWKS_URL": SUPABASE_JWKS_URL}, "local object store needs JWT_SECRET"),
        ({**PRODUCTION, **S3}, "needs JWT_SECRET .* or JWT_JWKS_URL / JWT_JWKS_FILE"),
        ({**PRODUCTION, **S3, "JWT_JWKS_URL": SUPABASE_JWKS_URL, "JWT_SECRET": "short"}, "at least 32"),
        ({"JWT_JWKS_FILE": "/nonexistent/jwks.json"}, "JWT_JWKS_FILE: cannot read"),
        ({"JWT_JWKS_URL": SUPABASE_JWKS_URL, "JWT_JWKS_MIN_REFRESH_SECONDS": "0"}, "MIN_REFRESH_SECONDS must be"),
        ({"JWT_JWKS_URL": SUPABASE_JWKS_URL, "JWT_JWKS_CACHE_SECONDS": "forever"}, "CACHE_SECONDS must be a number"),
    ],
)
def test_bad_token_settings_say_what_to_fix(tmp_path: Path, environ: dict[str, str], message: str) -> None:
    """Every JWT_* mistake stops the start with what to change."""
    with pytest.raises(SettingsError, match=message):
        Settings.from_environ({"PORTRAITS_DATA_DIR": str(tmp_path), **environ})


def test_a_jwks_file_without_a_usable_key_stops_the_start(tmp_path: Path) -> None:
    """A JWKS file holding only a symmetric key is refused (HS256 comes from JWT_SECRET alone)."""
    path = tmp_path / "jwks.json"
    path.write_bytes(orjson.dumps({"keys": [{"kty": "oct", "kid": "h", "k": "c2VjcmV0"}]}))

    with pytest.raises(SettingsError, match="JWT_JWKS_FILE: the JWKS has no usable RS256 or ES256 signing key"):
        Settings.from_environ({"PORTRAITS_DATA_DIR": str(tmp_path), "JWT_JWKS_FILE": str(path)})


def test_public_get_max_age(tmp_path: Path) -> None:
    """Given no PUBLIC_GET_MAX_AGE_SECONDS, then 0 and 3600, then -1 and more than a day,
    when settings are read,
    then the default is 60, 0 and 3600 are taken, and the bad values are refused saying the range."""

    def read(**environ: str) -> Settings:
        return Settings.from_environ({"PORTRAITS_DATA_DIR": str(tmp_path), **environ})

    assert read().public_get_max_age_seconds == 60
    assert read(PUBLIC_GET_MAX_AGE_SECONDS="0").public_get_max_age_seconds == 0
    assert read(PUBLIC_GET_MAX_AGE_SECONDS="3600").public_get_max_age_seconds == 3600
    for bad in ("-1", "86401"):
        with pytest.raises(SettingsError, match="PUBLIC_GET_MAX_AGE_SECONDS must be between 0"):
            read(PUBLIC_GET_MAX_AGE_SECONDS=bad)
