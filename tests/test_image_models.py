"""The model catalogue says which models this server can run, and generating with one it cannot is refused clearly."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import replace

import httpx
import pytest
from asgi_lifespan import LifespanManager

from server.app import create_app
from server.settings import Settings
from storage.enums import Provider
from tests.conftest import GraphQL, graphql_over
from tests.fake_replicate import SDXL_MODEL
from tests.generation_support import FAL_MODEL
from tests.support import only_error

MODELS = "{ imageModels { id modelKey provider available } }"
GENERATE_IMAGE = "mutation($input: GenerateImageInput!) { generateImage(input: $input) { id status modelKey } }"


@pytest.fixture
async def without_fal(settings: Settings, pool: object) -> AsyncIterator[GraphQL]:
    """The app as a server without FAL_KEY (nor REPLICATE_API_TOKEN) runs it: its job policy allows the local
    provider only."""
    local_only = replace(settings, job_policy=replace(settings.job_policy, providers=frozenset({Provider.LOCAL})))
    async with LifespanManager(create_app(local_only)) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            yield graphql_over(http)


async def test_every_model_is_available_where_its_provider_is_configured(graphql: GraphQL) -> None:
    """Given the test server (FAL_KEY and REPLICATE_API_TOKEN set), when the catalogue is listed, then local, fal and
    Replicate models are available, SDXL on Replicate by its version reference."""
    models = (await graphql(MODELS))["data"]["imageModels"]

    assert {model["provider"] for model in models} == {"LOCAL", "FAL", "REPLICATE"}
    assert all(model["available"] for model in models)
    assert [model["modelKey"] for model in models if model["provider"] == "REPLICATE"] == [SDXL_MODEL]


async def test_fal_models_are_unavailable_without_fal_key(without_fal: GraphQL) -> None:
    """Given a server without FAL_KEY nor REPLICATE_API_TOKEN, when the catalogue is listed, then fal and Replicate
    models are listed unavailable."""
    models = (await without_fal(MODELS))["data"]["imageModels"]

    assert {(model["provider"], model["available"]) for model in models} == {
        ("LOCAL", True), ("FAL", False), ("REPLICATE", False)
    }


async def test_generating_with_an_unavailable_model_is_bad_user_input(without_fal: GraphQL, alice: uuid.UUID) -> None:
    """Given a server without FAL_KEY, when a fal model is chosen, then BAD_USER_INPUT names the model and why,
    and the local default still generates."""
    models = (await without_fal(MODELS))["data"]["imageModels"]
    (fal,) = [model for model in models if model["modelKey"] == FAL_MODEL]

    refused = await without_fal(GENERATE_IMAGE, {"input": {"prompt": "a lighthouse", "modelId": fal["id"]}}, user=alice)
    accepted = await without_fal(GENERATE_IMAGE, {"input": {"prompt": "a lighthouse"}}, user=alice)

    error = only_error(refused)
    assert refused["data"] == {"generateImage": None}
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert error["message"].endswith("is not available on this server (its provider 'fal' is not configured)")
    assert accepted["data"]["generateImage"]["status"] == "QUEUED"


async def test_generating_with_a_replicate_model_without_its_token_is_bad_user_input(
    without_fal: GraphQL, alice: uuid.UUID
) -> None:
    """Given a server without REPLICATE_API_TOKEN, when SDXL on Replicate is chosen, then BAD_USER_INPUT says its
    provider is not configured, and no job is queued."""
    models = (await without_fal(MODELS))["data"]["imageModels"]
    (sdxl,) = [model for model in models if model["provider"] == "REPLICATE"]

    refused = await without_fal(GENERATE_IMAGE, {"input": {"prompt": "a harbour", "modelId": sdxl["id"]}}, user=alice)

    error = only_error(refused)
    assert refused["data"] == {"generateImage": None}
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert error["message"].endswith("is not available on this server (its provider 'replicate' is not configured)")
