"""Result downloads reach public addresses only, on every hop, and connect to the address that was checked.

The fake fal serves on 127.0.0.1, which the test settings allow
(DOWNLOAD_ALLOW_NETWORKS=127.0.0.1); every other non-public address is
refused before a connection is made, whether the provider's URL names it or
a redirect leads there.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from pipeline.address_policy import PUBLIC_ONLY, AddressPolicy, AddressRefused, resolve_allowed
from pipeline.download import DownloadError, download_client, download_image
from server.settings import Settings
from tests.fake_fal import FakeFal
from tests.generation_support import (
    FAL_MODEL,
    GENERATE_IMAGE,
    GraphQL,
    create_character,
    generate_portrait,
    get_character,
    wait_for_job,
)
from tests.support import free_port, serve_uvicorn

LOCAL = AddressPolicy.allowing(["127.0.0.1"])
StartGeneration = Callable[..., Awaitable[Any]]

REFUSED = {
    "127.0.0.1": "a loopback address",
    "127.255.0.9": "a loopback address",
    "::1": "a loopback address",
    "10.1.2.3": "a private address",
    "172.16.0.1": "a private address",
    "192.168.1.1": "a private address",
    "fc00::1": "a private address",
    "169.254.169.254": "a cloud metadata address",
    "fd00:ec2::254": "a cloud metadata address",
    "169.254.170.2": "a cloud metadata address",
    "100.100.100.200": "a cloud metadata address",
    "169.254.1.1": "a link-local address",
    "fe80::1": "a link-local address",
    "0.0.0.0": "an unspecified address",
    "::": "an unspecified address",
    "224.0.0.1": "a multicast address",
    "239.255.255.250": "a multicast address",
    "ff02::1": "a multicast address",
    "100.64.0.1": "a shared (carrier-grade NAT) address",
    "240.0.0.1": "a private address",
    "192.0.2.1": "a private address",
    "::ffff:169.254.169.254": "a cloud metadata address (IPv4 169.254.169.254)",
    "::ffff:127.0.0.1": "a loopback address (IPv4 127.0.0.1)",
    "::ffff:10.0.0.1": "a private address (IPv4 10.0.0.1)",
    "64:ff9b::a9fe:a9fe": "a cloud metadata address (IPv4 169.254.169.254)",
    "2002:a9fe:a9fe::1": "a cloud metadata address (IPv4 169.254.169.254)",
    "2001:db8::1": "a private address",
}
PUBLIC = ["8.8.8.8", "1.1.1.1", "151.101.1.69", "2606:4700:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808"]


@pytest.mark.parametrize(("address", "reason"), REFUSED.items(), ids=list(REFUSED))
def test_non_public_addresses_are_refused_with_a_reason(address: str, reason: str) -> None:
    assert PUBLIC_ONLY.refusal(ipaddress.ip_address(address)) == reason


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_are_allowed(address: str) -> None:
    assert PUBLIC_ONLY.refusal(ipaddress.ip_address(address)) is None


def test_allowed_networks_open_exactly_what_they_name() -> None:
    policy = AddressPolicy.allowing(["127.0.0.1", "10.20.0.0/16"])
    assert policy.refusal(ipaddress.ip_address("127.0.0.1")) is None
    assert policy.refusal(ipaddress.ip_address("::ffff:127.0.0.1")) is None
    assert policy.refusal(ipaddress.ip_address("10.20.3.4")) is None
    assert policy.refusal(ipaddress.ip_address("127.0.0.2")) == "a loopback address"
    assert policy.refusal(ipaddress.ip_address("10.21.0.1")) == "a private address"
    assert policy.refusal(ipaddress.ip_address("169.254.169.254")) == "a cloud metadata address"
    with pytest.raises(ValueError, match="'localhost' is not an IP address or network"):
        AddressPolicy.allowing(["localhost"])


async def test_every_address_a_name_resolves_to_is_checked() -> None:
    # given a name that resolves to loopback addresses (localhost: 127.0.0.1, and ::1 where IPv6 is set up)
    resolved = {info[4][0] for info in socket.getaddrinfo("localhost", 80, type=socket.SOCK_STREAM)}
    # when only 127.0.0.1 is allowed and the name also resolves to another loopback address, it is refused
    if resolved - {"127.0.0.1"}:
        with pytest.raises(AddressRefused) as mixed:
            await resolve_allowed("localhost", 80, LOCAL)
        assert str(mixed.value).startswith("localhost resolves to ")
    else:
        assert await resolve_allowed("localhost", 80, LOCAL) == ["127.0.0.1"]
    # and with public addresses only, it is refused whatever it resolves to
    with pytest.raises(AddressRefused) as loopback:
        await resolve_allowed("localhost", 80, PUBLIC_ONLY)
    assert str(loopback.value).endswith(", a loopback address")
    # and an address written in a form of its own (decimal, short) is resolved and judged as what it is
    with pytest.raises(AddressRefused) as decimal:
        await resolve_allowed("2852039166", 80, LOCAL)
    assert str(decimal.value) == "2852039166 resolves to 169.254.169.254, a cloud metadata address"
    with pytest.raises(AddressRefused) as short:
        await resolve_allowed("127.1", 80, PUBLIC_ONLY)
    assert str(short.value) == "127.1 resolves to 127.0.0.1, a loopback address"


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with download_client() as client:
        yield client


@pytest.fixture
def fake(fake_fal_server: FakeFal) -> FakeFal:
    fake_fal_server.reset()
    return fake_fal_server


async def test_a_provider_url_on_a_forbidden_address_is_refused_before_any_request(
    fake: FakeFal, http: httpx.AsyncClient
) -> None:
    # given the fake's own image, allowed only through LOCAL
    url = fake.file_url("r1")
    # when fetched with public addresses only, then it is refused for good, and the fake never saw a request
    with pytest.raises(DownloadError) as caught:
        await download_image(http, url, max_bytes=1_000_000, timeout=5)
    assert caught.value.retryable is False
    assert caught.value.message == (
        f"download of {url} refused: 127.0.0.1 is a loopback address; results are fetched from public addresses only"
    )
    assert fake.calls["file"] == 0


FORBIDDEN_HOPS = [
    "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
    "http://[fd00:ec2::254]/latest/meta-data/",
    "http://[::ffff:169.254.169.254]/latest/meta-data/",
    "http://[::ffff:a9fe:a9fe]/latest/meta-data/",
    "http://2852039166/latest/meta-data/",
    "http://10.0.0.1/internal.png",
    "http://127.0.0.2:{port}/files/r1.png",
    "http://0.0.0.0:{port}/files/r1.png",
    "http://[::1]:{port}/files/r1.png",
    "http://[::]:{port}/files/r1.png",
    "http://224.0.0.1/a.png",
]


@pytest.mark.parametrize("target", FORBIDDEN_HOPS)
async def test_a_redirect_from_an_allowed_host_to_a_forbidden_one_is_refused(
    fake: FakeFal, http: httpx.AsyncClient, target: str
) -> None:
    # given the allowed fake answering the image request with a redirect to a forbidden address
    hop = target.format(port=httpx.URL(fake.url).port)
    fake.behave(file_redirect=hop)
    url = fake.file_url("r1")
    # when downloaded with 127.0.0.1 allowed
    with pytest.raises(DownloadError) as caught:
        await download_image(http, url, max_bytes=1_000_000, timeout=5, addresses=LOCAL)
    # then the redirect is refused for good, saying where it led and why
    assert caught.value.retryable is False
    message = caught.value.message
    assert message.startswith(f"download of {url} refused: it redirects to "), message
    assert message.endswith("; results are fetched from public addresses only"), message
    assert any(reason in message for reason in set(REFUSED.values()) | {"a reserved address"}), message
    assert fake.calls["file"] == 1


async def test_a_download_connects_to_the_checked_address_and_keeps_the_host_name(
    fake: FakeFal, http: httpx.AsyncClient
) -> None:
    # given the fake's image named by host name (localhost), every loopback address allowed
    port = httpx.URL(fake.url).port
    url = f"http://localhost:{port}/files/r1.png"
    loopback = AddressPolicy.allowing(["127.0.0.0/8", "::1"])
    # when downloaded (if localhost resolves to ::1 first, nothing listens there: the next address is tried)
    body = await download_image(http, url, max_bytes=1_000_000, timeout=5, addresses=loopback)
    # then the image came, and the server was asked for the host name, not the address
    assert body == fake.png()
    assert fake.file_hosts == [f"localhost:{port}"]


async def test_redirects_within_allowed_addresses_still_work(fake: FakeFal, http: httpx.AsyncClient) -> None:
    body = await download_image(http, fake.file_url("r1", hops=2), max_bytes=1_000_000, timeout=5, addresses=LOCAL)
    assert body == fake.png()
    assert fake.calls["redirect"] == 2


async def test_a_fal_result_redirected_to_the_metadata_service_fails_the_job_and_keeps_the_image(
    graphql: GraphQL, start_generation: StartGeneration, fake: FakeFal, pool: asyncpg.Pool, alice: uuid.UUID
) -> None:
    # given a character with an image, and fal's result URL redirecting to the cloud metadata service
    body = await graphql("{ imageModels { id modelKey provider } }")
    (model,) = [model for model in body["data"]["imageModels"] if model["modelKey"] == FAL_MODEL]
    character = await create_character(graphql, alice, imageUrl="https://example.com/old.png")
    fake.behave(file_redirect="http://169.254.169.254/latest/meta-data/iam/security-credentials/")
    await start_generation()

    # when a portrait is generated on fal
    job = await generate_portrait(graphql, alice, characterId=character["id"], modelId=model["id"])

    # then the job fails at once (a refusal is not retried), with an error a user can read
    done = await wait_for_job(graphql, alice, job["id"])
    assert done["status"] == "FAILED" and done["attempts"] == 1, done
    error = done["error"]
    assert error.startswith("downloading the result failed: download of http://127.0.0.1:"), error
    assert "it redirects to http://169.254.169.254/latest/meta-data/iam/security-credentials/" in error
    assert "169.254.169.254 is a cloud metadata address" in error
    # and the character keeps its previous image; nothing was stored for the job
    shown = await get_character(graphql, alice, character["id"])
    assert shown["imageUrl"] == "https://example.com/old.png"
    key = uuid.UUID(job["id"])
    assert await pool.fetchval("SELECT count(*) FROM workspace_assets WHERE job_id = $1", key) == 0
    assert await pool.fetchval("SELECT count(*) FROM user_library WHERE source_job_id = $1", key) == 0


async def test_a_workspace_image_from_fal_still_downloads_under_the_test_settings(
    graphql: GraphQL, start_generation: StartGeneration, fake: FakeFal, alice: uuid.UUID
) -> None:
    # given the test settings (DOWNLOAD_ALLOW_NETWORKS=127.0.0.1) and fal serving its result on 127.0.0.1
    body = await graphql("{ imageModels { id modelKey provider } }")
    (model,) = [model for model in body["data"]["imageModels"] if model["modelKey"] == FAL_MODEL]
    await start_generation()
    # when an image is generated, then it completes
    made = await graphql(GENERATE_IMAGE, {"input": {"prompt": "a lighthouse", "modelId": model["id"]}}, user=alice)
    done = await wait_for_job(graphql, alice, made["data"]["generateImage"]["id"])
    assert done["status"] == "COMPLETED", done


def self_signed_for_localhost(folder: Path) -> tuple[Path, Path]:
    """A certificate for the name ``localhost`` only (not for 127.0.0.1), and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_file, key_file


async def test_https_connects_to_the_checked_address_and_verifies_the_certificate_for_the_host_name(
    tmp_path: Path,
) -> None:
    # given an https server on 127.0.0.1 whose certificate names only "localhost", and a client trusting it
    cert_file, key_file = self_signed_for_localhost(tmp_path)
    hosts: list[str] = []

    async def image(request: Request) -> Response:
        hosts.append(request.headers["host"])
        return Response(b"\x89PNG fake", media_type="image/png")

    app = Starlette(routes=[Route("/image.png", image)])
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning",
        ssl_certfile=str(cert_file), ssl_keyfile=str(key_file),
    )
    trusting = ssl.create_default_context(cafile=str(cert_file))
    loopback = AddressPolicy.allowing(["127.0.0.0/8", "::1"])
    async with serve_uvicorn(config), download_client(verify=trusting) as http:
        # when the image is downloaded by host name (the request goes to the checked 127.0.0.1)
        body = await download_image(
            http, f"https://localhost:{port}/image.png", max_bytes=1000, timeout=5, addresses=loopback
        )
        # then TLS verified the certificate against "localhost" (SNI), and the server saw the host name
        assert body == b"\x89PNG fake"
        assert hosts == [f"localhost:{port}"]

        # and by address, the same certificate does not verify: the name check is real
        with pytest.raises(DownloadError) as caught:
            await download_image(http, f"https://127.0.0.1:{port}/image.png", max_bytes=1000, timeout=5,
                                 addresses=loopback)
        assert "CERTIFICATE_VERIFY_FAILED" in caught.value.message or "certificate" in caught.value.message.lower()


def test_the_setting_names_the_allowed_networks(tmp_path: Path) -> None:
    default = Settings.from_environ({"PORTRAITS_DATA_DIR": str(tmp_path)})
    opened = Settings.from_environ(
        {"PORTRAITS_DATA_DIR": str(tmp_path), "DOWNLOAD_ALLOW_NETWORKS": " 127.0.0.1, 10.0.0.0/8 ,"}
    )
    assert default.generation.pipeline.download_addresses == PUBLIC_ONLY
    assert opened.generation.pipeline.download_addresses == AddressPolicy.allowing(["127.0.0.1", "10.0.0.0/8"])
