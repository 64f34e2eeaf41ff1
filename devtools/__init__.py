"""Development tooling: the embedded PostgreSQL that ``make run`` and ``make test`` start when no DATABASE_URL is set.

Not used in production (the Docker image runs against DATABASE_URL).
"""
