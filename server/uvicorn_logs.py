"""uvicorn's log records of a client's fault, kept from reading as a crash of ours.

uvicorn 0.54's websocket protocol answers a text frame that is not UTF-8 with
the close code RFC 6455 prescribes (1007) but logs it with
``logger.exception``: an ERROR and a traceback on ``uvicorn.error`` for every
such frame a client chooses to send. The close is right; the record is not a
server error. The filter here rewrites that one record, by its message, to an
INFO line without the traceback; every other record passes as it is.

It also drops the ERROR uvicorn 0.54's websockets-sansio protocol logs after
an app refuses an upgrade with the ASGI denial response (HTTP 403 for a
disallowed Origin: server/websocket.py), as if no handshake had been answered
(it forgets to mark the handshake done; the client gets the 403 all the same).
Only when the app said it sent one, in the connection's own task: the context
variable ``HANDSHAKE_DENIED``, set where the denial is sent and still set when
uvicorn logs after the app returns.
"""

from __future__ import annotations

import logging
from contextvars import ContextVar

UVICORN_LOGGER = "uvicorn.error"
# What uvicorn logs for each fault of the client's (websockets_sansio_impl.py).
CLIENT_FAULTS = frozenset({"Invalid UTF-8 sequence received from client."})
# What uvicorn logs when an app returns from a websocket it neither accepted nor closed; also after a denial response.
INCOMPLETE_HANDSHAKE = "ASGI callable returned without completing handshake."
# True in a websocket connection's task once the app has answered its upgrade with an HTTP denial response.
HANDSHAKE_DENIED: ContextVar[bool] = ContextVar("portraits_handshake_denied", default=False)


class ClientFaultFilter(logging.Filter):
    """Demotes uvicorn's records of a client's fault to INFO, without the exception; drops the denial's false error."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg == INCOMPLETE_HANDSHAKE and HANDSHAKE_DENIED.get():
            return False  # uvicorn has logged the denial's status already (INFO)
        if record.msg in CLIENT_FAULTS and record.levelno > logging.INFO:
            record.levelno = logging.INFO
            record.levelname = logging.getLevelName(logging.INFO)
            record.exc_info = None
            record.exc_text = None
        return True


def demote_client_faults() -> None:
    """Install the filter on uvicorn's error logger once (after uvicorn configured its logging)."""
    logger = logging.getLogger(UVICORN_LOGGER)
    if not any(isinstance(existing, ClientFaultFilter) for existing in logger.filters):
        logger.addFilter(ClientFaultFilter())
