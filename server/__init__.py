"""The web server's wiring: settings read once, the Starlette app and routes, the CLI, process concerns.

The top of the house: it imports ``graph``, ``realtime``, ``pipeline`` and
``storage``; nothing imports it.
"""
