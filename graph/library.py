"""Workspace and library queries and mutations: thin wrappers over resolvers/library.py."""

from __future__ import annotations

from typing import Annotated

import strawberry
from strawberry.types import Info

from graph.arguments import OMITTED, given
from graph.context import Context
from graph.ids import LibraryAssetId, parse_id
from graph.selections import connection_selection
from graph.types.assets import LibraryAssetType, WorkspaceAssetType
from graph.types.enums import LibraryTab
from graph.types.pagination import After, Connection, First
from resolvers import library


@strawberry.type
class LibraryQuery:
    @strawberry.field(
        description="The viewer's unexpired workspace images, newest first. `first` is 1-100 (default 20)."
    )
    async def workspace_assets(
        self, info: Info[Context, None], first: First = OMITTED, after: After = OMITTED
    ) -> Connection[WorkspaceAssetType] | None:
        context = info.context
        viewer = context.require_viewer()
        page = await library.list_workspace_assets(
            context.pool, viewer, first=given(first), after=given(after),
            with_cursors=connection_selection(info).needs_cursors,
        )
        return Connection.from_page(
            page, WorkspaceAssetType.from_model, counter=lambda: library.count_workspace_assets(context.pool, viewer)
        )

    @strawberry.field(
        description="The viewer's library, newest first. tab CHARACTERS keeps the seed's characters tab: a "
        "character_portrait, a 'character' tag, or the 'character' category."
    )
    async def library_assets(
        self,
        info: Info[Context, None],
        first: First = OMITTED,
        after: After = OMITTED,
        tab: Annotated[LibraryTab, strawberry.argument(description="Which images; ALL when omitted.")] = LibraryTab.ALL,
    ) -> Connection[LibraryAssetType] | None:
        context = info.context
        viewer = context.require_viewer()
        page = await library.list_library_assets(
            context.pool, viewer, first=given(first), after=given(after), tab=tab,
            with_cursors=connection_selection(info).needs_cursors,
        )
        return Connection.from_page(
            page,
            LibraryAssetType.from_model,
            counter=lambda: library.count_library_assets(context.pool, viewer, tab=tab),
        )


@strawberry.type
class LibraryMutation:
    @strawberry.mutation(description="Keep a workspace image in the library; saving it again returns the same asset.")
    async def save_to_library(
        self,
        info: Info[Context, None],
        workspace_asset_id: Annotated[
            strawberry.ID, strawberry.argument(description="The workspace asset's id (a UUID), while unexpired.")
        ],
    ) -> LibraryAssetType | None:
        context = info.context
        viewer = context.require_viewer()
        asset = await library.save_to_library(
            context.pool, context.objects, viewer,
            workspace_asset_id=parse_id(workspace_asset_id, field="workspace_asset_id"),
        )
        return LibraryAssetType.from_model(asset)

    @strawberry.mutation(
        description="Delete a library image and its thumbnail; characters showing it fall back to null. Returns its id."
    )
    async def delete_library_asset(
        self, info: Info[Context, None], id: LibraryAssetId  # noqa: A002 - the GraphQL argument's name
    ) -> strawberry.ID | None:
        context = info.context
        viewer = context.require_viewer()
        deleted = await library.delete_library_asset(context.pool, context.objects, viewer, asset_id=parse_id(id))
        return strawberry.ID(str(deleted))
