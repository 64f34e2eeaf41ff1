"""Numbered SQL migrations, applied in order, each in its own transaction.

Files are ``storage/migrations/NNNN_name.sql``. An applied migration is
recorded with its checksum in ``schema_migrations``; editing it afterwards is
an error (write a new one instead). A session advisory lock makes two
processes starting at once safe: the second waits, then finds nothing to do.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from storage.errors import StorageError, translate_errors

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
ADVISORY_LOCK_KEY = 0x706F7274726169  # "portrai"
_FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


class MigrationError(StorageError):
    """The migration files or the recorded history are inconsistent."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """The migration files in version order; gaps and duplicates are errors."""
    migrations = []
    for path in sorted(directory.glob("*.sql")):
        match = _FILE_NAME.match(path.name)
        if match is None:
            raise MigrationError(f"{path.name} is not named NNNN_name.sql")
        migrations.append(Migration(version=int(match[1]), name=match[2], sql=path.read_text()))
    for expected, migration in enumerate(migrations, start=1):
        if migration.version != expected:
            raise MigrationError(f"migration {expected:04d} is missing or duplicated (found {migration.version:04d})")
    return migrations


CREATE_VERSIONS_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


@translate_errors
async def apply_migrations(
    connection: asyncpg.Connection, migrations: list[Migration] | None = None
) -> list[Migration]:
    """Apply what is not yet applied; returns what this call applied."""
    migrations = load_migrations() if migrations is None else migrations
    applied_now: list[Migration] = []
    await connection.execute("SELECT pg_advisory_lock($1)", ADVISORY_LOCK_KEY)
    try:
        await connection.execute(CREATE_VERSIONS_TABLE)
        recorded = {
            row["version"]: row["checksum"]
            for row in await connection.fetch("SELECT version, checksum FROM schema_migrations")
        }
        for migration in migrations:
            checksum = recorded.pop(migration.version, None)
            if checksum is not None:
                if checksum != migration.checksum:
                    raise MigrationError(
                        f"migration {migration.version:04d}_{migration.name} was edited after it was applied; "
                        "add a new migration instead"
                    )
                continue
            async with connection.transaction():
                await connection.execute(migration.sql)
                await connection.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    migration.version,
                    migration.name,
                    migration.checksum,
                )
            logger.info("applied migration %04d_%s", migration.version, migration.name)
            applied_now.append(migration)
        if recorded:
            logger.warning("the database has migrations this code does not know: %s", sorted(recorded))
    finally:
        # A dropped connection releases the session lock by itself; do not hide the first error.
        with contextlib.suppress(asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
            await connection.execute("SELECT pg_advisory_unlock($1)", ADVISORY_LOCK_KEY)
    return applied_now


async def migrate(dsn: str) -> list[Migration]:
    """Apply migrations over a dedicated connection (not the pool)."""
    connection = await _connect(dsn)
    try:
        return await apply_migrations(connection)
    finally:
        await connection.close()


@translate_errors
async def _connect(dsn: str) -> asyncpg.Connection:
    return await asyncpg.connect(dsn, timeout=10)
