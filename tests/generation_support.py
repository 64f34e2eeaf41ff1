"""GraphQL documents and helpers shared by the generation tests."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

GraphQL = Callable[..., Awaitable[dict[str, Any]]]

# Generous: a job takes milliseconds here; the bound only stops a broken test from hanging.
WAIT_SECONDS = 30.0
# The fal model migration 0001 seeds (inactive without FAL_KEY; the tests point it at FakeFal).
FAL_MODEL = "fal-ai/bytedance/seedream/v4/text-to-image"

JOB_FIELDS = """
    id status destination characterId isDraft modelKey prompt quality seed attempts maxAttempts error
    providerProgress { status queuePosition }
    attemptHistory { number startedAt finishedAt outcome retryable error }
    workspaceAsset { id path thumbnailPath width height mimeType fileSizeBytes seed expiresAt
                     signedUrl { url expiresAt } signedThumbnailUrl { url } }
    libraryAsset { id path thumbnailPath tags roleplayMetadata contentCategory width height seed
                   signedUrl { url expiresAt } signedThumbnailUrl { url } }
"""

GENERATE_PORTRAIT = f"""
mutation($input: GenerateCharacterPortraitInput!) {{
  generateCharacterPortrait(input: $input) {{ {JOB_FIELDS} }}
}}
"""

GENERATE_IMAGE = f"""
mutation($input: GenerateImageInput!) {{ generateImage(input: $input) {{ {JOB_FIELDS} }} }}
"""

JOB = f"query($id: ID!) {{ job(id: $id) {{ {JOB_FIELDS} }} }}"

CREATE_CHARACTER = """
mutation($input: CreateCharacterInput!) {
  createCharacter(input: $input) { id name imageUrl referenceImageUrl seedLocked signedImageUrl { url expiresAt } }
}
"""

CHARACTER = """
query($id: ID!) {
  character(id: $id) { id name imageUrl referenceImageUrl seedLocked signedImageUrl { url expiresAt } }
}
"""

CANCEL = "mutation($id: ID!) { cancelJob(id: $id) { id status error } }"

TERMINAL = ("COMPLETED", "FAILED", "CANCELED")


async def create_character(graphql: GraphQL, user: uuid.UUID, **fields: Any) -> dict[str, Any]:
    values = {"name": "Seraphine Vale", "description": "A wandering alchemist with silver hair.", **fields}
    body = await graphql(CREATE_CHARACTER, {"input": values}, user=user)
    assert "errors" not in body, body
    character: dict[str, Any] = body["data"]["createCharacter"]
    return character


async def generate_portrait(graphql: GraphQL, user: uuid.UUID, **input_fields: Any) -> dict[str, Any]:
    body = await graphql(GENERATE_PORTRAIT, {"input": input_fields}, user=user)
    assert "errors" not in body, body
    job: dict[str, Any] = body["data"]["generateCharacterPortrait"]
    return job


async def get_job(graphql: GraphQL, user: uuid.UUID, job_id: str) -> dict[str, Any]:
    body = await graphql(JOB, {"id": job_id}, user=user)
    assert "errors" not in body, body
    job: dict[str, Any] = body["data"]["job"]
    return job


async def get_character(graphql: GraphQL, user: uuid.UUID, character_id: str) -> dict[str, Any]:
    body = await graphql(CHARACTER, {"id": character_id}, user=user)
    assert "errors" not in body, body
    character: dict[str, Any] = body["data"]["character"]
    return character


async def wait_for_job(
    graphql: GraphQL,
    user: uuid.UUID,
    job_id: str,
    *,
    status: str | tuple[str, ...] = TERMINAL,
    attempts_at_least: int = 0,
) -> dict[str, Any]:
    """Poll the job through GraphQL until it reaches ``status``; fails the test after WAIT_SECONDS."""
    wanted = (status,) if isinstance(status, str) else status
    deadline = asyncio.get_running_loop().time() + WAIT_SECONDS
    while True:
        job = await get_job(graphql, user, job_id)
        if job["status"] in wanted and job["attempts"] >= attempts_at_least:
            return job
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"job never reached {wanted}: {job}")
        await asyncio.sleep(0.02)
