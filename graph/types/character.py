"""The Character type and its inputs, mirroring the seed's ``characters`` row."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import strawberry
from strawberry.scalars import JSON
from strawberry.types import Info

from graph.context import Context
from graph.types.enums import ContentRating
from graph.types.signed_url import SignedUrlType
from resolvers.characters import (
    DESCRIPTION_MAX,
    GENDER_MAX,
    NAME_MAX,
    PERSONA_MAX,
    SCENE_RULES_MAX_BYTES,
    SCENE_RULES_MAX_DEPTH,
    TAG_MAX,
    TAGS_MAX_COUNT,
    TRAITS_MAX,
)
from resolvers.images import check_ttl, signed_image
from storage.characters import Character

TTL_DESCRIPTION = (
    "Seconds the URL should last; at most, and by default, the bucket's TTL (user-library 24 h, workspace-temp 1 h)."
)
TtlSeconds = Annotated[int | None, strawberry.argument(description=TTL_DESCRIPTION)]


@strawberry.type(name="Character", description="A roleplay character owned by the viewer.")
class CharacterType:
    id: strawberry.ID = strawberry.field(description="The character's id (a UUID).")
    name: str = strawberry.field(description=f"1-{NAME_MAX} characters.")
    description: str = strawberry.field(
        description=f"1-{DESCRIPTION_MAX} characters: who the character is; portrait prompts are built from it."
    )
    appearance_tags: list[str] = strawberry.field(
        description=f"Up to {TAGS_MAX_COUNT} tags of 1-{TAG_MAX} characters; empty when none were given."
    )
    traits: str | None = strawberry.field(description=f"Up to {TRAITS_MAX} characters; null when not given.")
    persona: str | None = strawberry.field(description=f"Up to {PERSONA_MAX} characters; null when not given.")
    gender: str | None = strawberry.field(
        description=f"Free text of up to {GENDER_MAX} characters; null when not given."
    )
    content_rating: ContentRating = strawberry.field(description="Who the character is suitable for.")
    scene_behavior_rules: JSON | None = strawberry.field(
        description=f"A JSON object of at most {SCENE_RULES_MAX_BYTES // 1024} KiB, nested at most "
        f"{SCENE_RULES_MAX_DEPTH} levels, kept as given for the app's scenes; null when not given."
    )
    image_url: str | None = strawberry.field(
        description="Where the portrait is kept: a storage path (user-library/..., workspace-temp/...) "
        "or an external http(s) URL. Never a signed URL."
    )
    reference_image_url: str | None = strawberry.field(
        description="The image used for consistency in scene generation; same forms as imageUrl."
    )
    seed_locked: int | None = strawberry.field(
        description="The generation seed kept for a consistent look: set by the first portrait; null before one."
    )
    created_at: datetime = strawberry.field(description="When the character was created (UTC).")
    updated_at: datetime = strawberry.field(
        description="When the character last changed (UTC), its image included."
    )
    model: strawberry.Private[Character]

    @strawberry.field(description="imageUrl as a URL to show: signed for our storage, as is for an external URL; "
                      "null when there is no image or its object is gone.")
    def signed_image_url(
        self, info: Info[Context, None], ttl_seconds: TtlSeconds = None
    ) -> SignedUrlType | None:
        return self._sign(info, self.model.image_url, ttl_seconds)

    @strawberry.field(description="referenceImageUrl as a URL to show, by the same rules as signedImageUrl.")
    def signed_reference_image_url(
        self, info: Info[Context, None], ttl_seconds: TtlSeconds = None
    ) -> SignedUrlType | None:
        return self._sign(info, self.model.reference_image_url, ttl_seconds)

    def _sign(self, info: Info[Context, None], reference: str | None, ttl_seconds: int | None) -> SignedUrlType | None:
        signed = signed_image(
            reference,
            owner_id=self.model.user_id,
            stored_keys=self.model.stored_image_keys,
            signer=info.context.signer,
            ttl=check_ttl(ttl_seconds),
        )
        return SignedUrlType.from_model(signed)

    @classmethod
    def from_model(cls, character: Character) -> CharacterType:
        return cls(
            model=character,
            id=strawberry.ID(str(character.id)),
            name=character.name,
            description=character.description,
            appearance_tags=list(character.appearance_tags),
            traits=character.traits,
            persona=character.persona,
            gender=character.gender,
            content_rating=character.content_rating,
            scene_behavior_rules=_json_or_none(character.scene_behavior_rules),
            image_url=character.image_url,
            reference_image_url=character.reference_image_url,
            seed_locked=character.seed_locked,
            created_at=character.created_at,
            updated_at=character.updated_at,
        )


@strawberry.input(description="A new character. Name and description are required.")
class CreateCharacterInput:
    name: str = strawberry.field(description="1-100 characters, trimmed.")
    description: str = strawberry.field(description="1-4000 characters, trimmed.")
    appearance_tags: list[str] | None = strawberry.field(default=None, description="Up to 30 tags of 1-50 characters.")
    traits: str | None = strawberry.field(default=None, description="Up to 1000 characters.")
    persona: str | None = strawberry.field(default=None, description="Up to 4000 characters.")
    gender: str | None = strawberry.field(default=None, description="Up to 50 characters.")
    content_rating: ContentRating = strawberry.field(
        default=ContentRating.SFW, description="Who the character is suitable for; SFW when omitted."
    )
    scene_behavior_rules: JSON | None = strawberry.field(
        default=None, description="A JSON object of at most 16 KiB, nested at most 10 levels."
    )
    image_url: str | None = strawberry.field(
        default=None,
        description="An external http(s) image URL (not a signed one), or a path in your own storage: "
        "user-library/{your user id}/..., workspace-temp/{your user id}/..., or {your user id}/... (user-library).",
    )
    reference_image_url: str | None = strawberry.field(default=None, description="Same rules as imageUrl.")
    portrait_job_id: strawberry.ID | None = strawberry.field(
        default=None,
        description="A draft portrait job (generateCharacterPortrait with draft) whose portrait the character takes; "
        "queued, running or completed, not yet used by another character.",
    )

    def to_fields(self) -> dict[str, Any]:
        return _fields(self)


@strawberry.input(description="A partial update: omitted fields keep their value, null clears an optional one.")
class UpdateCharacterInput:
    name: str | None = strawberry.field(
        default=strawberry.UNSET, description=f"1-{NAME_MAX} characters, trimmed; null is refused."
    )
    description: str | None = strawberry.field(
        default=strawberry.UNSET, description=f"1-{DESCRIPTION_MAX} characters, trimmed; null is refused."
    )
    appearance_tags: list[str] | None = strawberry.field(
        default=strawberry.UNSET,
        description=f"Up to {TAGS_MAX_COUNT} tags of 1-{TAG_MAX} characters; replaces the list (null empties it).",
    )
    traits: str | None = strawberry.field(default=strawberry.UNSET, description=f"Up to {TRAITS_MAX} characters.")
    persona: str | None = strawberry.field(
        default=strawberry.UNSET, description=f"Up to {PERSONA_MAX} characters."
    )
    gender: str | None = strawberry.field(default=strawberry.UNSET, description=f"Up to {GENDER_MAX} characters.")
    content_rating: ContentRating | None = strawberry.field(
        default=strawberry.UNSET, description="Who the character is suitable for; null is refused."
    )
    scene_behavior_rules: JSON | None = strawberry.field(
        default=strawberry.UNSET,
        description=f"A JSON object of at most {SCENE_RULES_MAX_BYTES // 1024} KiB, nested at most "
        f"{SCENE_RULES_MAX_DEPTH} levels.",
    )
    image_url: str | None = strawberry.field(
        default=strawberry.UNSET,
        description="Same rules as CreateCharacterInput.imageUrl; null or an empty string clears the image.",
    )
    reference_image_url: str | None = strawberry.field(
        default=strawberry.UNSET, description="Same rules as imageUrl."
    )

    def to_fields(self) -> dict[str, Any]:
        return _fields(self)


def _json_or_none(value: dict[str, Any] | None) -> JSON | None:
    return None if value is None else JSON(value)


_INPUT_FIELDS = (
    "name",
    "description",
    "appearance_tags",
    "traits",
    "persona",
    "gender",
    "content_rating",
    "scene_behavior_rules",
    "image_url",
    "reference_image_url",
)


def _fields(data: CreateCharacterInput | UpdateCharacterInput) -> dict[str, Any]:
    """The fields the client gave (an omitted one is absent, null is None), for the resolvers to check."""
    fields: dict[str, Any] = {}
    for name in _INPUT_FIELDS:
        value = getattr(data, name)
        if value is not strawberry.UNSET:
            fields[name] = value
    return fields
