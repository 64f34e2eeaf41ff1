"""GraphQL only: strawberry types and inputs, the schema and its extensions, the request context, loaders, errors.

Below the server package, above ``resolvers``: it turns GraphQL arguments into
plain values (ids become UUIDs here) and resolver results into GraphQL types.
"""
