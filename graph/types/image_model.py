"""Image models a client can choose when generating."""

from __future__ import annotations

from collections.abc import Collection

import strawberry

from graph.types.enums import Provider
from storage.image_models import ImageModel


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
        )
