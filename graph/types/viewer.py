"""The authenticated user, as the API shows them."""

from __future__ import annotations

import strawberry

from resolvers.viewer import Viewer


@strawberry.type(name="Viewer", description="The user the bearer token names.")
class ViewerType:
    id: strawberry.ID = strawberry.field(
        description="The token's subject (a UUID): the {user id} folder of your storage paths."
    )

    @classmethod
    def from_viewer(cls, viewer: Viewer) -> ViewerType:
        return cls(id=strawberry.ID(str(viewer.user_id)))
