"""Database exceptions, wrapped once where they enter our code.

Nothing above ``storage/`` sees an asyncpg exception: storage functions are
decorated with ``translate_errors``, which turns them into these.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

import asyncpg

P = ParamSpec("P")
T = TypeVar("T")


class StorageError(Exception):
    """Something went wrong below us; never shown to a client as is."""


class StorageUnavailable(StorageError):
    """The database could not be reached or dropped the connection."""


class IntegrityViolation(StorageError):
    """A constraint refused the write; ``constraint`` names it so callers can map it to a user error."""

    def __init__(self, message: str, *, constraint: str | None) -> None:
        super().__init__(message)
        self.constraint = constraint


# What means "the database could not be reached": a connection that fails or is lost, and PostgreSQL's own
# answers when it is going away, not yet back, or full, after which the same statement is right once it returns
# (fast shutdown ends sessions with 57P01 AdminShutdown; a server starting or in crash recovery refuses with
# 57P03 CannotConnectNow; a crashed backend makes it end every session with 57P02 CrashShutdown). asyncpg's
# InternalClientError is a pooled connection whose protocol broke as the server went away mid-operation ("cannot
# switch to state 11; another operation (2) is in progress", seen as a server restarted under load).
UNREACHABLE: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    OSError,
    TimeoutError,
)


def translate_errors(function: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """Re-raise asyncpg and connection errors as ``StorageError``s, keeping the cause for the log."""

    @functools.wraps(function)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await function(*args, **kwargs)
        except asyncpg.IntegrityConstraintViolationError as error:
            raise IntegrityViolation(str(error), constraint=getattr(error, "constraint_name", None)) from error
        except UNREACHABLE as error:
            raise StorageUnavailable(str(error)) from error
        except asyncpg.PostgresError as error:
            raise StorageError(str(error)) from error

    return wrapper
