"""Image models a client can choose when generating."""

from __future__ import annotations

import strawberry

from storage.image_models import ImageModel


@strawberry.type(name="ImageModel")
class ImageModelType:
    id: strawberry.ID
    model_key: str
    display_name: str
    provider: str
    is_default: bool

    @classmethod
    def from_model(cls, model: ImageModel) -> ImageModelType:
        return cls(
            id=strawberry.ID(str(model.id)),
            model_key=model.model_key,
            display_name=model.display_name,
            provider=model.provider.value,
            is_default=model.is_default,
        )
