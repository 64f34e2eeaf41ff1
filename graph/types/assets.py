"""Workspace and library images: where they are kept, what made them, URLs to show them."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from uuid import UUID

import strawberry
from strawberry.scalars import JSON
from strawberry.types import Info

from graph.arguments import OMITTED, given
from graph.context import Context
from graph.types.enums import AssetType
from graph.types.signed_url import SignedUrlType
from resolvers.characters import TAGS_MAX_COUNT
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
        key, owner_id=owner_id, stored_keys=stored_keys, signer=info.context.signer, ttl=check_ttl(given(ttl_seconds))
    )
    return SignedUrlType.from_model(signed)


@strawberry.type(name="WorkspaceAsset", description="A generated image in workspace-temp, kept until expiresAt.")
class WorkspaceAssetType:
    id: strawberry.ID = strawberry.field(description="The asset's id (a UUID), for saveToLibrary.")
    job_id: strawberry.ID | None = strawberry.field(
        description="The job that generated it; null for an image not made by a job."
    )
    asset_type: AssetType = strawberry.field(description="What the file is: IMAGE (VIDEO is reserved).")
    path: str = strawberry.field(
        description="The image as a character's imageUrl names it: workspace-temp/{user_id}/..."
    )
    thumbnail_path: str | None = strawberry.field(
        description="The WEBP thumbnail, workspace-temp/...thumb.webp; null when none was made."
    )
    mime_type: str = strawberry.field(description="The image's media type, as stored (image/png, image/webp...).")
    file_size_bytes: int = strawberry.field(
        description="The image's size in bytes. Fits a GraphQL Int: images are capped far below 2 GiB."
    )
    prompt: str | None = strawberry.field(description="The prompt the image was made from; null when unknown.")
    model_key: str | None = strawberry.field(description="The ImageModel.modelKey that made it; null when unknown.")
    seed: int | None = strawberry.field(description="The seed the image was made with; null when unknown.")
    width: int | None = strawberry.field(description="Width in pixels; null when unknown.")
    height: int | None = strawberry.field(description="Height in pixels; null when unknown.")
    generation_settings: JSON = strawberry.field(
        description="What the generation was asked for (model, quality, width, height...), as a JSON object."
    )
    created_at: datetime = strawberry.field(description="When the image was stored (UTC).")
    expires_at: datetime = strawberry.field(
        description="When the workspace drops it (UTC; 24 h after creation by default): save it to keep it."
    )
    model: strawberry.Private[WorkspaceAsset]

    @strawberry.field(description="The image, signed for workspace-temp (1 h by default); null when it is gone.")
    def signed_url(
        self, info: Info[Context, None], ttl_seconds: TtlSeconds = OMITTED
    ) -> SignedUrlType | None:
        return _signed(info, self.path, self.model.stored_keys, self.model.user_id, ttl_seconds)

    @strawberry.field(description="The thumbnail (longest side 256 px by default), signed likewise.")
    def signed_thumbnail_url(
        self, info: Info[Context, None], ttl_seconds: TtlSeconds = OMITTED
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
    id: strawberry.ID = strawberry.field(description="The asset's id (a UUID), for deleteLibraryAsset.")
    asset_type: AssetType = strawberry.field(description="What the file is: IMAGE (VIDEO is reserved).")
    path: str = strawberry.field(description="The image as a character's imageUrl names it: user-library/{user_id}/...")
    thumbnail_path: str | None = strawberry.field(
        description="The WEBP thumbnail, user-library/...thumb.webp; null when none was made."
    )
    mime_type: str = strawberry.field(description="The image's media type, as stored (image/png, image/webp...).")
    file_size_bytes: int = strawberry.field(description="The image's size in bytes.")
    prompt: str | None = strawberry.field(description="The prompt the image was made from; null when unknown.")
    model_key: str | None = strawberry.field(description="The ImageModel.modelKey that made it; null when unknown.")
    seed: int | None = strawberry.field(description="The seed the image was made with; null when unknown.")
    width: int | None = strawberry.field(description="Width in pixels; null when unknown.")
    height: int | None = strawberry.field(description="Height in pixels; null when unknown.")
    tags: list[str] = strawberry.field(
        description=f"Up to {TAGS_MAX_COUNT} tags; a 'character' tag puts it in the CHARACTERS tab."
    )
    roleplay_metadata: JSON = strawberry.field(
        description="For a character portrait: "
        "{type: 'character_portrait', character_id, character_name, consistency_method}."
    )
    content_category: str | None = strawberry.field(
        description="A free-form category; 'character' puts it in the CHARACTERS tab. Null when none."
    )
    source_job_id: strawberry.ID | None = strawberry.field(
        description="The job that generated it; null for an image saved otherwise."
    )
    created_at: datetime = strawberry.field(description="When the image was saved to the library (UTC).")
    model: strawberry.Private[LibraryAsset]

    @strawberry.field(description="The image, signed for user-library (24 h by default); null when it is gone.")
    def signed_url(
        self, info: Info[Context, None], ttl_seconds: TtlSeconds = OMITTED
    ) -> SignedUrlType | None:
        return _signed(info, self.path, self.model.stored_keys, self.model.user_id, ttl_seconds)

    @strawberry.field(description="The thumbnail, signed likewise; what a library grid shows.")
    def signed_thumbnail_url(
        self, info: Info[Context, None], ttl_seconds: TtlSeconds = OMITTED
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
