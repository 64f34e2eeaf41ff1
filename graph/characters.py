"""Character queries and mutations: thin wrappers over resolvers/characters.py."""

from __future__ import annotations

from typing import Annotated

import strawberry
from strawberry.types import Info

from graph.arguments import OMITTED, given
from graph.context import Context
from graph.count_cost import MAX_SEARCHES
from graph.ids import CharacterId, LibraryAssetId, parse_id, parse_optional_id
from graph.selections import connection_selection, object_selection
from graph.types.character import CharacterType, CreateCharacterInput, UpdateCharacterInput, character_columns
from graph.types.enums import CharacterOrder, ContentRating
from graph.types.pagination import After, Connection, First
from resolvers import characters
from resolvers.characters import SEARCH_MAX


@strawberry.type
class CharacterQuery:
    @strawberry.field(description="One of the viewer's characters; NOT_FOUND for a missing or foreign id.")
    async def character(
        self, info: Info[Context, None], id: CharacterId  # noqa: A002 - the GraphQL argument's name
    ) -> CharacterType | None:
        loaders = info.context.loaders  # UNAUTHENTICATED before any check of the id
        columns = character_columns(object_selection(info))
        character = await characters.get_character(loaders.character_by_id_for(columns).load, character_id=parse_id(id))
        return CharacterType.from_model(character)

    @strawberry.field(
        description="The viewer's characters, newest first unless orderBy says otherwise, optionally only those "
        "whose name contains `search` or of one contentRating. `first` is 1-100 (default 20)."
    )
    async def characters(
        self,
        info: Info[Context, None],
        first: First = OMITTED,
        after: After = OMITTED,
        search: Annotated[
            str | None,
            strawberry.argument(
                description=f"Only characters whose name contains this text, ignoring case; at most {SEARCH_MAX} "
                "characters, trimmed. `%` and `_` match themselves. Blank or omitted: every character. A document may "
                f"search at most {MAX_SEARCHES} lists (GRAPHQL_VALIDATION_FAILED, measure `searches`)."
            ),
        ] = OMITTED,
        content_rating: Annotated[
            ContentRating | None,
            strawberry.argument(description="Only characters of this rating; every rating when omitted."),
        ] = OMITTED,
        order_by: Annotated[
            CharacterOrder,
            strawberry.argument(
                description="The order; a cursor is only valid with the orderBy of the page it came from "
                "(BAD_USER_INPUT otherwise)."
            ),
        ] = CharacterOrder.CREATED_AT_DESC,
    ) -> Connection[CharacterType] | None:
        context = info.context
        viewer = context.require_viewer()
        only = characters.character_filter(search=given(search), content_rating=given(content_rating))
        selection = connection_selection(info)
        page = await characters.list_characters(
            context.pool, viewer, first=given(first), after=given(after), order=order_by, only=only,
            columns=character_columns(selection.node_fields), with_cursors=selection.needs_cursors,
        )
        return Connection.from_nodes(
            CharacterType.from_models(page.items),
            page,
            counter=lambda: characters.count_characters(context.pool, viewer, only=only),
        )


@strawberry.type
class CharacterMutation:
    @strawberry.mutation(
        description="Create a character owned by the viewer; with portraitJobId it takes that draft portrait "
        "(which is then auto-saved to the library as for any portrait)."
    )
    async def create_character(
        self,
        info: Info[Context, None],
        input: Annotated[  # noqa: A002 - the GraphQL argument's name
            CreateCharacterInput, strawberry.argument(description="The new character's fields.")
        ],
    ) -> CharacterType | None:
        context = info.context
        viewer = context.require_viewer()
        character = await characters.create_character(
            context.pool, viewer, fields=input.to_fields(),
            portrait_job_id=parse_optional_id(input.portrait_job_id, field="portrait_job_id"),
        )
        return CharacterType.from_model(character)

    @strawberry.mutation(description="Change the given fields of one of the viewer's characters.")
    async def update_character(
        self,
        info: Info[Context, None],
        id: CharacterId,  # noqa: A002 - the GraphQL argument's name
        input: Annotated[  # noqa: A002 - the GraphQL argument's name
            UpdateCharacterInput, strawberry.argument(description="The fields to change; the others keep their value.")
        ],
    ) -> CharacterType | None:
        context = info.context
        viewer = context.require_viewer()
        character = await characters.update_character(
            context.pool, viewer, character_id=parse_id(id), fields=input.to_fields()
        )
        return CharacterType.from_model(character)

    @strawberry.mutation(
        description="Make one of the viewer's library images the character's reference image (kept as that "
        "asset's storage path, with its generation seed as seedLocked). Scenes (generateImage with characterId) "
        "and portraits with useReference give it to the model. NOT_FOUND for a missing or foreign character or "
        "asset."
    )
    async def set_reference_image(
        self,
        info: Info[Context, None],
        character_id: CharacterId,
        library_asset_id: LibraryAssetId,
    ) -> CharacterType | None:
        context = info.context
        viewer = context.require_viewer()
        character = await characters.set_reference_image(
            context.pool, viewer,
            character_id=parse_id(character_id, field="character_id"),
            library_asset_id=parse_id(library_asset_id, field="library_asset_id"),
        )
        return CharacterType.from_model(character)

    @strawberry.mutation(description="Delete one of the viewer's characters; returns its id.")
    async def delete_character(
        self, info: Info[Context, None], id: CharacterId  # noqa: A002 - the GraphQL argument's name
    ) -> strawberry.ID | None:
        context = info.context
        viewer = context.require_viewer()
        deleted = await characters.delete_character(context.pool, viewer, character_id=parse_id(id))
        return strawberry.ID(str(deleted))
