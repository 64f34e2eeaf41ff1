"""Image models a client can choose when generating."""

from __future__ import annotations

from collections.abc import Collection

import strawberry

from graph.types.enums import Provider
from storage.image_models import ImageModel


@strawberry.type(name="ImageSize", description="A width and height, in pixels.")
class ImageSizeType:
    width: int = strawberry.field(description="Pixels across.")
    height: int = strawberry.field(description="Pixels down.")


@strawberry.type(name="ImageModel", description="An image model to generate with: pass its id as modelId.")
class ImageModelType:
    id: strawberry.ID = strawberry.field(description="The model's id (a UUID), for modelId.")
    model_key: str = strawberry.field(
        description="The provider's name for the model (as in Job.modelKey), e.g. local/portrait-v1."
    )
    display_name: str = strawberry.field(description="A name to show people.")
    provider: Provider = strawberry.field(description="Which image provider runs it.")
    is_default: bool = strawberry.field(description="The model used when modelId is omitted; one model at most.")
    available: bool = strawberry.field(
        description="Whether this server can run it: false when its provider is not configured (a FAL model "
        "without FAL_KEY, a REPLICATE model without REPLICATE_API_TOKEN). Generating with an unavailable model is "
        "BAD_USER_INPUT."
    )
    supports_reference: bool = strawberry.field(
        description="Whether it takes a character's reference image (generateImage with characterId, "
        "generateCharacterPortrait with useReference); asking one that does not is BAD_USER_INPUT."
    )
    requires_reference: bool = strawberry.field(
        description="Whether it works only from a reference image (an image-to-image model): generating "
        "without one is BAD_USER_INPUT."
    )
    supports_seed: bool = strawberry.field(
        description="Whether it takes a seed (the same seed and prompt make the same image); a seed given to "
        "one that does not is BAD_USER_INPUT."
    )
    sizes: list[ImageSizeType] = strawberry.field(
        description="Sizes the model makes, the one to suggest first. This server generates every image at "
        "its IMAGE_SIZE square."
    )
    max_side: int | None = strawberry.field(
        description="The longest side, in pixels, of a size of one's own; null when it makes only `sizes`."
    )
    typical_latency_seconds: float = strawberry.field(
        description="Roughly how long one image takes, in seconds, from the provider taking it to the image "
        "(queueing at the provider aside): a figure to show people, not a promise."
    )

    @classmethod
    def from_model(cls, model: ImageModel, *, providers: Collection[Provider]) -> ImageModelType:
        """``providers`` are those this server runs (the job policy's)."""
        return cls(
            id=strawberry.ID(str(model.id)),
            model_key=model.model_key,
            display_name=model.display_name,
            provider=model.provider,
            is_default=model.is_default,
            available=model.provider in providers,
            supports_reference=model.supports_reference,
            requires_reference=model.requires_reference,
            supports_seed=model.supports_seed,
            sizes=[ImageSizeType(width=width, height=height) for width, height in model.sizes],
            max_side=model.max_side,
            typical_latency_seconds=model.typical_latency_seconds,
        )
