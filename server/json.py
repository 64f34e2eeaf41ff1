"""JSON encoding for every response: orjson, several times faster than the standard library."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from starlette.responses import Response


def dumps(data: Any) -> bytes:
    return orjson.dumps(data)


def json_response(data: Any, *, status_code: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(dumps(data), status_code=status_code, headers=headers, media_type="application/json")
