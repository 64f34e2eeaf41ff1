"""Public catalogue queries: they answer without a token."""

from __future__ import annotations

import strawberry
from strawberry.types import Info

from graph.context import Context
from graph.types.image_model import ImageModelType
from resolvers.image_models import list_image_models


@strawberry.type
class CatalogQuery:
    @strawberry.field(
        description="The active image models, the default first, then by displayName; public (no token needed). "
        "Models this server cannot run are listed with available false."
    )
    async def image_models(self, info: Info[Context, None]) -> list[ImageModelType]:
        providers = info.context.job_policy.providers
        return [
            ImageModelType.from_model(model, providers=providers)
            for model in await list_image_models(info.context.pool)
        ]
