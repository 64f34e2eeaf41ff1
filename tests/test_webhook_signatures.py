"""Provider webhook signatures: fal's Ed25519 with keys from a JWKS served over HTTP, and Standard Webhooks' HMAC.

The keys and secrets are the tests' own (tests/webhook_support.py); Standard
Webhooks deliveries are signed with the spec's reference implementation.
"""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from collections.abc import AsyncIterator

import orjson
import pytest

from server.jwks import JwksError
from server.webhook_delivery import WebhookRefused
from server.webhook_fal import FalWebhookVerifier, fal_keys, parse_ed25519_jwks
from server.webhook_standard import StandardWebhookVerifier, decode_secret
from tests.jwks_support import JwksServer, SigningKey
from tests.webhook_support import FalSigner, fal_body, replicate_signer

TOLERANCE = 300.0
# Long enough for a few local verifications, short enough to wait out once.
MIN_REFRESH = 1.0

# --- Standard Webhooks (Replicate) ----------------------------------------------------------------


async def test_a_delivery_signed_with_the_secret_verifies_and_names_the_prediction() -> None:
    """Given a whsec_ secret, when the reference implementation signs a prediction body, then it verifies."""
    signer = replicate_signer()
    body = b'{"id": "p-123", "status": "succeeded"}'
    verifier = StandardWebhookVerifier(signer.secret, tolerance_seconds=TOLERANCE)

    delivery = await verifier.verify(signer.headers("msg_1", body), body)

    assert delivery.request_id == "p-123"


async def test_the_spec_example_verifies_at_its_own_time() -> None:
    """Given the Standard Webhooks spec's published example, when verified at its timestamp, then it holds (and
    fails with one byte of the body changed)."""
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    headers = {
        "webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
        "webhook-timestamp": "1614265330",
        "webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
    }
    verifier = StandardWebhookVerifier(secret, tolerance_seconds=TOLERANCE, clock=lambda: 1614265330.0)

    delivery = await verifier.verify(headers, b'{"test": 2432232314}')

    assert delivery.request_id is None  # the body has no "id"
    with pytest.raises(WebhookRefused):
        await verifier.verify(headers, b'{"test": 2432232315}')


@pytest.mark.parametrize(
    "tamper",
    ["wrong secret", "changed body", "stale timestamp", "future timestamp", "other id", "no signature header"],
)
async def test_a_delivery_that_does_not_hold_is_refused(tamper: str) -> None:
    """Given a signed delivery, when one part of it is wrong, then verification refuses it."""
    signer = replicate_signer()
    body = b'{"id": "p-1"}'
    stamp = int(time.time()) - 301 if tamper == "stale timestamp" else None
    stamp = int(time.time()) + 301 if tamper == "future timestamp" else stamp
    headers = (replicate_signer() if tamper == "wrong secret" else signer).headers("msg_1", body, timestamp=stamp)
    if tamper == "changed body":
        body = b'{"id": "p-2"}'
    if tamper == "other id":
        headers["webhook-id"] = "msg_2"
    if tamper == "no signature header":
        del headers["webhook-signature"]
    verifier = StandardWebhookVerifier(signer.secret, tolerance_seconds=TOLERANCE)

    with pytest.raises(WebhookRefused):
        await verifier.verify(headers, body)


@pytest.mark.parametrize(
    "signature", ["v1", "v1,", "v1,not base64!", "v1a,abc=", "garbage", "v2,AAAA", " ", "v1,AAAA v1,BBBB"]
)
async def test_malformed_signature_headers_are_refused_not_crashed_on(signature: str) -> None:
    """Given a malformed webhook-signature, when verified, then it is refused as any bad signature is."""
    signer = replicate_signer()
    headers = {**signer.headers("msg_1", b"{}"), "webhook-signature": signature}

    with pytest.raises(WebhookRefused):
        await StandardWebhookVerifier(signer.secret, tolerance_seconds=TOLERANCE).verify(headers, b"{}")


async def test_one_good_signature_among_several_is_enough_while_a_secret_rotates() -> None:
    """Given a header with the old secret's signature and the new one's, when verified with the new, then it holds."""
    old, new = replicate_signer(), replicate_signer()
    body = b'{"id": "p-9"}'
    stamp = int(time.time())
    both = f"{old.headers('m', body, timestamp=stamp)['webhook-signature']} " + new.headers(
        "m", body, timestamp=stamp
    )["webhook-signature"]
    headers = {**new.headers("m", body, timestamp=stamp), "webhook-signature": both}

    delivery = await StandardWebhookVerifier(new.secret, tolerance_seconds=TOLERANCE).verify(headers, body)

    assert delivery.request_id == "p-9"


def test_a_secret_must_be_whsec_base64() -> None:
    """Given secrets that are not base64 or too short, when decoded, then they are refused; the prefix is optional."""
    raw = base64.b64encode(b"k" * 24).decode()
    assert decode_secret(f"whsec_{raw}") == decode_secret(raw) == b"k" * 24
    for bad in ("whsec_***", "whsec_" + base64.b64encode(b"short").decode(), ""):
        with pytest.raises(ValueError):
            decode_secret(bad)


# --- fal: Ed25519 with keys from its JWKS ---------------------------------------------------------


@pytest.fixture
async def fal_jwks() -> AsyncIterator[tuple[JwksServer, FalSigner]]:
    signer = FalSigner.new("fal-k1")
    async with JwksServer.running([signer.public_jwk]) as server:
        yield server, signer


async def test_a_fal_call_signed_with_a_published_key_verifies(fal_jwks: tuple[JwksServer, FalSigner]) -> None:
    """Given fal's JWKS over HTTP, when a call signed with its key arrives, then it verifies with its request id."""
    server, signer = fal_jwks
    keys = fal_keys(server.url, min_refresh_seconds=60)
    request_id = str(uuid.uuid4())
    body = fal_body(request_id)
    try:
        delivery = await FalWebhookVerifier(keys, tolerance_seconds=TOLERANCE).verify(
            signer.headers(request_id, body), body
        )
        assert delivery.request_id == request_id
        # and a second call uses the cached keys
        await FalWebhookVerifier(keys, tolerance_seconds=TOLERANCE).verify(signer.headers(request_id, body), body)
        assert server.requests == 1
    finally:
        await keys.close()


@pytest.mark.parametrize(
    "tamper",
    ["unpublished key", "changed body", "stale timestamp", "future timestamp", "other request id", "other user",
     "not hex", "short signature", "missing header"],
)
async def test_a_fal_call_that_does_not_hold_is_refused(fal_jwks: tuple[JwksServer, FalSigner], tamper: str) -> None:
    """Given fal's JWKS, when one part of a signed call is wrong, then it is refused."""
    server, signer = fal_jwks
    keys = fal_keys(server.url, min_refresh_seconds=60)
    request_id = str(uuid.uuid4())
    body = fal_body(request_id)
    stamp = {"stale timestamp": int(time.time()) - 301, "future timestamp": int(time.time()) + 301}.get(tamper)
    sender = FalSigner.new("fal-k1") if tamper == "unpublished key" else signer
    headers = sender.headers(request_id, body, timestamp=stamp)
    match tamper:
        case "changed body":
            body = fal_body(request_id, image_url="https://elsewhere.invalid/x.png")
        case "other request id":
            headers["x-fal-webhook-request-id"] = str(uuid.uuid4())
        case "other user":
            headers["x-fal-webhook-user-id"] = "someone-else"
        case "not hex":
            headers["x-fal-webhook-signature"] = "zz" * 64
        case "short signature":
            headers["x-fal-webhook-signature"] = headers["x-fal-webhook-signature"][:64]
        case "missing header":
            del headers["x-fal-webhook-user-id"]
    try:
        with pytest.raises(WebhookRefused):
            await FalWebhookVerifier(keys, tolerance_seconds=TOLERANCE).verify(headers, body)
    finally:
        await keys.close()


async def test_fal_keys_rotate_and_forged_calls_do_not_hammer_the_jwks(
    fal_jwks: tuple[JwksServer, FalSigner],
) -> None:
    """Given cached keys, when fal rotates to a new key, then its first call fetches the JWKS again and verifies;
    when forged calls follow, then the JWKS is not fetched again within the minimum interval."""
    server, old = fal_jwks
    keys = fal_keys(server.url, min_refresh_seconds=MIN_REFRESH)
    verifier = FalWebhookVerifier(keys, tolerance_seconds=TOLERANCE)
    request_id = str(uuid.uuid4())
    body = fal_body(request_id)
    try:
        await verifier.verify(old.headers(request_id, body), body)
        assert server.requests == 1

        # when fal publishes a new key and signs with it (after the minimum interval: the start's fetch counts)
        await asyncio.sleep(MIN_REFRESH * 1.2)
        new = FalSigner.new("fal-k2")
        server.keys = [new.public_jwk]
        delivery = await verifier.verify(new.headers(request_id, body), body)

        # then one more fetch found it
        assert delivery.request_id == request_id
        assert server.requests == 2

        # when calls signed by a key fal never published keep coming
        forger = FalSigner.new("fal-k2")
        for _ in range(5):
            with pytest.raises(WebhookRefused):
                await verifier.verify(forger.headers(request_id, body), body)

        # then none of them fetched the JWKS again, and the retired key no longer verifies
        assert server.requests == 2
        with pytest.raises(WebhookRefused):
            await verifier.verify(old.headers(request_id, body), body)
    finally:
        await keys.close()


async def test_fal_keys_are_fetched_at_the_first_call_when_the_jwks_was_down_at_start() -> None:
    """Given a JWKS that failed at start, when it comes back and a call arrives, then the call fetches and verifies."""
    signer = FalSigner.new("fal-k1")
    async with JwksServer.running([signer.public_jwk], status=503) as server:
        keys = fal_keys(server.url, min_refresh_seconds=0.1)
        try:
            await keys.start()
            assert keys.keys == {}
            server.status = 200
            await asyncio.sleep(0.15)
            request_id = str(uuid.uuid4())
            body = fal_body(request_id)

            delivery = await FalWebhookVerifier(keys, tolerance_seconds=TOLERANCE).verify(
                signer.headers(request_id, body), body
            )

            assert delivery.request_id == request_id
        finally:
            await keys.close()


def test_only_ed25519_public_keys_are_kept_from_fal_jwks() -> None:
    """Given a JWKS with an RSA key, a private OKP key and an Ed25519 public key, then only the last is kept."""
    good = FalSigner.new("good").public_jwk
    private = {**FalSigner.new("private").public_jwk, "d": good["x"]}
    found = parse_ed25519_jwks(_jwks([SigningKey.rsa("rsa").public_jwk, private, good]))
    assert list(found.keys) == ["good"]
    with pytest.raises(JwksError):
        parse_ed25519_jwks(_jwks([SigningKey.ec("ec").public_jwk]))


def _jwks(keys: list[dict[str, object]]) -> bytes:
    return orjson.dumps({"keys": keys})
