"""Image models a client can choose when generating."""

from __future__ import annotations

import strawberry

from storage.image_models import ImageModel


@strawberry.type(name="ImageModel", description="An image model to generate with: pass its id as modelId.")
class ImageModelType:
    id: strawberry.ID = strawberry.field(description="The model's id (a UUID), for modelId.")
    model_key: str = strawberry.field(
        description="The provider's name for the model (as in Job.modelKey), e.g. local/portrait-v1."
    )
    display_name: str = strawberry.field(description="A name to show people.")
    provider: str = strawberry.field(description="Which image provider runs it: local or fal.")
    is_default: bool = strawberry.field(description="The model used when modelId is omitted; one model at most.")

    @classmethod
    def from_model(cls, model: ImageModel) -> ImageModelType:
        return cls(
            id=strawberry.ID(str(model.id)),
            model_key=model.model_key,
            display_name=model.display_name,
            provider=model.provider.value,
            is_default=model.is_default,
        )
