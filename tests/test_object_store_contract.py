"""The object-store contract: every test runs on the local folder and on S3 (moto over HTTP).

moto does not check query-string signatures, so expiry and tampering of S3
URLs are proven differently: ``test_sigv4.py`` shows our URLs equal
botocore's own, byte for byte. The local route's refusals are in
``test_signed_urls.py``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable

import httpx
import pytest

from storage.objects.paths import Bucket, InvalidObjectPath
from storage.objects.store import ObjectNotFound, ObjectStore

Fetch = Callable[..., Awaitable[httpx.Response]]
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40
WEBP = b"RIFF\x00\x00\x00\x00WEBPVP8 " + b"thumb" * 100


def folder() -> str:
    """A fresh owner folder per test: stores are shared by the session."""
    return str(uuid.uuid4())


async def test_put_then_get_and_head_give_back_the_object(object_store: ObjectStore) -> None:
    # given
    path = f"{folder()}/job_1.png"
    # when
    written = await object_store.put(Bucket.WORKSPACE_TEMP, path, PNG)
    # then
    assert await object_store.get(Bucket.WORKSPACE_TEMP, path) == PNG
    head = await object_store.head(Bucket.WORKSPACE_TEMP, path)
    assert (head.size, head.content_type, head.etag) == (len(PNG), "image/png", written.etag)
    assert head.etag.startswith('"') and head.etag.endswith('"')
    assert written.key == f"workspace-temp/{path}"


async def test_content_type_follows_the_extension(object_store: ObjectStore) -> None:
    base = folder()
    for name, expected in (
        ("a.thumb.webp", "image/webp"),
        ("b.JPG", "image/jpeg"),
        ("c.bin", "application/octet-stream"),
    ):
        await object_store.put(Bucket.USER_LIBRARY, f"{base}/{name}", WEBP)
        assert (await object_store.head(Bucket.USER_LIBRARY, f"{base}/{name}")).content_type == expected


async def test_rewriting_an_object_replaces_it_and_changes_its_etag(object_store: ObjectStore) -> None:
    # given
    path = f"{folder()}/x.png"
    first = await object_store.put(Bucket.USER_LIBRARY, path, PNG)
    # when
    second = await object_store.put(Bucket.USER_LIBRARY, path, PNG[:100])
    # then
    assert await object_store.get(Bucket.USER_LIBRARY, path) == PNG[:100]
    assert second.etag != first.etag
    assert (await object_store.head(Bucket.USER_LIBRARY, path)).size == 100


async def test_missing_objects_raise_object_not_found(object_store: ObjectStore) -> None:
    path = f"{folder()}/missing.png"
    with pytest.raises(ObjectNotFound):
        await object_store.get(Bucket.USER_LIBRARY, path)
    with pytest.raises(ObjectNotFound):
        await object_store.head(Bucket.USER_LIBRARY, path)
    with pytest.raises(ObjectNotFound):
        await object_store.copy(Bucket.USER_LIBRARY, path, to_bucket=Bucket.USER_LIBRARY, to_path=f"{folder()}/y.png")
    with pytest.raises(ObjectNotFound):
        async for _ in object_store.stream(Bucket.USER_LIBRARY, path):
            pass


async def test_stream_yields_the_whole_object_in_chunks(object_store: ObjectStore) -> None:
    path = f"{folder()}/big.png"
    data = PNG * 50
    await object_store.put(Bucket.USER_LIBRARY, path, data)
    chunks = [chunk async for chunk in object_store.stream(Bucket.USER_LIBRARY, path, chunk_size=4096)]
    assert b"".join(chunks) == data
    assert len(chunks) > 1
    assert all(len(chunk) <= 4096 for chunk in chunks)


async def test_copy_across_buckets_keeps_the_source(object_store: ObjectStore) -> None:
    # given: a workspace image, as the generation step leaves it
    owner = folder()
    source = f"{owner}/job_123.png"
    await object_store.put(Bucket.WORKSPACE_TEMP, source, PNG)
    # when: auto-save copies it to the library
    copied = await object_store.copy(
        Bucket.WORKSPACE_TEMP, source, to_bucket=Bucket.USER_LIBRARY, to_path=f"{owner}/job_char.png"
    )
    # then
    assert await object_store.get(Bucket.USER_LIBRARY, f"{owner}/job_char.png") == PNG
    assert await object_store.get(Bucket.WORKSPACE_TEMP, source) == PNG
    assert (copied.bucket, copied.path, copied.size, copied.content_type) == (
        Bucket.USER_LIBRARY, f"{owner}/job_char.png", len(PNG), "image/png"
    )


async def test_copy_is_idempotent_and_overwrites(object_store: ObjectStore) -> None:
    owner = folder()
    await object_store.put(Bucket.WORKSPACE_TEMP, f"{owner}/a.png", PNG)
    await object_store.put(Bucket.USER_LIBRARY, f"{owner}/b.png", b"old")
    for _ in range(2):
        await object_store.copy(
            Bucket.WORKSPACE_TEMP, f"{owner}/a.png", to_bucket=Bucket.USER_LIBRARY, to_path=f"{owner}/b.png"
        )
    assert await object_store.get(Bucket.USER_LIBRARY, f"{owner}/b.png") == PNG


async def test_delete_removes_and_is_idempotent(object_store: ObjectStore) -> None:
    path = f"{folder()}/gone.png"
    await object_store.put(Bucket.WORKSPACE_TEMP, path, PNG)
    await object_store.delete(Bucket.WORKSPACE_TEMP, path)
    await object_store.delete(Bucket.WORKSPACE_TEMP, path)
    with pytest.raises(ObjectNotFound):
        await object_store.head(Bucket.WORKSPACE_TEMP, path)


async def test_list_uses_plain_string_prefixes_and_sorts_by_path(object_store: ObjectStore) -> None:
    # given
    owner = folder()
    for path in (f"{owner}/b.png", f"{owner}/a.png", f"{owner}/a.thumb.webp", f"{owner}/ab/c.png"):
        await object_store.put(Bucket.USER_LIBRARY, path, PNG)
    await object_store.put(Bucket.WORKSPACE_TEMP, f"{owner}/a.png", PNG)
    # when
    everything = await object_store.list_objects(Bucket.USER_LIBRARY, f"{owner}/")
    starting_with_a = await object_store.list_objects(Bucket.USER_LIBRARY, f"{owner}/a")
    # then
    assert [info.path for info in everything] == [
        f"{owner}/a.png", f"{owner}/a.thumb.webp", f"{owner}/ab/c.png", f"{owner}/b.png"
    ]
    assert [info.path for info in starting_with_a] == [f"{owner}/a.png", f"{owner}/a.thumb.webp", f"{owner}/ab/c.png"]
    assert all(info.size == len(PNG) for info in everything)
    assert await object_store.list_objects(Bucket.USER_LIBRARY, f"{folder()}/") == []


async def test_a_signed_url_downloads_the_object(object_store: ObjectStore, fetch: Fetch) -> None:
    # given
    path = f"{folder()}/signed me.png"
    await object_store.put(Bucket.USER_LIBRARY, path, PNG)
    now = int(time.time())
    # when
    url = object_store.sign(Bucket.USER_LIBRARY, path, issued_at=now, expires_at=now + 600)
    response = await fetch(url)
    # then
    assert response.status_code == 200, response.text
    assert response.content == PNG
    assert response.headers["content-type"] == "image/png"


async def test_signing_is_deterministic_for_the_same_times(object_store: ObjectStore) -> None:
    now = int(time.time())
    first = object_store.sign(Bucket.USER_LIBRARY, "u/x.png", issued_at=now, expires_at=now + 60)
    again = object_store.sign(Bucket.USER_LIBRARY, "u/x.png", issued_at=now, expires_at=now + 60)
    later = object_store.sign(Bucket.USER_LIBRARY, "u/x.png", issued_at=now, expires_at=now + 120)
    assert first == again
    assert later != first


ESCAPES = [
    "../x.png",
    "a/../../x.png",
    "a/./x.png",
    "/etc/passwd",
    "a//b.png",
    "a/",
    "a\\..\\b.png",
    "a\x00b.png",
    "a\nb.png",
    "",
    "x" * 600,
    "a/" + "y" * 300 + ".png",
]


@pytest.mark.parametrize("path", ESCAPES, ids=lambda path: repr(path)[:30])
async def test_paths_that_could_escape_their_bucket_are_refused_everywhere(
    object_store: ObjectStore, path: str
) -> None:
    with pytest.raises(InvalidObjectPath):
        await object_store.put(Bucket.USER_LIBRARY, path, PNG)
    with pytest.raises(InvalidObjectPath):
        await object_store.get(Bucket.USER_LIBRARY, path)
    with pytest.raises(InvalidObjectPath):
        await object_store.head(Bucket.USER_LIBRARY, path)
    with pytest.raises(InvalidObjectPath):
        await object_store.delete(Bucket.USER_LIBRARY, path)
    with pytest.raises(InvalidObjectPath):
        await object_store.copy(Bucket.USER_LIBRARY, "u/ok.png", to_bucket=Bucket.USER_LIBRARY, to_path=path)
