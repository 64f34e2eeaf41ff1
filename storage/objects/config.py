"""Which object store to open, decided once from settings."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from storage.objects.local import LocalObjectStore
from storage.objects.s3 import S3Config, S3ObjectStore
from storage.objects.store import ObjectStore
from storage.objects.tokens import ObjectTokens, derive_key

LOCAL = "local"
S3 = "s3"


@dataclass(frozen=True, slots=True)
class ObjectStoreConfig:
    backend: str
    local_root: Path
    # Local signed URLs point at the app itself and are signed with a key derived from this secret
    # (JWT_SECRET; None only with S3, which signs with its own credentials).
    public_url: str
    signing_secret: str | None
    s3: S3Config | None = None


async def open_object_store(config: ObjectStoreConfig) -> ObjectStore:
    if config.backend == S3:
        if config.s3 is None:
            raise ValueError("the S3 backend needs an S3Config")
        return await S3ObjectStore.open(config.s3)
    if config.backend == LOCAL:
        if config.signing_secret is None:
            raise ValueError("the local backend needs a signing secret")
        tokens = ObjectTokens(derive_key(config.signing_secret))
        return LocalObjectStore(config.local_root, public_url=config.public_url, tokens=tokens)
    raise ValueError(f"unknown object store backend {config.backend!r}")
