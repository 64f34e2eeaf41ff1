"""Which fields of a strawberry schema plans read inline: strawberry's "basic" fields.

A basic field (``StrawberryField.is_basic_field``: no resolver, no extensions, hence no permission classes) is
resolved by strawberry with ``field.get_result(source, info=None, ...)``, which is
``field.default_resolver(source, field.python_name)`` (getattr unless the schema's config says otherwise):
strawberry/schema/schema_converter.py, ``from_resolver``'s ``_get_basic_result``. It does that only when no
exception handler applies to the field; our schema passes no ``exception_handlers``, and a schema that does has
every field called through its resolver here.
"""

from __future__ import annotations

import strawberry
from graphql import GraphQLSchema
from strawberry.schema.schema_converter import GraphQLCoreConverter

from graph.plans.cache import no_basic_fields
from graph.plans.compile import BasicFields, Reader


def basic_fields(schema: GraphQLSchema) -> BasicFields:
    """The lookup for ``schema`` (graphql-core's, made by strawberry: it names its strawberry schema)."""
    owner = (schema.extensions or {}).get(GraphQLCoreConverter.DEFINITION_BACKREF)
    if not isinstance(owner, strawberry.Schema) or owner.exception_handlers:
        return no_basic_fields(schema)
    strawberry_schema = owner

    def lookup(type_name: str, field_name: str) -> Reader | None:
        field = strawberry_schema.get_field_for_type(field_name=field_name, type_name=type_name)
        if field is None or not field.is_basic_field:
            return None
        return field.default_resolver, field.python_name

    return lookup
