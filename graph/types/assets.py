"""Workspace and library images: where they are kept, what made them, URLs to show them."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from uuid import UUID

import strawberry
from strawberry.scalars import JSON
from strawberry.types import Info

from graph.context import Context
from graph.types.signed_url import SignedUrlType
from resolvers.images import check_ttl, signed_image
from storage.objects.paths import Bucket
from storage.user_library import LibraryAsset
from storage.workspace_assets import WorkspaceAsset

TTL_DESCRIPTION = "Seconds the URL should last; at most, and by default, the bucket's TTL."
TtlSeconds = Annotated[int | None, strawberry.argument(description=TTL_DESCRIPTION)]


def _signed(
    info: Info[Context, None], key: str | None, stored_keys: frozenset[str], owner_id: UUID, ttl_seconds: int | None
) -> SignedUrlType | None:
    """The same rules as a character's image: signed when the catalog holds it, else null."""
    signed = signed_image(
        key, owner_id=owner_id, stored_keys=stored_keys, signer=info.context.signer, ttl=check_ttl(ttl_seconds)
    )
    return SignedUrlType.from_model(signed)


@strawberry.type(name="WorkspaceAsset", description="A generated image in workspace-temp, kept until expiresAt.")
class WorkspaceAssetType:
    id: strawberry.ID
    job_id: strawberry.ID | None
    asset_type: str
    path: str = strawberry.field(
        description="The image as a character's imageUrl names it: workspace-temp/{user_id}/..."
    )
    thumbnail_path: str | None = strawberry.field(description="The WEBP thumbnail, workspace-temp/...thumb.webp.")
    mime_type: str
    file_size_bytes: int = strawberry.field(description="Fits a GraphQL Int: images are capped far below 2 GiB.")
    prompt: str | None
    model_key: str | None
    seed: int | None
    width: int | None
    height: int | None
    generation_settings: JSON
    created_at: datetime
    expires_at: datetime
    model: strawberry.Private[WorkspaceAsset]

    @strawberry.field(description="The image, signed for workspace-temp (1 h by default); null when it is gone.")
    def signed_url(
        self, info: Info[Context, None], ttl_seconds: TtlSeconds = None
    ) -> SignedUrlType | None:
        return _signed(info, self.path, self.model.stored_keys, self.model.user_id, ttl_seconds)

    @strawberry.field(description="The thumbnail (longest side 256 px by default), signed likewise.")
    def signed_thumbnail_url(
        self, info: Info[Context, None], ttl_seconds: TtlSeconds = None
    ) -> SignedUrlType | None:
        return _signed(info, self.thumbnail_path, self.model.stored_keys, self.model.user_id, ttl_seconds)

    @classmethod
    def from_model(cls, asset: WorkspaceAsset) -> WorkspaceAssetType:
        settings = asset.generation_settings
        prefix = f"{Bucket.WORKSPACE_TEMP.value}/"
        return cls(
            model=asset,
            id=strawberry.ID(str(asset.id)),
            job_id=None if asset.job_id is None else strawberry.ID(str(asset.job_id)),
            asset_type=asset.asset_type,
            path=asset.image_key,
            thumbnail_path=None if asset.thumbnail_path is None else prefix + asset.thumbnail_path,
            mime_type=asset.mime_type,
            file_size_bytes=asset.file_size_bytes,
            prompt=asset.original_prompt,
            model_key=asset.model_used,
            seed=asset.generation_seed,
            width=settings.get("width"),
            height=settings.get("height"),
            generation_settings=JSON(settings),
            created_at=asset.created_at,
            expires_at=asset.expires_at,
        )


@strawberry.type(name="LibraryAsset", description="An image kept for good in user-library.")
class LibraryAssetType:
    id: strawberry.ID
    asset_type: str
    path: str = strawberry.field(description="The image as a character's imageUrl names it: user-library/{user_id}/...")
    thumbnail_path: str | None
    mime_type: str
    file_size_bytes: int
    prompt: str | None
    model_key: str | None
    seed: int | None
    width: int | None
    height: int | None
    tags: list[str]
    roleplay_metadata: JSON = strawberry.field(
        description="For a character portrait: "
        "{type: 'character_portrait', character_id, character_name, consistency_method}."
    )
    content_category: str | None
    source_job_id: strawberry.ID | None
    created_at: datetime
    model: strawberry.Private[LibraryAsset]

    @strawberry.field(description="The image, signed for user-library (24 h by default); null when it is gone.")
    def signed_url(
        self, info: Info[Context, None], ttl_seconds: TtlSeconds = None
    ) -> SignedUrlType | None:
        return _signed(info, self.path, self.model.stored_keys, self.model.user_id, ttl_seconds)

    @strawberry.field(description="The thumbnail, signed likewise; what a library grid shows.")
    def signed_thumbnail_url(
        self, info: Info[Context, None], ttl_seconds: TtlSeconds = None
    ) -> SignedUrlType | None:
        return _signed(info, self.thumbnail_path, self.model.stored_keys, self.model.user_id, ttl_seconds)

    @classmethod
    def from_model(cls, asset: LibraryAsset) -> LibraryAssetType:
        prefix = f"{Bucket.USER_LIBRARY.value}/"
        return cls(
            model=asset,
            id=strawberry.ID(str(asset.id)),
            asset_type=asset.asset_type,
            path=asset.image_key,
            thumbnail_path=None if asset.thumbnail_path is None else prefix + asset.thumbnail_path,
            mime_type=asset.mime_type,
            file_size_bytes=asset.file_size_bytes,
            prompt=asset.original_prompt,
            model_key=asset.model_used,
            seed=asset.generation_seed,
            width=asset.width,
            height=asset.height,
            tags=list(asset.tags),
            roleplay_metadata=JSON(asset.roleplay_metadata),
            content_category=asset.content_category,
            source_job_id=None if asset.source_job_id is None else strawberry.ID(str(asset.source_job_id)),
            created_at=asset.created_at,
        )
