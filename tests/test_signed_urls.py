"""The app's signed-object route (local store): headers, ranges, 304, and every refusal."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
import uuid

import httpx
import orjson
import pytest

from storage.objects.local import LocalObjectStore
from storage.objects.paths import Bucket
from storage.objects.store import ObjectStore
from storage.objects.tokens import ObjectTokens, derive_key
from tests.support import TEST_JWT_SECRET

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8
ROUTE = "/storage/v1/object/sign"


@pytest.fixture
async def stored(local_store: ObjectStore) -> str:
    """A fresh object's path in user-library."""
    path = f"{uuid.uuid4()}/job_char.png"
    await local_store.put(Bucket.USER_LIBRARY, path, PNG)
    return path


def sign(store: ObjectStore, path: str, *, ttl: int = 600, bucket: Bucket = Bucket.USER_LIBRARY) -> str:
    now = int(time.time())
    return store.sign(bucket, path, issued_at=now, expires_at=now + ttl)


def token_of(url: str) -> str:
    return url.split("token=", 1)[1]


def assert_refused(response: httpx.Response, status: int, error: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["statusCode"] == str(status)
    assert body["error"] == error
    assert body["message"]


async def test_a_signed_url_serves_the_object_with_caching_headers(
    client: httpx.AsyncClient, local_store: ObjectStore, stored: str
) -> None:
    # when
    response = await client.get(sign(local_store, stored, ttl=600))
    # then
    assert response.status_code == 200
    assert response.content == PNG
    assert response.headers["content-type"] == "image/png"
    assert response.headers["content-length"] == str(len(PNG))
    assert response.headers["accept-ranges"] == "bytes"
    assert response.headers["etag"] == (await local_store.head(Bucket.USER_LIBRARY, stored)).etag
    cache_control = response.headers["cache-control"]
    assert cache_control.startswith("private, max-age=")
    assert 590 <= int(cache_control.rsplit("=", 1)[1]) <= 600


async def test_head_gives_the_headers_without_the_body(
    client: httpx.AsyncClient, local_store: ObjectStore, stored: str
) -> None:
    response = await client.head(sign(local_store, stored))
    assert response.status_code == 200
    assert response.content == b""
    assert response.headers["content-length"] == str(len(PNG))


async def test_byte_ranges_are_served(client: httpx.AsyncClient, local_store: ObjectStore, stored: str) -> None:
    response = await client.get(sign(local_store, stored), headers={"Range": "bytes=8-15"})
    assert response.status_code == 206
    assert response.content == PNG[8:16]
    assert response.headers["content-range"] == f"bytes 8-15/{len(PNG)}"


async def test_an_unsatisfiable_range_is_416(client: httpx.AsyncClient, local_store: ObjectStore, stored: str) -> None:
    response = await client.get(sign(local_store, stored), headers={"Range": f"bytes={len(PNG) + 10}-"})
    assert response.status_code == 416


async def test_a_matching_etag_gives_304(client: httpx.AsyncClient, local_store: ObjectStore, stored: str) -> None:
    # given
    url = sign(local_store, stored)
    etag = (await client.get(url)).headers["etag"]
    # when / then
    for header in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        response = await client.get(url, headers={"If-None-Match": header})
        assert response.status_code == 304, header
        assert response.content == b""
        assert response.headers["etag"] == etag
    assert (await client.get(url, headers={"If-None-Match": '"other"'})).status_code == 200


async def test_a_rewritten_object_gets_a_new_etag(
    client: httpx.AsyncClient, local_store: ObjectStore, stored: str
) -> None:
    url = sign(local_store, stored)
    before = (await client.get(url)).headers["etag"]
    await local_store.put(Bucket.USER_LIBRARY, stored, PNG[:50])
    response = await client.get(url, headers={"If-None-Match": before})
    assert response.status_code == 200
    assert response.content == PNG[:50]


async def test_a_missing_token_is_invalid_jwt(client: httpx.AsyncClient, stored: str) -> None:
    assert_refused(await client.get(f"{ROUTE}/user-library/{stored}"), 400, "InvalidJWT")
    assert_refused(await client.get(f"{ROUTE}/user-library/{stored}?token="), 400, "InvalidJWT")


async def test_an_expired_token_is_invalid_jwt(
    client: httpx.AsyncClient, local_store: ObjectStore, stored: str
) -> None:
    now = int(time.time())
    url = local_store.sign(Bucket.USER_LIBRARY, stored, issued_at=now - 120, expires_at=now - 1)
    response = await client.get(url)
    assert_refused(response, 400, "InvalidJWT")
    assert response.json()["message"] == "jwt expired"


async def test_a_token_issued_in_the_future_beyond_the_leeway_is_invalid_jwt(
    client: httpx.AsyncClient, local_store: ObjectStore, stored: str
) -> None:
    # given a correctly signed token whose iat lies 40 s ahead, past the 30 s clock-skew leeway
    now = int(time.time())
    url = local_store.sign(Bucket.USER_LIBRARY, stored, issued_at=now + 40, expires_at=now + 600)
    # when it is used
    response = await client.get(url)
    # then it is refused, as a bearer token issued in the future is
    assert_refused(response, 400, "InvalidJWT")
    assert response.json()["message"] == "jwt issued in the future"


async def test_a_token_issued_within_the_leeway_ahead_is_served(
    client: httpx.AsyncClient, local_store: ObjectStore, stored: str
) -> None:
    # given a token issued 10 s ahead (another process whose clock runs a little fast)
    now = int(time.time())
    url = local_store.sign(Bucket.USER_LIBRARY, stored, issued_at=now + 10, expires_at=now + 600)
    # when it is used, then the object is served
    response = await client.get(url)
    assert response.status_code == 200, response.text
    assert response.content == PNG


async def test_a_token_without_an_integer_iat_is_malformed(client: httpx.AsyncClient, stored: str) -> None:
    # given a token signed with the app's key whose iat is missing or not an integer
    key = derive_key(TEST_JWT_SECRET)
    now = int(time.time())
    for claims in ({"url": f"user-library/{stored}", "exp": now + 600},
                   {"url": f"user-library/{stored}", "iat": "0", "exp": now + 600}):
        header = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').rstrip(b"=")
        payload = base64.urlsafe_b64encode(orjson.dumps(claims)).rstrip(b"=")
        signature = hmac.new(key, header + b"." + payload, hashlib.sha256).digest()
        token = (header + b"." + payload + b"." + base64.urlsafe_b64encode(signature).rstrip(b"=")).decode()
        # when it is used, then it is refused as malformed
        response = await client.get(f"{ROUTE}/user-library/{stored}?token={token}")
        assert_refused(response, 400, "InvalidJWT")
        assert response.json()["message"] == "jwt malformed"


@pytest.mark.parametrize("part", [0, 1, 2])
async def test_a_tampered_token_is_refused(
    client: httpx.AsyncClient, local_store: ObjectStore, stored: str, part: int
) -> None:
    # given: one character changed in the header, the payload or the signature
    url = sign(local_store, stored)
    pieces = token_of(url).split(".")
    pieces[part] = pieces[part][:-2] + ("A" if pieces[part][-2] != "A" else "B") + pieces[part][-1]
    # when
    response = await client.get(url.split("token=")[0] + "token=" + ".".join(pieces))
    # then
    assert_refused(response, 400, "InvalidJWT")


async def test_a_token_with_unused_signature_bits_flipped_is_refused(
    client: httpx.AsyncClient, local_store: ObjectStore, stored: str
) -> None:
    url = sign(local_store, stored)
    header, payload, signature = token_of(url).split(".")
    # The last of 43 base64 characters carries 4 signature bits and 2 unused ones.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(signature[-1])
    twin = signature[:-1] + alphabet[last ^ 1]
    assert base64.urlsafe_b64decode(twin + "=") == base64.urlsafe_b64decode(signature + "=")
    response = await client.get(url.split("token=")[0] + f"token={header}.{payload}.{twin}")
    assert_refused(response, 400, "InvalidJWT")


async def test_a_forged_token_is_refused(client: httpx.AsyncClient, stored: str) -> None:
    # given: a well-formed token for this very path, signed with another key
    forged = ObjectTokens(derive_key("not-our-secret" * 4)).encode(
        f"user-library/{stored}", issued_at=int(time.time()), expires_at=int(time.time()) + 600
    )
    response = await client.get(f"{ROUTE}/user-library/{stored}?token={forged}")
    assert_refused(response, 400, "InvalidJWT")


async def test_an_auth_token_is_not_an_object_token(client: httpx.AsyncClient, stored: str) -> None:
    from tests.conftest import token_for

    response = await client.get(f"{ROUTE}/user-library/{stored}?token={token_for(uuid.uuid4())}")
    assert_refused(response, 400, "InvalidJWT")


async def test_a_token_for_another_path_is_invalid_signature(
    client: httpx.AsyncClient, local_store: ObjectStore, stored: str
) -> None:
    # given: a valid token for one object, used on another (same user, same bucket; then other bucket)
    other = f"{stored.split('/')[0]}/other.png"
    await local_store.put(Bucket.USER_LIBRARY, other, PNG)
    token = token_of(sign(local_store, stored))
    for url in (f"{ROUTE}/user-library/{other}?token={token}", f"{ROUTE}/workspace-temp/{stored}?token={token}"):
        assert_refused(await client.get(url), 400, "InvalidSignature")


async def test_a_missing_object_is_no_such_key(client: httpx.AsyncClient, local_store: ObjectStore) -> None:
    url = sign(local_store, f"{uuid.uuid4()}/never-written.png")
    assert_refused(await client.get(url), 404, "NoSuchKey")


async def test_a_deleted_object_is_no_such_key(
    client: httpx.AsyncClient, local_store: ObjectStore, stored: str
) -> None:
    url = sign(local_store, stored)
    await local_store.delete(Bucket.USER_LIBRARY, stored)
    assert_refused(await client.get(url), 404, "NoSuchKey")


@pytest.mark.parametrize(
    "raw_path",
    [
        "user-library/..%2F..%2Fjwt-secret",
        "user-library/a%2F..%2F..%2F..%2Fjwt-secret",
        "user-library/a%5C..%5Cb.png",
        "user-library/a%00b.png",
        "nope/a.png",
        ".tmp/x",
        "user-library/" + "x" * 600,
    ],
)
async def test_paths_that_leave_a_bucket_are_refused_before_any_file_is_touched(
    client: httpx.AsyncClient, local_store: ObjectStore, raw_path: str
) -> None:
    # given: a token minted for exactly that (bad) key, so only the path rules can stop it
    assert isinstance(local_store, LocalObjectStore)
    from urllib.parse import unquote

    key = unquote(raw_path)
    now = int(time.time())
    token = local_store.tokens.encode(key, issued_at=now, expires_at=now + 60)
    # when
    response = await client.get(f"{ROUTE}/{raw_path}?token={token}")
    # then
    assert_refused(response, 400, "InvalidKey")


async def test_the_token_payload_is_supabase_shaped(local_store: ObjectStore, stored: str) -> None:
    url = sign(local_store, stored, ttl=600)
    payload = token_of(url).split(".")[1]
    claims = orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert set(claims) == {"url", "iat", "exp"}
    assert claims["url"] == f"user-library/{stored}"
    assert claims["exp"] - claims["iat"] == 600
    assert url.startswith(f"http://testserver{ROUTE}/user-library/{stored}?token=")
