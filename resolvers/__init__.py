"""What each query, mutation and subscription does, as plain async functions over the viewer and storage.

No HTTP and no strawberry below this line; depends on ``realtime`` and ``storage``.
"""
