"""uvicorn's protocol classes, reached by the names ``uvicorn.Config`` takes (http="httptools", ws="websockets-sansio").

uvicorn exports no protocol class; its configuration maps each public name to
its class (``uvicorn.config.HTTP_PROTOCOLS`` / ``WS_PROTOCOLS``, loaded with
``uvicorn.importer.import_from_string``, as ``Config.load`` does), so we look
them up the same way instead of importing its implementation modules. uvicorn
is pinned to 0.54.x; tests/test_library_overrides.py checks these are the
classes a Config loads and fails when a method we override or rely on changes.
They are typed ``Any`` (uvicorn's own lookup is), so subclasses say so where
they subclass.
"""

from __future__ import annotations

from typing import Any

from uvicorn.config import HTTP_PROTOCOLS, WS_PROTOCOLS
from uvicorn.importer import import_from_string

HTTPTOOLS = "httptools"
H11 = "h11"
WEBSOCKETS_SANSIO = "websockets-sansio"

HttpToolsProtocol: Any = import_from_string(HTTP_PROTOCOLS[HTTPTOOLS])
H11Protocol: Any = import_from_string(HTTP_PROTOCOLS[H11])
WebSocketsSansIOProtocol: Any = import_from_string(WS_PROTOCOLS[WEBSOCKETS_SANSIO])
