"""What must never reach a log line: bearer tokens, signed URLs' signatures, secrets, S3 credentials.

Three filters, each for one way they could get there:

- ``AccessQueryRedaction`` (uvicorn.access): uvicorn's access line prints
  the request's full path, and a signed object's URL carries its token in
  the query string (``/storage/v1/object/sign/...?token=<JWT>``). On that
  route the query string is replaced by ``?[redacted]``; the path stays.
  Other routes' query strings (a GET's document and variables) are kept,
  through the redactor below like everything else.
- ``WireTraceFilter`` (uvicorn.error): at DEBUG, the websockets library
  traces every frame and the upgrade request's headers to uvicorn's error
  logger (``< TEXT '{"type":"connection_init","payload":{"Authorization":
  "Bearer ..."}}'``). Those records are dropped.
- ``Redactor``, applied by the formatters (server/log_format.py) to every
  line: the configured secret values (JWT secret, AWS keys and session
  token, fal key, database password), anything shaped like a JWT, and the
  value of a ``token``/``X-Amz-Signature``/``X-Amz-Credential``/
  ``X-Amz-Security-Token`` query parameter become ``[redacted]``, whoever
  logged them. The backstop for what the first two do not foresee.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

from storage.objects.local import SIGN_ROUTE

REDACTED = "[redacted]"
# A shorter configured value would redact ordinary words; none of ours is that short.
MIN_SECRET_LENGTH = 8
# A JWT: header and payload are base64url JSON objects, so both start with "eyJ" ('{"').
JWT = r"eyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"
# Query parameters that carry a signature or a credential: ours (Supabase-style ?token=) and SigV4's.
# The signed-object route's path (storage/objects/local.py: SIGN_ROUTE), whose query string is its token.
SIGNED_OBJECT_PATH = SIGN_ROUTE + "/"
SIGNED_PARAM = r"(?P<param>[?&](?:token|x-amz-signature|x-amz-credential|x-amz-security-token)=)[^&\s\"'\\]+"


class Redactor:
    """Replaces secrets in text with ``[redacted]``: the values given, JWTs, and signed URLs' parameters."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        values = sorted({value for value in secrets if len(value) >= MIN_SECRET_LENGTH}, key=len, reverse=True)
        alternatives = [SIGNED_PARAM, JWT, *(re.escape(value) for value in values)]
        self.pattern = re.compile("|".join(alternatives), re.IGNORECASE)

    def __call__(self, text: str) -> str:
        return self.pattern.sub(_replacement, text)


def _replacement(match: re.Match[str]) -> str:
    param = match["param"]
    return REDACTED if param is None else param + REDACTED


class AccessQueryRedaction(logging.Filter):
    """Cuts the query string of signed-object URLs from uvicorn's access records.

    (Their args: client, method, full path, HTTP version, status.)
    """

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == 5 and isinstance(args[2], str):
            path, mark, _query = args[2].partition("?")
            if mark and SIGNED_OBJECT_PATH in path:  # (in: the app may be mounted below a root path)
                record.args = (args[0], args[1], f"{path}?{REDACTED}", args[3], args[4])
        return True


class WireTraceFilter(logging.Filter):
    """Drops the websockets library's DEBUG traces of frames and handshake headers (``< ...``, ``> ...``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.msg
        return not (record.levelno == logging.DEBUG and isinstance(message, str) and message.startswith(("< ", "> ")))
