"""``GET /storage/v1/object/sign/{bucket}/{path}?token=...``: the local store's signed URLs.

Shaped like Supabase Storage's route so clients treat both alike: errors are
``{"statusCode", "error", "message"}`` JSON with status 400 for a bad token
(``InvalidJWT``, ``InvalidSignature``) and 404 (``NoSuchKey``) for a missing
object. Responses carry the object's ETag, honour If-None-Match and byte
ranges, and may be cached privately until the token expires. Pages on any
origin may embed them (``Cross-Origin-Resource-Policy: cross-origin``).
"""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import FileResponse, Response

from server import json
from storage.objects.local import LocalObjectStore
from storage.objects.paths import InvalidObjectPath, object_key
from storage.objects.store import ObjectNotFound, ObjectStoreUnavailable
from storage.objects.tokens import InvalidToken


def _error(status: int, error: str, message: str) -> Response:
    return json.json_response({"statusCode": str(status), "error": error, "message": message}, status_code=status)


def _local_store(request: Request) -> LocalObjectStore | None:
    store = request.state.objects.store
    return store if isinstance(store, LocalObjectStore) else None


async def serve_signed_object(request: Request) -> Response:
    store = _local_store(request)
    if store is None:  # S3 URLs point at the S3 endpoint, never here
        return _error(404, "NotFound", "This server does not serve objects; its store is S3")
    try:
        key = object_key(request.path_params["bucket"], request.path_params["path"])
    except InvalidObjectPath as error:
        return _error(400, "InvalidKey", str(error))
    now = time.time()
    try:
        expires_at = store.tokens.verify(request.query_params.get("token", ""), key=key.key, now=now)
    except InvalidToken as error:
        return _error(400, error.error, str(error))
    try:
        stat_result, info = store.stat(key.bucket, key.path)
    except ObjectNotFound:
        return _error(404, "NoSuchKey", "Object not found")
    except ObjectStoreUnavailable:
        return _error(503, "ServiceUnavailable", "The object store is unavailable")

    headers = {
        "ETag": info.etag,
        "Cache-Control": f"private, max-age={max(0, int(expires_at - now))}",
        "Vary": "Range",
        # Any page may embed it (an <img> on a browser app's origin, even one isolated with COEP): the token in
        # the URL is the permission, and the CORS headers (server/cors.py) cover scripts that fetch it.
        "Cross-Origin-Resource-Policy": "cross-origin",
    }
    if _etag_matches(request.headers.get("if-none-match"), info.etag):
        return Response(status_code=304, headers=headers)
    return FileResponse(
        store.file_path(key.bucket, key.path),
        media_type=info.content_type,
        headers=headers,
        stat_result=stat_result,  # stat once per request, not again in Starlette
    )


def _etag_matches(header: str | None, etag: str) -> bool:
    """If-None-Match compares weakly (RFC 9110 13.1.2): ``W/"x"`` matches ``"x"``, ``*`` matches all."""
    if not header:
        return False
    if header.strip() == "*":
        return True
    return any(candidate.strip().removeprefix("W/") == etag for candidate in header.split(","))
