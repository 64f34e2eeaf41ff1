"""Cache windows: one URL per object per window, lifetimes within [ttl, ttl + window]."""

from __future__ import annotations

from pathlib import Path

import pytest

from storage.objects.local import LocalObjectStore
from storage.objects.paths import Bucket, ObjectKey
from storage.objects.signing import DEFAULT_TTL_SECONDS, SigningPolicy, UrlSigner
from storage.objects.tokens import ObjectTokens, derive_key

KEY = ObjectKey(Bucket.USER_LIBRARY, "0b6a4f7e-7c1e-4c47-9a55-3f3e1e0b7a11/job_char.png")
WORKSPACE_KEY = ObjectKey(Bucket.WORKSPACE_TEMP, "0b6a4f7e-7c1e-4c47-9a55-3f3e1e0b7a11/job_1.png")
START = 1_764_000_000  # a multiple of neither window, on purpose


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


@pytest.fixture
def store(tmp_path: Path) -> LocalObjectStore:
    return LocalObjectStore(tmp_path, public_url="http://testserver", tokens=ObjectTokens(derive_key("k" * 40)))


def signer_for(store: LocalObjectStore, clock: FakeClock, *, ratio: float = 0.1) -> UrlSigner:
    return UrlSigner(store, SigningPolicy(ttl_seconds=DEFAULT_TTL_SECONDS, window_ratio=ratio), clock=clock)


def test_the_same_object_gets_the_same_url_within_a_window(store: LocalObjectStore, clock: FakeClock) -> None:
    # given: user-library, TTL 24 h, so a window of 2.4 h (8640 s)
    signer = signer_for(store, clock)
    window_start = START - START % 8640
    # when: signed at the start, in the middle and at the last second of the window
    urls = set()
    for moment in (window_start, START, window_start + 8639):
        clock.now = moment
        urls.add(signer.sign(KEY))
    # then
    assert len(urls) == 1


def test_the_next_window_gets_a_new_url(store: LocalObjectStore, clock: FakeClock) -> None:
    signer = signer_for(store, clock)
    first = signer.sign(KEY)
    clock.now = START - START % 8640 + 8640
    second = signer.sign(KEY)
    assert second.url != first.url
    assert second.expires_at is not None and first.expires_at is not None
    assert (second.expires_at - first.expires_at).total_seconds() == 8640


@pytest.mark.parametrize("key,ttl", [(KEY, 86400), (WORKSPACE_KEY, 3600)])
def test_a_url_lives_at_least_its_ttl_and_at_most_ttl_plus_a_window(
    store: LocalObjectStore, clock: FakeClock, key: ObjectKey, ttl: int
) -> None:
    signer = signer_for(store, clock)
    for offset in range(0, 2 * ttl, 997):
        clock.now = START + offset
        signed = signer.sign(key)
        assert signed.expires_at is not None
        left = signed.expires_at.timestamp() - clock.now
        assert ttl <= left <= ttl + ttl // 10


def test_a_shorter_ttl_can_be_asked_for_and_a_longer_one_is_capped(store: LocalObjectStore, clock: FakeClock) -> None:
    signer = signer_for(store, clock, ratio=0)
    short = signer.sign(WORKSPACE_KEY, ttl=60)
    long = signer.sign(WORKSPACE_KEY, ttl=10 * 86400)
    assert short.expires_at is not None and long.expires_at is not None
    assert short.expires_at.timestamp() == START + 60
    assert long.expires_at.timestamp() == START + 3600


def test_a_short_ttl_gets_a_proportionally_short_window(store: LocalObjectStore, clock: FakeClock) -> None:
    # given a 60 s URL from a bucket whose own window is hours long
    signer = signer_for(store, clock)
    signed = signer.sign(KEY, ttl=60)
    # then it still expires within 60 + 6 s, not hours later
    assert signed.expires_at is not None
    assert 60 <= signed.expires_at.timestamp() - START <= 66


def test_a_ratio_of_zero_signs_fresh_every_second(store: LocalObjectStore, clock: FakeClock) -> None:
    signer = signer_for(store, clock, ratio=0)
    first = signer.sign(KEY)
    clock.now += 1
    assert signer.sign(KEY).url != first.url


def test_tokens_carry_the_window_times(store: LocalObjectStore, clock: FakeClock) -> None:
    # given
    signer = signer_for(store, clock)
    signed = signer.sign(KEY)
    token = signed.url.split("token=", 1)[1]
    assert signed.expires_at is not None
    # then the token verifies for its key until its expiry, and not a second after
    expires_at = signed.expires_at.timestamp()
    assert store.tokens.verify(token, key=KEY.key, now=expires_at - 1) == expires_at
    with pytest.raises(Exception, match="expired"):
        store.tokens.verify(token, key=KEY.key, now=expires_at)


@pytest.mark.parametrize(
    "ttls,ratio",
    [
        ({Bucket.USER_LIBRARY: 0, Bucket.WORKSPACE_TEMP: 3600}, 0.1),
        ({Bucket.USER_LIBRARY: 86400}, 0.1),
        ({Bucket.USER_LIBRARY: 7 * 86400, Bucket.WORKSPACE_TEMP: 3600}, 0.1),
        (DEFAULT_TTL_SECONDS, 1.5),
        (DEFAULT_TTL_SECONDS, float("nan")),
    ],
)
def test_impossible_policies_are_refused(ttls: dict[Bucket, int], ratio: float) -> None:
    with pytest.raises(ValueError):
        SigningPolicy(ttl_seconds=ttls, window_ratio=ratio)


@pytest.mark.parametrize("ratio", [0.1, 0.0])
def test_every_signature_carries_the_times_of_its_own_moment(
    store: LocalObjectStore, clock: FakeClock, ratio: float
) -> None:
    # given: one signer, asked at moments going forward, back across windows, and with several TTLs
    signer = signer_for(store, clock, ratio=ratio)
    moments = [START, START + 1, START + 8640, START - 8640, START - 8640 + 3, START + 10 * 8640, START]
    for moment in moments:
        for key, ttl in ((KEY, None), (KEY, 600), (WORKSPACE_KEY, None), (WORKSPACE_KEY, 600)):
            clock.now = moment
            # when
            signed = signer.sign(key, ttl=ttl)
            # then: the expiry the window rules give for that moment, whatever was signed before
            _, expires_at = signer.times(key.bucket, ttl)
            assert signed.expires_at is not None
            assert signed.expires_at.timestamp() == expires_at, (moment, key, ttl)
