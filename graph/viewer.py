"""The ``viewer`` query: who the token says you are."""

from __future__ import annotations

import strawberry
from strawberry.types import Info

from graph.context import Context
from graph.types.viewer import ViewerType


@strawberry.type
class ViewerQuery:
    @strawberry.field(description="The authenticated user; UNAUTHENTICATED without a token.")
    def viewer(self, info: Info[Context, None]) -> ViewerType | None:
        return ViewerType.from_viewer(info.context.require_viewer())
