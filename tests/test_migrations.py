"""Migrations: idempotent, safe when two processes start at once, strict about edited history."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import replace

import asyncpg
import pytest

from storage.errors import StorageError
from storage.migrate import MigrationError, apply_migrations, load_migrations, migrate
from tests.support import TEST_JWT_SECRET, database_url_for, drop_database, new_database

EXPECTED_TABLES = {
    "characters",
    "image_models",
    "jobs",
    "job_attempts",
    "workspace_assets",
    "user_library",
    "stored_objects",
    "persisted_documents",
    "schema_migrations",
}


@pytest.fixture
async def empty_database(server_url: str) -> AsyncIterator[str]:
    name = await new_database(server_url, prefix="portraits_migrate")
    try:
        yield database_url_for(server_url, name)
    finally:
        await drop_database(server_url, name)


async def tables(url: str) -> set[str]:
    connection = await asyncpg.connect(url)
    try:
        rows = await connection.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    finally:
        await connection.close()
    return {row["tablename"] for row in rows}


async def test_migrating_twice_applies_everything_once(empty_database: str) -> None:
    first = await migrate(empty_database)
    second = await migrate(empty_database)

    assert [m.version for m in first] == [m.version for m in load_migrations()]
    assert second == []
    assert await tables(empty_database) == EXPECTED_TABLES


async def test_two_concurrent_migrations_apply_each_file_once(empty_database: str) -> None:
    results = await asyncio.gather(migrate(empty_database), migrate(empty_database))

    assert sorted(len(applied) for applied in results) == [0, len(load_migrations())]
    connection = await asyncpg.connect(empty_database)
    try:
        versions = [
            row["version"] for row in await connection.fetch("SELECT version FROM schema_migrations ORDER BY 1")
        ]
    finally:
        await connection.close()
    assert versions == [m.version for m in load_migrations()]


def test_two_migrate_processes_started_together_both_succeed(empty_database: str) -> None:
    env = {**os.environ, "DATABASE_URL": empty_database, "JWT_SECRET": TEST_JWT_SECRET}
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "server.cli", "migrate"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [process.communicate(timeout=60) for process in processes]

    assert [process.returncode for process in processes] == [0, 0], outputs
    reports = sorted(stdout.splitlines()[0] for stdout, _ in outputs)
    assert reports == ["applied 0 migration(s)", f"applied {len(load_migrations())} migration(s)"]
    assert asyncio.run(tables(empty_database)) == EXPECTED_TABLES


async def test_an_edited_applied_migration_is_refused(empty_database: str) -> None:
    await migrate(empty_database)
    edited = [replace(m, sql=m.sql + "\n-- edited") if m.version == 1 else m for m in load_migrations()]

    connection = await asyncpg.connect(empty_database)
    try:
        with pytest.raises(MigrationError, match="0001_initial was edited"):
            await apply_migrations(connection, edited)
        # the advisory lock was released: another run goes through
        assert await apply_migrations(connection) == []
    finally:
        await connection.close()


async def test_a_failing_migration_leaves_nothing_half_applied(empty_database: str) -> None:
    await migrate(empty_database)
    broken = replace(load_migrations()[0], version=len(load_migrations()) + 1, name="broken",
                     sql="CREATE TABLE half_done (id int); SELECT 1/0;")

    connection = await asyncpg.connect(empty_database)
    try:
        with pytest.raises(StorageError):
            await apply_migrations(connection, [*load_migrations(), broken])
        assert "half_done" not in await tables(empty_database)
        recorded = await connection.fetchval("SELECT max(version) FROM schema_migrations")
    finally:
        await connection.close()
    assert recorded == len(load_migrations())


def test_migration_files_are_numbered_without_gaps() -> None:
    versions = [m.version for m in load_migrations()]

    assert versions == list(range(1, len(versions) + 1))
