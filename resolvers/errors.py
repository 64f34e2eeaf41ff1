"""Expected errors, each with the stable ``extensions.code`` a client can switch on.

graphql-core copies an original exception's ``extensions`` onto the GraphQL
error, so raising one of these anywhere below a resolver is enough. Anything
else that escapes a resolver is unexpected: logged in full, masked for the
client (see ``graph/errors.py``).
"""

from __future__ import annotations

from typing import Any, ClassVar


class PortraitsError(Exception):
    """An error the client caused or must handle; its message is safe to show."""

    code: ClassVar[str] = "INTERNAL_SERVER_ERROR"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.extensions: dict[str, Any] = {"code": self.code, **details}


class Unauthenticated(PortraitsError):
    code = "UNAUTHENTICATED"


class Forbidden(PortraitsError):
    code = "FORBIDDEN"


class NotFound(PortraitsError):
    code = "NOT_FOUND"


class BadUserInput(PortraitsError):
    """Invalid input; ``field`` names the offending input field when there is one."""

    code = "BAD_USER_INPUT"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        if field is None:
            super().__init__(message)
        else:
            super().__init__(message, field=field)


class ServiceUnavailable(PortraitsError):
    """A dependency (the database) is down; the client may retry."""

    code = "SERVICE_UNAVAILABLE"


class RateLimited(PortraitsError):
    """Too many requests of a kind at once; the client may retry once some finish."""

    code = "RATE_LIMITED"


class SubscriberTooSlow(PortraitsError):
    """A subscription fell too far behind its events and was ended; the client may subscribe again."""

    code = "SUBSCRIBER_TOO_SLOW"
