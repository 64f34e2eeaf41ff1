"""Live updates: the change events the database sends, broadcaster with our backends, the per-process router, mailboxes.

Used by ``resolvers`` (subscriptions); depends on ``storage`` (the LISTEN connection) only.
"""
