"""The issuer's keys: which JWKs are kept, and how fetched keys are cached, refreshed and kept through an outage.

``FetchedKeys`` against a JWKS served over real HTTP (tests/jwks_support.py); its clock is the tests' own where a
test is about time, so cache lifetimes and the refetch interval are exact, not slept through.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from pathlib import Path

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from server.jwks import FetchedKeys, JwksConfig, JwksError, parse_jwks, read_jwks_file
from tests.jwks_support import JwksServer, SigningKey

RSA_KEY = SigningKey.rsa("rsa-1")
EC_KEY = SigningKey.ec("ec-1")


class Clock:
    """Monotonic seconds that move only when a test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def fetched(
    issuer: JwksServer,
    clock: Clock,
    *,
    cache_seconds: float = 600,
    min_refresh_seconds: float = 30,
    fetch_timeout_seconds: float = 5,
) -> FetchedKeys:
    config = JwksConfig(
        url=issuer.url,
        cache_seconds=cache_seconds,
        min_refresh_seconds=min_refresh_seconds,
        fetch_timeout_seconds=fetch_timeout_seconds,
    )
    return FetchedKeys.of(config, clock=clock)


def test_a_jwks_keeps_only_public_rs256_and_es256_signing_keys() -> None:
    """Given a JWKS mixing usable keys with every kind that must not verify a token, only the usable ones stay."""
    weak = SigningKey.rsa("rsa-1024", bits=1024)
    p384 = SigningKey.ec("p-384", curve=ec.SECP384R1())
    private = {**RSA_KEY.public_jwk, "kid": "private", "d": "AQAB"}
    document = {
        "keys": [
            RSA_KEY.public_jwk,
            {key: value for key, value in EC_KEY.public_jwk.items() if key not in ("alg", "use")},  # alg from crv
            {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0", "alg": "HS256"},
            private,
            weak.public_jwk,
            {**p384.public_jwk, "alg": "ES256"},  # P-384 claiming ES256
            {**p384.public_jwk, "kid": "p-384-own"},  # ES384: not accepted
            {**EC_KEY.public_jwk, "kid": "ec-as-rs", "alg": "RS256"},
            {**RSA_KEY.public_jwk, "kid": "enc", "use": "enc"},
            {key: value for key, value in RSA_KEY.public_jwk.items() if key != "kid"},
            {**RSA_KEY.public_jwk, "kid": "ec-1"},  # a second key under a kid already taken
            "not an object",
        ]
    }
    # when it is parsed
    found = parse_jwks(orjson.dumps(document))

    # then the RSA key and the EC key (its algorithm told by its curve) are kept, with their algorithms
    assert {kid: key.algorithm_name for kid, key in found.keys.items()} == {"rsa-1": "RS256", "ec-1": "ES256"}
    assert len(found.skipped) == 10, found.skipped


@pytest.mark.parametrize(
    "document,reason",
    [
        (b"<html>", "not JSON"),
        (b"[]", "'keys' list"),
        (b'{"keys": {}}', "'keys' list"),
        (b'{"keys": [{"kty": "oct", "kid": "a", "k": "c2VjcmV0"}]}', "no usable RS256 or ES256 signing key"),
    ],
)
def test_a_jwks_without_a_usable_key_is_an_error(document: bytes, reason: str) -> None:
    """A document that is not a JWKS, or has no usable key, is refused with the reason."""
    with pytest.raises(JwksError, match=reason):
        parse_jwks(document)


def test_a_jwks_file_is_read_and_a_missing_one_says_so(tmp_path: Path) -> None:
    """JWT_JWKS_FILE: its keys, or an error naming the file."""
    path = tmp_path / "jwks.json"
    path.write_bytes(orjson.dumps({"keys": [EC_KEY.public_jwk]}))
    assert list(read_jwks_file(path).keys) == ["ec-1"]
    with pytest.raises(JwksError, match="cannot read"):
        read_jwks_file(tmp_path / "missing.json")


async def test_a_new_kid_is_fetched_once_and_known_kids_are_not_refetched() -> None:
    """Key rotation: a token naming a kid that has just appeared makes exactly one more fetch."""
    clock = Clock()
    async with JwksServer.running([RSA_KEY.public_jwk]) as issuer:
        keys = fetched(issuer, clock)
        # given the keys fetched at start
        await keys.start()
        assert issuer.requests == 1
        # when known kids are asked for, many times, then nothing is fetched again
        for _ in range(20):
            assert (await keys.key("rsa-1")) is not None
        assert issuer.requests == 1
        # when the issuer adds a key, past the refetch interval, and a token names it
        issuer.keys = [RSA_KEY.public_jwk, EC_KEY.public_jwk]
        clock.now += 31
        found = await asyncio.gather(*(keys.key("ec-1") for _ in range(10)))
        # then one fetch served all ten waiting lookups
        assert all(key is not None and key.algorithm_name == "ES256" for key in found)
        assert issuer.requests == 2
        await keys.close()


async def test_unknown_kids_refetch_at_most_once_per_interval() -> None:
    """Random kids cannot make us hammer the issuer: one fetch per JWT_JWKS_MIN_REFRESH_SECONDS, whatever arrives."""
    clock = Clock()
    async with JwksServer.running([RSA_KEY.public_jwk]) as issuer:
        keys = fetched(issuer, clock, min_refresh_seconds=30)
        await keys.start()
        # when 200 made-up kids arrive within the interval after the start's fetch
        for _ in range(100):
            assert (await keys.key(uuid.uuid4().hex)) is None
        clock.now += 10
        assert all(key is None for key in await asyncio.gather(*(keys.key(uuid.uuid4().hex) for _ in range(100))))
        # then none of them was fetched for
        assert issuer.requests == 1
        # when the interval has passed, then one more unknown kid makes one fetch, and the next ones none
        clock.now += 21
        for _ in range(50):
            assert (await keys.key(uuid.uuid4().hex)) is None
        assert issuer.requests == 2
        await keys.close()


async def test_keys_are_refetched_after_their_max_age_without_holding_up_a_token() -> None:
    """Cache-Control max-age decides when the keys are stale; a stale known key still answers at once."""
    clock = Clock()
    async with JwksServer.running([RSA_KEY.public_jwk], cache_control="public, max-age=120") as issuer:
        keys = fetched(issuer, clock, cache_seconds=600)
        await keys.start()
        # given keys younger than their max-age, then they are used as they are
        clock.now += 119
        assert (await keys.key("rsa-1")) is not None
        assert issuer.requests == 1
        # when they pass it and the issuer has removed the key, then the token in hand still gets the old key ...
        issuer.keys = [EC_KEY.public_jwk]
        clock.now += 2
        assert (await keys.key("rsa-1")) is not None
        # ... and a background fetch replaces the keys
        await keys.refresh()  # (joins the fetch under way)
        assert issuer.requests == 2
        assert (await keys.key("ec-1")) is not None
        assert keys.keys.keys() == {"ec-1"}
        await keys.close()


async def test_without_max_age_keys_live_for_the_configured_time() -> None:
    """No Cache-Control: JWT_JWKS_CACHE_SECONDS decides."""
    clock = Clock()
    async with JwksServer.running([RSA_KEY.public_jwk]) as issuer:
        keys = fetched(issuer, clock, cache_seconds=300)
        await keys.start()
        clock.now += 299
        await keys.key("rsa-1")
        assert issuer.requests == 1
        clock.now += 2
        await keys.key("rsa-1")
        await keys.refresh()
        assert issuer.requests == 2
        await keys.close()


@pytest.mark.parametrize("outage", ["down", "503", "garbage", "no usable key", "too large", "too slow"])
async def test_an_outage_keeps_the_cached_keys_and_refuses_unknown_kids(
    outage: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The issuer fails: known kids still verify, unknown ones are None (a 401 upstream), and it is logged."""
    clock = Clock()
    async with JwksServer.running([RSA_KEY.public_jwk]) as issuer:
        keys = fetched(issuer, clock, fetch_timeout_seconds=0.5)
        await keys.start()
        # given an issuer that fails from now on
        if outage == "down":
            await issuer.stop()
        elif outage == "503":
            issuer.status = 503
        elif outage == "garbage":
            issuer.body = b"<html>maintenance</html>"
        elif outage == "no usable key":
            issuer.keys = []
        elif outage == "too large":
            issuer.body = b'{"keys": [' + b" " * 300_000 + b"]}"
        else:
            issuer.delay = 2
        # when a rotated kid arrives past the interval, and the cached keys are past their lifetime
        clock.now += 10_000
        with caplog.at_level(logging.WARNING, logger="server.jwks"):
            started = asyncio.get_running_loop().time()
            assert (await keys.key("ec-1")) is None
            waited = asyncio.get_running_loop().time() - started
        # then the unknown kid is refused within the fetch's time limit, the known key stays, and the log says why
        assert waited < 3
        assert (await keys.key("rsa-1")) is not None
        assert keys.keys.keys() == {"rsa-1"}
        assert any("JWKS fetch" in record.getMessage() and "failed" in record.getMessage() for record in caplog.records)
        await keys.close()


async def test_an_issuer_down_at_start_is_retried_once_the_interval_passes() -> None:
    """A failed first fetch does not stop the start; the keys arrive with the first fetch that works."""
    clock = Clock()
    async with JwksServer.running([EC_KEY.public_jwk], status=503) as issuer:
        keys = fetched(issuer, clock)
        await keys.start()  # (does not raise)
        assert (await keys.key("ec-1")) is None
        issuer.status = 200
        assert (await keys.key("ec-1")) is None  # within the interval: not fetched again
        clock.now += 31
        assert (await keys.key("ec-1")) is not None
        assert issuer.requests == 2
        await keys.close()
