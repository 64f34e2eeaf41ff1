"""The Character type and its inputs, mirroring the seed's ``characters`` row."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any, cast

import strawberry
from strawberry.scalars import JSON
from strawberry.types import Info

from graph.arguments import OMITTED, given
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
from storage.characters import ALL_COLUMNS, Character

TTL_DESCRIPTION = (
    "Seconds the URL should last; at most, and by default, the bucket's TTL (user-library 24 h, workspace-temp 1 h)."
)
TtlSeconds = Annotated[int | None, strawberry.argument(description=TTL_DESCRIPTION)]


def _signed_image_url(
    root: Character, info: Info[Context, None], ttl_seconds: TtlSeconds = OMITTED
) -> SignedUrlType | None:
    return _sign(info, root, root.image_url, ttl_seconds)


def _signed_reference_image_url(
    root: Character, info: Info[Context, None], ttl_seconds: TtlSeconds = OMITTED
) -> SignedUrlType | None:
    return _sign(info, root, root.reference_image_url, ttl_seconds)


def _sign(
    info: Info[Context, None], character: Character, reference: str | None, ttl_seconds: int | None
) -> SignedUrlType | None:
    signed = signed_image(
        reference,
        owner_id=character.user_id,
        stored_keys=character.stored_image_keys,
        signer=info.context.signer,
        ttl=check_ttl(given(ttl_seconds)),
    )
    return SignedUrlType.from_model(signed)


@strawberry.type(name="Character", description="A roleplay character owned by the viewer.")
class CharacterType:
    """The GraphQL face of storage's ``Character`` row, which resolvers return as is: no second object per row.

    Rows stay frozen dataclasses at the storage/ boundary and the GraphQL type stays here; the type's fields
    carry the same Python names as the row's attributes, and strawberry resolves a field without resolver as
    ``getattr(source, python_name)``. The few that differ are cheap: graphql-core's ID serializes a UUID as
    ``str(uuid)``, a list field takes the row's tuple, the JSON scalar passes a dict through, and the enum is
    the very class storage uses. The signed URLs are resolvers given the row as ``root``. CharacterType has no
    interface, so strawberry gives it no ``is_type_of`` that would check the object's class. A row of a page
    may hold only the selected columns (storage/characters.py ``partial_characters``).
    """

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
    signed_image_url: SignedUrlType | None = strawberry.field(
        resolver=_signed_image_url,
        description="imageUrl as a URL to show: signed for our storage, as is for an external URL; "
        "null when there is no image or its object is gone.",
    )
    signed_reference_image_url: SignedUrlType | None = strawberry.field(
        resolver=_signed_reference_image_url,
        description="referenceImageUrl as a URL to show, by the same rules as signedImageUrl.",
    )

    @staticmethod
    def from_model(character: Character) -> CharacterType:
        """The row itself, typed as the GraphQL type it is resolved as (see the class docstring)."""
        return cast(CharacterType, character)

    @staticmethod
    def from_models(characters: Sequence[Character]) -> Sequence[CharacterType]:
        """The rows themselves, as ``from_model`` (a page's items: ``Connection.from_nodes``)."""
        return cast("Sequence[CharacterType]", characters)


# The fields a page's rows must hold for each Character field a client may select, by GraphQL name
# (graph/selections.py): storage fetches these columns and no others (plus the id, and the order's time for cursors).
CHARACTER_COLUMNS: dict[str, frozenset[str]] = {
    "id": frozenset({"id"}),
    "name": frozenset({"name"}),
    "description": frozenset({"description"}),
    "appearanceTags": frozenset({"appearance_tags"}),
    "traits": frozenset({"traits"}),
    "persona": frozenset({"persona"}),
    "gender": frozenset({"gender"}),
    "contentRating": frozenset({"content_rating"}),
    "sceneBehaviorRules": frozenset({"scene_behavior_rules"}),
    "imageUrl": frozenset({"image_url"}),
    "referenceImageUrl": frozenset({"reference_image_url"}),
    "seedLocked": frozenset({"seed_locked"}),
    "createdAt": frozenset({"created_at"}),
    "updatedAt": frozenset({"updated_at"}),
    # The catalogue probe (stored_objects) runs only for these.
    "signedImageUrl": frozenset({"user_id", "image_url", "stored_image_keys"}),
    "signedReferenceImageUrl": frozenset({"user_id", "reference_image_url", "stored_image_keys"}),
}


def character_columns(node_fields: frozenset[str]) -> frozenset[str]:
    """The Character attributes a page must fetch for ``node_fields``; every column for a field not known here
    (a field added to the type and not to CHARACTER_COLUMNS still works, fetched in full)."""
    columns: set[str] = set()
    for field in node_fields:
        needed = CHARACTER_COLUMNS.get(field)
        if needed is None:
            return ALL_COLUMNS
        columns |= needed
    return frozenset(columns)


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
