"""Rotated S3 credentials: cached signed URLs made with the old ones are not served again.

The store is opened on moto over HTTP with a credential chain of refreshable
session credentials, as an instance role or STS gives them; the chain is
aiobotocore's own, reached through botocore's public ``register_component``.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from aiobotocore.credentials import AioCredentialResolver, AioRefreshableCredentials
from aiobotocore.session import get_session
from botocore.credentials import CredentialProvider

from storage.objects.paths import Bucket, ObjectKey
from storage.objects.s3 import S3Config, S3ObjectStore
from storage.objects.signing import DEFAULT_TTL_SECONDS, SigningPolicy, UrlSigner

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4


class RotatingSessionCredentials(CredentialProvider):
    """Session credentials whose token is whatever ``token`` says when they are next refreshed."""

    METHOD = "test-rotating"

    def __init__(self) -> None:
        super().__init__()
        self.token = "session-token-1"

    async def load(self) -> AioRefreshableCredentials:
        return AioRefreshableCredentials.create_from_metadata(
            await self.current(), refresh_using=self.current, method=self.METHOD
        )

    async def current(self) -> dict[str, str]:
        # Five minutes from expiry: inside botocore's refresh window, so every read refreshes.
        expiry = (datetime.now(UTC) + timedelta(minutes=5)).isoformat()
        return {"access_key": "testing-key", "secret_key": "testing-secret", "token": self.token, "expiry_time": expiry}


@pytest.fixture
def credentials() -> RotatingSessionCredentials:
    return RotatingSessionCredentials()


@pytest.fixture
async def store(s3_endpoint: str, credentials: RotatingSessionCredentials) -> AsyncIterator[S3ObjectStore]:
    session = get_session()
    session.register_component("credential_provider", AioCredentialResolver([credentials]))
    config = S3Config(
        endpoint_url=s3_endpoint, region="us-east-1", bucket_prefix=f"t{uuid.uuid4().hex[:10]}-",
        credentials_refresh_seconds=0.05,
    )
    opened = await S3ObjectStore.open(config, session=session)
    yield opened
    await opened.close()


def session_token(url: str) -> str:
    return parse_qs(urlsplit(url).query)["X-Amz-Security-Token"][0]


async def test_a_rotated_session_token_is_not_served_from_the_url_cache(
    store: S3ObjectStore, credentials: RotatingSessionCredentials
) -> None:
    # given an object and a signer that has cached its URL for the current window (token 1)
    key = ObjectKey(Bucket.USER_LIBRARY, f"{uuid.uuid4()}/portrait.png")
    await store.put(key.bucket, key.path, PNG)
    clock_now = int(time.time())
    signer = UrlSigner(store, SigningPolicy(ttl_seconds=DEFAULT_TTL_SECONDS), clock=lambda: clock_now)
    before = signer.sign(key)
    assert session_token(before.url) == "session-token-1"
    assert signer.sign(key) == before  # cached: the same URL within the window

    # when the credentials rotate and the store has re-read them (same window: the clock is held still)
    credentials.token = "session-token-2"
    async with asyncio.timeout(10):
        while session_token(store.sign(key.bucket, key.path, issued_at=clock_now, expires_at=clock_now + 60)) \
                != "session-token-2":
            await asyncio.sleep(0.05)
    after = signer.sign(key)

    # then the signer hands out a URL with the new token, for the same window, and it downloads
    assert session_token(after.url) == "session-token-2"
    assert after.expires_at == before.expires_at
    async with httpx.AsyncClient() as http:
        response = await http.get(after.url)
    assert response.status_code == 200, response.text
    assert response.content == PNG


async def test_unchanged_credentials_keep_the_cached_url(store: S3ObjectStore) -> None:
    # given a signed URL, and a refresh that finds the same credentials again
    key = ObjectKey(Bucket.WORKSPACE_TEMP, f"{uuid.uuid4()}/x.png")
    clock_now = int(time.time())
    signer = UrlSigner(store, SigningPolicy(ttl_seconds=DEFAULT_TTL_SECONDS), clock=lambda: clock_now)
    first = signer.sign(key)
    await asyncio.sleep(0.2)  # several refresh rounds
    # when signed again in the same window, then it is the very same URL (the cache was kept)
    assert signer.sign(key).url is first.url
