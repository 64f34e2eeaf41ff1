"""The request, user and job a log line is about, kept in context variables.

Each is set where it becomes known: the request id by the outermost ASGI
middleware (server/request_ids.py), the user where a bearer token is
accepted (server/auth.py, a websocket's ``connection_init``), the job and
its owner where a worker runs it (pipeline/worker.py). The log formatter
(server/log_format.py) and GraphQL's error extensions (graph/errors.py) read
them. Context variables follow asyncio tasks: uvicorn runs each request and
each websocket in a task of its own, and the tasks they start (a socket's
operations) inherit its ids, so nothing leaks from one request to the next.
This module imports nothing of ours, so every layer may set or read them.
"""

from __future__ import annotations

from contextvars import ContextVar
from uuid import UUID

REQUEST_ID: ContextVar[str | None] = ContextVar("portraits_request_id", default=None)
USER_ID: ContextVar[str | None] = ContextVar("portraits_user_id", default=None)
JOB_ID: ContextVar[str | None] = ContextVar("portraits_job_id", default=None)
# Their names in log records and JSON lines.
ID_FIELDS = ("request_id", "user_id", "job_id")


def bind_request(request_id: str) -> None:
    """The current task serves the request (or websocket) ``request_id``."""
    REQUEST_ID.set(request_id)


def bind_user(user_id: UUID) -> None:
    """The current task acts for ``user_id`` (a verified token named them)."""
    USER_ID.set(str(user_id))


def bind_job(job_id: UUID, user_id: UUID) -> None:
    """The current task runs ``job_id``, owned by ``user_id``."""
    JOB_ID.set(str(job_id))
    USER_ID.set(str(user_id))


def current_request_id() -> str | None:
    return REQUEST_ID.get()


def known_ids() -> dict[str, str]:
    """The ids known in this context, by their log field names; absent ones are left out."""
    ids: dict[str, str] = {}
    if (request_id := REQUEST_ID.get()) is not None:
        ids["request_id"] = request_id
    if (user_id := USER_ID.get()) is not None:
        ids["user_id"] = user_id
    if (job_id := JOB_ID.get()) is not None:
        ids["job_id"] = job_id
    return ids
