"""The cache of verified tokens (server/token_cache.py) behind TokenVerifier: what a hit still checks, what is
never kept, and its bound. Real tokens, real keys, a real JWKS over HTTP; only the cache's clock is the test's."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

import jwt
import orjson
import pytest

from server.auth import TokenError, TokenSettings, TokenVerifier, issue_token
from server.jwks import FetchedKeys, JwksConfig, StaticKeys, parse_jwks
from server.token_cache import VerifiedTokens
from storage.objects.tokens import LEEWAY_SECONDS
from tests.jwks_support import JwksServer, SigningKey, anon_key_claims, user_claims
from tests.support import TEST_JWT_SECRET

RSA_KEY = SigningKey.rsa("rsa-cache")
NEXT_RSA_KEY = SigningKey.rsa("rsa-cache-next")


class WallClock:
    """Seconds since the epoch, starting now, that move only when a test says so."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def hs256_verifier(cache: VerifiedTokens) -> TokenVerifier:
    return TokenVerifier(TEST_JWT_SECRET, TokenSettings(), verified=cache)


def token_for(user: uuid.UUID, ttl: timedelta = timedelta(minutes=5)) -> str:
    return issue_token(TEST_JWT_SECRET, user, ttl=ttl)


async def test_a_hit_answers_the_same_viewer_until_exp_plus_the_leeway_then_expired() -> None:
    clock = WallClock()
    cache = VerifiedTokens(clock=clock)
    verifier = hs256_verifier(cache)
    user = uuid.uuid4()
    issued = datetime.now(UTC)
    token = issue_token(TEST_JWT_SECRET, user, ttl=timedelta(minutes=5), now=issued)
    exp = int((issued + timedelta(minutes=5)).timestamp())
    # given a token verified once
    first = await verifier.verify(token)
    assert first is not None and first.user_id == user
    assert len(cache) == 1
    # when it comes again within exp plus the leeway, then the kept viewer answers (the same object: no new check)
    clock.now = exp + LEEWAY_SECONDS - 0.5
    assert await verifier.verify(token) is first
    # when the clock passes exp plus the leeway, then it is refused as expired and forgotten
    clock.now = exp + LEEWAY_SECONDS
    with pytest.raises(TokenError, match="token has expired"):
        await verifier.verify(token)
    assert len(cache) == 0


async def test_refused_tokens_are_never_kept_and_fail_every_time() -> None:
    cache = VerifiedTokens()
    verifier = hs256_verifier(cache)
    good = token_for(uuid.uuid4())
    header, payload, signature = good.split(".")
    tampered = f"{header}.{payload}.{signature[:-4]}AAAA"
    other_secret = issue_token(
        "another-secret-that-is-long-enough-for-hs256-checks!!", uuid.uuid4(), ttl=timedelta(hours=1)
    )
    expired = issue_token(
        TEST_JWT_SECRET, uuid.uuid4(), ttl=timedelta(hours=1), now=datetime.now(UTC) - timedelta(hours=2)
    )
    wrong_audience = jwt.encode({**user_claims(), "aud": "someone-else"}, TEST_JWT_SECRET, algorithm="HS256")
    for token, reason in [
        (tampered, "signature is invalid"),
        (other_secret, "signature is invalid"),
        (expired, "token has expired"),
        (wrong_audience, "audience"),
    ]:
        for _ in range(3):
            with pytest.raises(TokenError, match=reason):
                await verifier.verify(token)
    assert len(cache) == 0
    # and the good token, next to them, is kept
    assert await verifier.verify(good) is not None
    assert len(cache) == 1


async def test_distinct_valid_tokens_keep_at_most_max_entries_the_least_recently_used_dropped() -> None:
    cache = VerifiedTokens(max_entries=3)
    verifier = hs256_verifier(cache)
    tokens = [token_for(uuid.uuid4()) for _ in range(3)]
    viewers = [await verifier.verify(token) for token in tokens]
    # when the oldest is used again, then it becomes the most recent
    assert await verifier.verify(tokens[0]) is viewers[0]
    # when a flood of other valid tokens arrives, then the cache stays at its bound
    flood = [token_for(uuid.uuid4()) for _ in range(50)]
    for token in flood:
        assert await verifier.verify(token) is not None
        assert len(cache) <= 3
    assert len(cache) == 3
    # and the dropped ones are checked again in full (a new viewer object, the same user), then kept again
    again = await verifier.verify(tokens[0])
    assert again is not viewers[0] and again == viewers[0]
    assert await verifier.verify(tokens[0]) is again


async def test_max_entries_zero_keeps_nothing() -> None:
    cache = VerifiedTokens(max_entries=0)
    verifier = hs256_verifier(cache)
    token = token_for(uuid.uuid4())
    first = await verifier.verify(token)
    assert first is not None and await verifier.verify(token) == first
    assert len(cache) == 0
    with pytest.raises(ValueError, match="max_entries"):
        VerifiedTokens(max_entries=-1)


async def test_an_anon_token_is_kept_until_its_exp_and_one_whose_exp_is_no_number_never() -> None:
    clock = WallClock()
    cache = VerifiedTokens(clock=clock)
    verifier = hs256_verifier(cache)
    anon = jwt.encode(anon_key_claims(), TEST_JWT_SECRET, algorithm="HS256")
    assert await verifier.verify(anon) is None
    assert len(cache) == 1
    assert await verifier.verify(anon) is None
    clock.now += 3651 * 24 * 3600  # past the anon key's ten years
    with pytest.raises(TokenError, match="token has expired"):
        await verifier.verify(anon)
    # pyjwt reads exp "2000000000" as a number; nothing here knows when that token ends, so it is not kept
    clock.now = time.time()
    text_exp = jwt.encode(anon_key_claims(exp=str(int(time.time()) + 3600)), TEST_JWT_SECRET, algorithm="HS256")
    assert await verifier.verify(text_exp) is None
    assert await verifier.verify(text_exp) is None
    assert len(cache) == 0


async def test_a_jwks_token_is_checked_again_when_the_key_set_changes() -> None:
    """Key rotation: an entry is used only while the key set hands the same key object for its kid."""
    async with JwksServer.running([RSA_KEY.public_jwk]) as issuer:
        config = JwksConfig(url=issuer.url, cache_seconds=600, min_refresh_seconds=0, fetch_timeout_seconds=5)
        keys = FetchedKeys.of(config)
        cache = VerifiedTokens()
        async with TokenVerifier(None, TokenSettings(), keys, verified=cache) as verifier:
            user = uuid.uuid4()
            token = RSA_KEY.sign(user_claims(user))
            first = await verifier.verify(token)
            assert first is not None and first.user_id == user
            assert await verifier.verify(token) is first
            # when the issuer publishes the same key again (a fetch makes new key objects), then the token is
            # checked in full once against the new set, and accepted
            await keys.refresh()
            second = await verifier.verify(token)
            assert second is not first and second == first
            assert await verifier.verify(token) is second
            # when the issuer withdraws the key (rotated to another) and the keys are fetched, then the kept token
            # is refused as the whole check refuses it, every time, and not kept
            issuer.keys = [NEXT_RSA_KEY.public_jwk]
            await keys.refresh()
            for _ in range(2):
                with pytest.raises(TokenError, match="signing key is unknown"):
                    await verifier.verify(token)
            assert len(cache) == 0
            # and a token of the new key is accepted and kept
            assert await verifier.verify(NEXT_RSA_KEY.sign(user_claims(user))) is not None
            assert len(cache) == 1


async def test_static_jwks_keys_keep_their_entries() -> None:
    keys = StaticKeys(parse_jwks(orjson.dumps({"keys": [RSA_KEY.public_jwk]})))
    verifier = TokenVerifier(None, TokenSettings(), keys)
    token = RSA_KEY.sign(user_claims())
    first = await verifier.verify(token)
    assert first is not None and await verifier.verify(token) is first
    # an HS256 token is still refused with no secret configured, cached or not
    with pytest.raises(TokenError, match="HS256 is not accepted"):
        await verifier.verify(token_for(uuid.uuid4()))
