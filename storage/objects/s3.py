"""The S3 object store through aiobotocore: AWS S3, MinIO, R2, Supabase's S3 endpoint.

Bucket names on S3 are ``{bucket_prefix}{bucket}`` (AWS bucket names are
global, so a deployment may need a prefix). botocore exceptions are wrapped
here and nowhere else. URLs are signed by ``sigv4.Presigner`` with the
credentials aiobotocore resolved; refreshable ones (STS, instance roles) are
re-read in the background.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Hashable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING

from aiobotocore.config import AioConfig
from aiobotocore.credentials import AioCredentials
from aiobotocore.session import AioSession, get_session
from botocore.exceptions import BotoCoreError, ClientError

from storage.objects.paths import Bucket, check_path, content_type_for
from storage.objects.sigv4 import Credentials, Presigner
from storage.objects.store import DEFAULT_CHUNK_SIZE, ObjectInfo, ObjectNotFound, ObjectStoreUnavailable

if TYPE_CHECKING:  # types-aiobotocore-s3 is a dev dependency: the client's type, not its code
    from types_aiobotocore_s3 import S3Client

logger = logging.getLogger(__name__)

AWS_DEFAULT_ENDPOINT = "https://s3.{region}.amazonaws.com"
CREDENTIALS_REFRESH_SECONDS = 300
_MISSING = {"NoSuchKey", "404", "NotFound"}
_BUCKET_EXISTS = {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}


@dataclass(frozen=True, slots=True)
class S3Config:
    endpoint_url: str | None
    region: str
    bucket_prefix: str = ""
    # None: path style for a custom endpoint (MinIO, moto, Supabase), virtual hosts on AWS.
    path_style: bool | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = None
    session_token: str | None = None
    create_buckets: bool = True
    max_connections: int = 32
    # How often refreshable credentials (STS, instance roles) are re-read for signing.
    credentials_refresh_seconds: float = CREDENTIALS_REFRESH_SECONDS


class S3ObjectStore:
    def __init__(self, client: S3Client, presigner: Presigner, config: S3Config, stack: AsyncExitStack) -> None:
        self._client = client
        self._presigner = presigner
        self._config = config
        self._stack = stack
        self._refresher: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, config: S3Config, *, session: AioSession | None = None) -> S3ObjectStore:
        """Connect, resolve credentials and (by default) create the buckets that are missing."""
        session = session or get_session()
        path_style = config.path_style if config.path_style is not None else config.endpoint_url is not None
        endpoint_url = config.endpoint_url or AWS_DEFAULT_ENDPOINT.format(region=config.region)
        stack = AsyncExitStack()
        try:
            client = await stack.enter_async_context(
                session.create_client(
                    "s3",
                    region_name=config.region,
                    endpoint_url=endpoint_url,
                    aws_access_key_id=config.access_key_id,
                    aws_secret_access_key=config.secret_access_key,
                    aws_session_token=config.session_token,
                    config=AioConfig(
                        signature_version="s3v4",
                        s3={"addressing_style": "path" if path_style else "virtual"},
                        max_pool_connections=config.max_connections,
                        retries={"max_attempts": 3, "mode": "standard"},
                        connect_timeout=5,
                        read_timeout=30,
                    ),
                )
            )
            resolved: AioCredentials | None = None
            if config.access_key_id is not None:
                credentials = Credentials(config.access_key_id, config.secret_access_key or "", config.session_token)
            else:  # the default chain: environment, profile, container or instance role
                resolved = await session.get_credentials()
                if resolved is None:
                    raise ObjectStoreUnavailable(
                        "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or an AWS profile or role)"
                    )
                credentials = await _frozen(resolved)
            store = cls(
                client,
                Presigner(
                    endpoint_url=endpoint_url, region=config.region, credentials=credentials, path_style=path_style
                ),
                config,
                stack,
            )
            if config.create_buckets:
                await store.create_buckets()
            if resolved is not None and hasattr(resolved, "refresh_needed"):
                store._refresher = asyncio.create_task(store._refresh_credentials(resolved))
            return store
        except BaseException:
            await stack.aclose()
            raise

    def bucket_name(self, bucket: Bucket) -> str:
        return f"{self._config.bucket_prefix}{bucket.value}"

    async def create_buckets(self) -> None:
        for bucket in Bucket:
            try:
                await self._client.create_bucket(Bucket=self.bucket_name(bucket))
            except ClientError as error:
                if _code(error) not in _BUCKET_EXISTS:
                    raise _wrap(error, f"create bucket {self.bucket_name(bucket)}") from error
            except BotoCoreError as error:
                raise _wrap(error, "create buckets") from error

    async def put(self, bucket: Bucket, path: str, data: bytes) -> ObjectInfo:
        key = check_path(path)
        try:
            response = await self._client.put_object(
                Bucket=self.bucket_name(bucket), Key=key, Body=data, ContentType=content_type_for(key)
            )
        except (ClientError, BotoCoreError) as error:
            raise _wrap(error, f"put {bucket.value}/{path}") from error
        last_modified = _http_date(response["ResponseMetadata"]["HTTPHeaders"].get("date"))
        return ObjectInfo(bucket, key, len(data), content_type_for(key), response["ETag"], last_modified)

    async def get(self, bucket: Bucket, path: str) -> bytes:
        try:
            response = await self._client.get_object(Bucket=self.bucket_name(bucket), Key=check_path(path))
            async with response["Body"] as body:
                data: bytes = await body.read()
                return data
        except (ClientError, BotoCoreError) as error:
            raise _wrap(error, f"get {bucket.value}/{path}") from error

    async def stream(self, bucket: Bucket, path: str, *, chunk_size: int = DEFAULT_CHUNK_SIZE) -> AsyncIterator[bytes]:
        try:
            response = await self._client.get_object(Bucket=self.bucket_name(bucket), Key=check_path(path))
        except (ClientError, BotoCoreError) as error:
            raise _wrap(error, f"get {bucket.value}/{path}") from error
        async with response["Body"] as body:
            try:
                async for chunk in body.iter_chunks(chunk_size):
                    yield chunk
            except (ClientError, BotoCoreError, OSError) as error:
                raise _wrap(error, f"read {bucket.value}/{path}") from error

    async def head(self, bucket: Bucket, path: str) -> ObjectInfo:
        key = check_path(path)
        try:
            response = await self._client.head_object(Bucket=self.bucket_name(bucket), Key=key)
        except (ClientError, BotoCoreError) as error:
            raise _wrap(error, f"head {bucket.value}/{path}") from error
        return ObjectInfo(
            bucket, key, response["ContentLength"], response.get("ContentType") or content_type_for(key),
            response["ETag"], response["LastModified"],
        )

    async def copy(self, bucket: Bucket, path: str, *, to_bucket: Bucket, to_path: str) -> ObjectInfo:
        source, target = check_path(path), check_path(to_path)
        try:
            await self._client.copy_object(
                Bucket=self.bucket_name(to_bucket),
                Key=target,
                CopySource={"Bucket": self.bucket_name(bucket), "Key": source},
                ContentType=content_type_for(target),
                MetadataDirective="REPLACE",
            )
        except (ClientError, BotoCoreError) as error:
            raise _wrap(error, f"copy {bucket.value}/{path} to {to_bucket.value}/{to_path}") from error
        # CopyObjectResult has no size; one HEAD gives the whole ObjectInfo.
        return await self.head(to_bucket, target)

    async def delete(self, bucket: Bucket, path: str) -> None:
        try:
            await self._client.delete_object(Bucket=self.bucket_name(bucket), Key=check_path(path))
        except (ClientError, BotoCoreError) as error:
            wrapped = _wrap(error, f"delete {bucket.value}/{path}")
            if not isinstance(wrapped, ObjectNotFound):
                raise wrapped from error

    async def list_objects(self, bucket: Bucket, prefix: str = "") -> list[ObjectInfo]:
        found: list[ObjectInfo] = []
        paginator = self._client.get_paginator("list_objects_v2")
        try:
            async for page in paginator.paginate(Bucket=self.bucket_name(bucket), Prefix=prefix):
                for item in page.get("Contents", ()):
                    path = item["Key"]
                    size, etag, modified = item["Size"], item["ETag"], item["LastModified"]
                    found.append(ObjectInfo(bucket, path, size, content_type_for(path), etag, modified))
        except (ClientError, BotoCoreError) as error:
            raise _wrap(error, f"list {bucket.value}/{prefix}") from error
        return found

    def sign(self, bucket: Bucket, path: str, *, issued_at: int, expires_at: int) -> str:
        return self._presigner.url(
            self.bucket_name(bucket), path, issued_at=issued_at, expires_in=expires_at - issued_at
        )

    def signing_identity(self) -> Hashable:
        return self._presigner.credentials

    async def _refresh_credentials(self, resolved: AioCredentials) -> None:
        while True:
            await asyncio.sleep(self._config.credentials_refresh_seconds)
            try:
                current = await _frozen(resolved)
            except Exception:  # keep the old ones; the next round tries again
                logger.exception("could not refresh S3 credentials")
                continue
            if current != self._presigner.credentials:
                self._presigner.credentials = current

    async def close(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
        await self._stack.aclose()


async def _frozen(resolved: AioCredentials) -> Credentials:
    """The resolved credentials as they are now; a chain that yields no key pair is no credentials at all."""
    frozen = await resolved.get_frozen_credentials()
    if frozen.access_key is None or frozen.secret_key is None:
        raise ObjectStoreUnavailable("the S3 credential chain gave no access key and secret")
    return Credentials(frozen.access_key, frozen.secret_key, frozen.token)


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def _wrap(error: Exception, action: str) -> Exception:
    if isinstance(error, ClientError):
        code = _code(error)
        if code in _MISSING:
            return ObjectNotFound(action)
        return ObjectStoreUnavailable(f"S3 refused to {action}: {code} {error}")
    return ObjectStoreUnavailable(f"S3 unreachable during {action}: {error}")


def _http_date(value: str | None) -> datetime:
    return parsedate_to_datetime(value) if value else datetime.now(UTC)
