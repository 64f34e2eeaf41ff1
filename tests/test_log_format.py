"""The JSON log line, the ids stamped on records, and what the redaction filters keep out of lines."""

from __future__ import annotations

import contextvars
import logging
import sys
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import orjson

from observability.log_context import bind_job, bind_request, bind_user
from server.log_format import ContextIds, JsonFormatter, RedactingFormatter
from server.log_redaction import REDACTED, AccessQueryRedaction, Redactor, WireTraceFilter

JWT_LIKE = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"


def record(message: str, *args: object, name: str = "portraits", level: int = logging.INFO) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, message, args, None)


def stamped(made: logging.LogRecord, bind: Callable[[], object]) -> logging.LogRecord:
    """``made`` passed through ``ContextIds`` in a context of its own, after ``bind`` (as in a request's task)."""

    def run() -> logging.LogRecord:
        bind()
        ContextIds().filter(made)
        return made

    return contextvars.copy_context().run(run)


def test_a_json_line_has_the_time_level_logger_message_and_the_ids_of_its_context() -> None:
    user, job = uuid.uuid4(), uuid.uuid4()

    def bind() -> None:
        bind_request("req-1")
        bind_job(job, user)

    line = stamped(record("job %s completed", job), bind)

    entry = orjson.loads(JsonFormatter(Redactor()).format(line))

    assert entry == {
        "time": datetime.fromtimestamp(line.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "level": "INFO",
        "logger": "portraits",
        "message": f"job {job} completed",
        "request_id": "req-1",
        "user_id": str(user),
        "job_id": str(job),
    }
    assert entry["time"].endswith("Z")


def test_ids_are_read_where_the_record_is_made_and_absent_ones_left_out() -> None:
    user = uuid.uuid4()
    line = stamped(record("hello"), lambda: bind_user(user))
    # formatted later, outside that context (a queue's thread, pytest's capture): the ids stay on the record
    entry = orjson.loads(JsonFormatter(Redactor()).format(line))
    assert entry["user_id"] == str(user)
    assert "request_id" not in entry and "job_id" not in entry
    # and a record made with no context has none
    assert not {"request_id", "user_id", "job_id"} & set(orjson.loads(JsonFormatter(Redactor()).format(record("x"))))


def test_an_exception_is_one_string_field_on_the_same_line() -> None:
    try:
        raise ValueError("the cause")
    except ValueError:
        line = logging.LogRecord("graph.errors", logging.ERROR, __file__, 1, "unexpected", (), sys.exc_info())

    text = JsonFormatter(Redactor()).format(line)

    assert "\n" not in text
    entry = orjson.loads(text)
    assert entry["message"] == "unexpected" and entry["level"] == "ERROR"
    assert entry["exception"].startswith("Traceback") and "ValueError: the cause" in entry["exception"]


def test_a_lone_surrogate_a_client_sent_still_makes_a_json_line() -> None:
    entry = orjson.loads(JsonFormatter(Redactor()).format(record("bad name %r", "x\ud800y")))
    assert entry["message"] == "bad name 'x\\ud800y'"


def test_an_access_line_gets_its_request_fields() -> None:
    access = record('%s - "%s %s HTTP/%s" %d', "127.0.0.1:5000", "GET", "/healthz", "1.1", 200, name="uvicorn.access")
    entry = orjson.loads(JsonFormatter(Redactor()).format(access))
    fields = (entry["client"], entry["method"], entry["path"], entry["status"])
    assert fields == ("127.0.0.1:5000", "GET", "/healthz", 200)


def test_an_access_lines_path_field_is_redacted_as_its_message_is() -> None:
    # given an access line of another route whose query string carries a token and a signature
    path = f"/graphql?query=x&token={JWT_LIKE}&X-Amz-Signature=00ff"
    access = record('%s - "%s %s HTTP/%s" %d', "127.0.0.1:5000", "GET", path, "1.1", 200, name="uvicorn.access")
    # when it is formatted as JSON
    line = JsonFormatter(Redactor()).format(access)
    entry = orjson.loads(line)
    # then neither the message nor the path field holds them
    assert JWT_LIKE not in line and "00ff" not in line
    assert entry["path"] == f"/graphql?query=x&token={REDACTED}&X-Amz-Signature={REDACTED}"


def test_the_redactor_hides_secrets_jwts_and_signed_url_parameters() -> None:
    redact = Redactor(["the-jwt-secret-value", "AKIAEXAMPLEKEY", "short"])

    assert redact("secret is the-jwt-secret-value!") == f"secret is {REDACTED}!"
    assert redact("Credential=AKIAEXAMPLEKEY/20260101") == f"Credential={REDACTED}/20260101"
    assert redact(f"Authorization: Bearer {JWT_LIKE}") == f"Authorization: Bearer {REDACTED}"
    assert redact("/sign/a/b.png?token=abc.def&x=1") == f"/sign/a/b.png?token={REDACTED}&x=1"
    assert redact("https://s3/k?X-Amz-Signature=00ff&X-Amz-Security-Token=T0k") == (
        f"https://s3/k?X-Amz-Signature={REDACTED}&X-Amz-Security-Token={REDACTED}"
    )
    # a value too short to be a secret redacts nothing (it would hide ordinary words)
    assert redact("a short word") == "a short word"


def test_both_formats_redact_whole_lines() -> None:
    line = record("token %s and secret %s", JWT_LIKE, "the-jwt-secret-value")
    redact = Redactor(["the-jwt-secret-value"])

    text = RedactingFormatter(logging.Formatter("%(message)s"), redact).format(line)
    entry = orjson.loads(JsonFormatter(redact).format(line))

    assert text == entry["message"] == f"token {REDACTED} and secret {REDACTED}"


def test_access_lines_of_signed_objects_lose_their_query_string() -> None:
    path = f"/storage/v1/object/sign/user-library/u/p.png?token={JWT_LIKE}"
    access = record('%s - "%s %s HTTP/%s" %d', "127.0.0.1:5000", "GET", path, "1.1", 200, name="uvicorn.access")

    assert AccessQueryRedaction().filter(access)

    assert access.getMessage() == (
        f'127.0.0.1:5000 - "GET /storage/v1/object/sign/user-library/u/p.png?{REDACTED} HTTP/1.1" 200'
    )
    # (other routes' query strings are kept: the redactor still hides tokens there)
    probe = record('%s - "%s %s HTTP/%s" %d', "::1", "GET", "/healthz?p=1", "1.1", 200, name="uvicorn.access")
    assert AccessQueryRedaction().filter(probe) and probe.getMessage().endswith('"GET /healthz?p=1 HTTP/1.1" 200')


def test_websocket_wire_traces_are_dropped_and_other_records_kept() -> None:
    wire = WireTraceFilter()
    frame = record("< %s", "TEXT '{\"type\":\"connection_init\"}'", name="uvicorn.error", level=logging.DEBUG)
    header = record("< %s: %s", "Authorization", "Bearer x", name="uvicorn.error", level=logging.DEBUG)
    state = record("= connection is %s", "OPEN", name="uvicorn.error", level=logging.DEBUG)
    started = record("Started server process [%d]", 1, name="uvicorn.error")

    assert not wire.filter(frame) and not wire.filter(header)
    assert wire.filter(state) and wire.filter(started)
