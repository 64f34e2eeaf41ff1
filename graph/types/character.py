"""The Character type and its inputs, mirroring the seed's ``characters`` row."""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Any

import strawberry
from strawberry.scalars import JSON

from storage.characters import Character


@strawberry.enum(description="Who the character is suitable for.")
class ContentRating(Enum):
    SFW = "sfw"
    NSFW = "nsfw"


@strawberry.type(name="Character", description="A roleplay character owned by the viewer.")
class CharacterType:
    id: strawberry.ID
    name: str
    description: str
    appearance_tags: list[str]
    traits: str | None
    persona: str | None
    gender: str | None
    content_rating: ContentRating
    scene_behavior_rules: JSON | None
    image_url: str | None = strawberry.field(
        description="Where the portrait is kept: a storage path (user-library/..., workspace-temp/...) "
        "or an external http(s) URL. Never a signed URL."
    )
    reference_image_url: str | None = strawberry.field(
        description="The image used for consistency in scene generation; same forms as imageUrl."
    )
    seed_locked: int | None = strawberry.field(description="The generation seed kept for a consistent look.")
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_model(cls, character: Character) -> CharacterType:
        return cls(
            id=strawberry.ID(str(character.id)),
            name=character.name,
            description=character.description,
            appearance_tags=list(character.appearance_tags),
            traits=character.traits,
            persona=character.persona,
            gender=character.gender,
            content_rating=ContentRating(character.content_rating),
            scene_behavior_rules=character.scene_behavior_rules,
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
    content_rating: ContentRating = ContentRating.SFW
    scene_behavior_rules: JSON | None = strawberry.field(
        default=None, description="A JSON object of at most 16 KiB, nested at most 10 levels."
    )
    image_url: str | None = strawberry.field(default=None, description="An external http(s) image URL (not a signed one).")
    reference_image_url: str | None = strawberry.field(default=None, description="Same rules as imageUrl.")

    def to_fields(self) -> dict[str, Any]:
        return _fields(self)


@strawberry.input(description="A partial update: omitted fields keep their value, null clears an optional one.")
class UpdateCharacterInput:
    name: str | None = strawberry.UNSET
    description: str | None = strawberry.UNSET
    appearance_tags: list[str] | None = strawberry.UNSET
    traits: str | None = strawberry.UNSET
    persona: str | None = strawberry.UNSET
    gender: str | None = strawberry.UNSET
    content_rating: ContentRating | None = strawberry.UNSET
    scene_behavior_rules: JSON | None = strawberry.UNSET
    image_url: str | None = strawberry.UNSET
    reference_image_url: str | None = strawberry.UNSET

    def to_fields(self) -> dict[str, Any]:
        return _fields(self)


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
    """The given fields as plain values (enums to their stored value), for the resolvers."""
    fields: dict[str, Any] = {}
    for name in _INPUT_FIELDS:
        value = getattr(data, name)
        if value is strawberry.UNSET:
            continue
        fields[name] = value.value if isinstance(value, Enum) else value
    return fields
