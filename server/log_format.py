"""Logging, configured once per process by the CLI: plain text (the default) or one JSON object per line.

``LOG_FORMAT=text`` prints what ``make run`` always printed: our records as
``time LEVEL logger: message`` on stderr, uvicorn's with its own formatters
(access lines on stdout). ``LOG_FORMAT=json`` prints every record, uvicorn's
included, as one JSON object per line on stderr (stdout keeps the start-up
banner): ``time`` (ISO 8601, UTC), ``level``, ``logger``, ``message``, the
ids known where it was logged (``request_id``, ``user_id``, ``job_id``:
observability/log_context.py, stamped on the record by ``ContextIds``),
``exception`` (the traceback, as text) when there is one; an access line
adds ``client``, ``method``, ``path`` and ``status``. Both go through one
``logging.config.dictConfig``, uvicorn's loggers included (uvicorn is then
given no ``log_config`` of its own), and both formats pass every line
through the redactor (server/log_redaction.py).

Libraries that log requests' URLs and headers at DEBUG or INFO (botocore,
httpx, ...) are held at WARNING whatever ``LOG_LEVEL`` says.
"""

from __future__ import annotations

import logging
import logging.config
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlparse

import orjson
from uvicorn.logging import AccessFormatter, DefaultFormatter

from observability.log_context import ID_FIELDS, known_ids
from server.log_redaction import AccessQueryRedaction, Redactor, WireTraceFilter
from server.settings import JSON, Settings

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# uvicorn's own (uvicorn.config.LOGGING_CONFIG), which `make run` has always printed its lines with.
UVICORN_FORMAT = "%(levelprefix)s %(message)s"
UVICORN_ACCESS_FORMAT = '%(levelprefix)s %(client_addr)s - "%(request_line)s" %(status_code)s'
# They log request URLs (signatures, provider URLs) and headers below WARNING.
CHATTY_LIBRARIES = ("botocore", "aiobotocore", "urllib3", "httpx", "httpcore", "hpack", "PIL", "multipart")
ACCESS_LOGGER = "uvicorn.access"


class ContextIds(logging.Filter):
    """Stamps each record with the ids of the context it is logged in, as attributes (``request_id``, ...).

    On the handler, so they are read where the record is made (the request's task), whenever and wherever it
    is formatted; ids a caller passed in ``extra`` are kept.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in known_ids().items():
            if not hasattr(record, name):
                setattr(record, name, value)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def __init__(self, redact: Redactor) -> None:
        super().__init__()
        self.redact = redact

    def format(self, record: logging.LogRecord) -> str:
        created = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
        entry: dict[str, object] = {
            "time": created.replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": self.redact(record.getMessage()),
        }
        for name in ID_FIELDS:
            if (value := getattr(record, name, None)) is not None:
                entry[name] = value
        if record.name == ACCESS_LOGGER:
            entry.update(_access_fields(record, self.redact))
        if record.exc_info:
            entry["exception"] = self.redact(self.formatException(record.exc_info))
        elif record.exc_text:
            entry["exception"] = self.redact(record.exc_text)
        if record.stack_info:
            entry["stack"] = self.redact(self.formatStack(record.stack_info))
        return _dumps(entry)


class RedactingFormatter(logging.Formatter):
    """Another formatter's lines, redacted (the text format, ours and uvicorn's)."""

    def __init__(self, inner: logging.Formatter, redact: Redactor) -> None:
        super().__init__()
        self.inner = inner
        self.redact = redact

    def format(self, record: logging.LogRecord) -> str:
        return self.redact(self.inner.format(record))


def _access_fields(record: logging.LogRecord, redact: Redactor) -> dict[str, object]:
    """uvicorn's access record's args (client, method, full path, HTTP version, status), as fields; the path
    redacted as the message is (a query string on any route may carry a token or a signature)."""
    args = record.args
    if not (isinstance(args, tuple) and len(args) == 5):
        return {}
    client, method, path, _version, status = args
    return {"client": str(client), "method": str(method), "path": redact(str(path)), "status": status}


def _dumps(entry: dict[str, object]) -> str:
    try:
        return orjson.dumps(entry).decode()
    except TypeError:  # orjson.JSONDecodeError: a lone surrogate (a client's text, quoted in a message)
        return orjson.dumps({key: _printable(value) for key, value in entry.items()}).decode()


def _printable(value: object) -> object:
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    return value if isinstance(value, int | float | bool) or value is None else str(value)


def log_secrets(settings: Settings) -> list[str]:
    """The configured values no log line may show."""
    secrets = [settings.jwt_secret or "", settings.objects.signing_secret or ""]
    if (s3 := settings.objects.s3) is not None:
        secrets += [s3.access_key_id or "", s3.secret_access_key or "", s3.session_token or ""]
    if (fal := settings.generation.fal) is not None:
        secrets.append(fal.key)
    if (replicate := settings.generation.replicate) is not None:
        secrets.append(replicate.token)
    for url in (settings.database_url, settings.broadcast_url):
        if url:
            secrets.append(urlparse(url).password or "")
    return [secret for secret in secrets if secret]


def logging_config(log_format: str, log_level: str, redact: Redactor) -> dict[str, Any]:
    """The ``logging.config.dictConfig`` of a process: ours, uvicorn's and the libraries' loggers."""
    level = log_level.upper()
    quiet = logging.getLevelName(max(logging.WARNING, logging.getLevelName(level)))
    filters = {
        "context": {"()": ContextIds},
        "access_query": {"()": AccessQueryRedaction},
        "wire_trace": {"()": WireTraceFilter},
    }
    uvicorn_error = {"filters": ["wire_trace"]}
    if log_format == JSON:
        formatters: dict[str, Any] = {"json": {"()": lambda: JsonFormatter(redact)}}
        handlers: dict[str, Any] = {"main": _stream("json", "ext://sys.stderr")}
        uvicorn: dict[str, Any] = {
            "uvicorn": {"handlers": [], "propagate": True},
            "uvicorn.error": uvicorn_error,
            ACCESS_LOGGER: {"handlers": [], "propagate": True, "filters": ["access_query"]},
        }
    else:
        formatters = {
            "text": {"()": lambda: RedactingFormatter(logging.Formatter(TEXT_FORMAT), redact)},
            "uvicorn": {"()": lambda: RedactingFormatter(DefaultFormatter(UVICORN_FORMAT), redact)},
            "access": {"()": lambda: RedactingFormatter(AccessFormatter(UVICORN_ACCESS_FORMAT), redact)},
        }
        handlers = {
            "main": _stream("text", "ext://sys.stderr"),
            "uvicorn": _stream("uvicorn", "ext://sys.stderr"),
            "access": _stream("access", "ext://sys.stdout"),
        }
        uvicorn = {
            "uvicorn": {"handlers": ["uvicorn"], "propagate": False},
            "uvicorn.error": uvicorn_error,
            ACCESS_LOGGER: {"handlers": ["access"], "propagate": False, "filters": ["access_query"]},
        }
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": filters,
        "formatters": formatters,
        "handlers": handlers,
        "loggers": {**uvicorn, **{name: {"level": quiet} for name in CHATTY_LIBRARIES}},
        "root": {"level": level, "handlers": ["main"]},
    }


def configure_logging(settings: Settings) -> None:
    """Once, at the start of every command, before anything logs."""
    logging.config.dictConfig(
        logging_config(settings.log_format, settings.log_level, Redactor(log_secrets(settings)))
    )
    if settings.log_format == JSON:
        logging.captureWarnings(True)  # warnings as records too: every line on stderr is JSON


def _stream(formatter: str, stream: str) -> dict[str, object]:
    return {"class": "logging.StreamHandler", "formatter": formatter, "stream": stream, "filters": ["context"]}

