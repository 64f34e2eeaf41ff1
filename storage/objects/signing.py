"""When signed URLs expire, and a cache so the same object gets the same URL.

Time is cut into windows (a tenth of the TTL by default). A URL signed at any
moment of a window is issued at the window's start and expires at
``start + window + ttl``, so it lives at least ``ttl`` and at most
``ttl + window`` seconds, and every request in that window gets the very
same URL: browsers and CDNs cache the image instead of fetching it again
(supabase/supabase#23406, supabase/storage#1186).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache

from storage.objects.paths import Bucket, ObjectKey
from storage.objects.sigv4 import MAX_EXPIRES_SECONDS
from storage.objects.store import ObjectStore

DEFAULT_TTL_SECONDS = {Bucket.WORKSPACE_TEMP: 3600, Bucket.USER_LIBRARY: 24 * 3600}
DEFAULT_WINDOW_RATIO = 0.1
CACHE_SIZE = 65536


@dataclass(frozen=True, slots=True)
class SigningPolicy:
    ttl_seconds: Mapping[Bucket, int]
    window_ratio: float = DEFAULT_WINDOW_RATIO

    def __post_init__(self) -> None:
        if not 0 <= self.window_ratio <= 1:
            raise ValueError("the window ratio must be between 0 and 1")
        for bucket in Bucket:
            ttl = self.ttl_seconds.get(bucket)
            if ttl is None or ttl < 1:
                raise ValueError(f"{bucket.value} needs a TTL of at least one second")
            if ttl + self.window(ttl) > MAX_EXPIRES_SECONDS:
                raise ValueError(f"{bucket.value}: TTL plus window must stay within 7 days (S3's limit)")

    def window(self, ttl: int) -> int:
        return int(ttl * self.window_ratio)

    def effective_ttl(self, bucket: Bucket, requested: int | None) -> int:
        """The bucket's TTL, or a shorter one asked for (never longer)."""
        limit = self.ttl_seconds[bucket]
        return limit if requested is None else max(1, min(requested, limit))


@dataclass(frozen=True, slots=True)
class SignedUrl:
    url: str
    # None for an external URL, which we pass through and which does not expire on our account.
    expires_at: datetime | None


class UrlSigner:
    """Signs through ``store``, caching each window's URL; the cache is dropped when the store's credentials change.

    A URL signed with rotated-away credentials (an expired STS session token)
    would be refused by S3 however long the window still runs.
    """

    def __init__(self, store: ObjectStore, policy: SigningPolicy, *, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.policy = policy
        self._clock = clock
        self._url = lru_cache(maxsize=CACHE_SIZE)(store.sign)
        self._identity: Hashable = store.signing_identity()
        # The current window of each (bucket, requested TTL): a page signs many URLs in one window, and
        # each would otherwise work out the same times and expiry datetime again.
        self._windows: dict[tuple[Bucket, int | None], _Window] = {}

    def sign(self, key: ObjectKey, *, ttl: int | None = None) -> SignedUrl:
        return self.sign_path(key.bucket, key.path, ttl=ttl)

    def sign_path(self, bucket: Bucket, path: str, *, ttl: int | None = None) -> SignedUrl:
        """``sign`` for a bucket and path already in hand (a page's catalogued keys: no ObjectKey made per URL)."""
        identity = self.store.signing_identity()
        if identity is not self._identity and identity != self._identity:
            self._url.cache_clear()
            self._identity = identity
        now = int(self._clock())
        window = self._windows.get((bucket, ttl))
        if window is None or not window.start <= now < window.until:
            window = self._window(bucket, ttl, now)
        url = self._url(bucket, path, issued_at=window.issued_at, expires_at=window.expires_at)
        return SignedUrl(url, window.expires)

    def _window(self, bucket: Bucket, ttl: int | None, now: int) -> _Window:
        issued_at, expires_at = self._times(bucket, ttl, now)
        effective = self.policy.effective_ttl(bucket, ttl)
        # A window shorter than a second (ratio 0) lasts the second it was made in.
        length = max(self.policy.window(effective), 1)
        start = now - now % length
        window = _Window(start, start + length, issued_at, expires_at, datetime.fromtimestamp(expires_at, UTC))
        if len(self._windows) >= MAX_WINDOWS:  # requested TTLs are the client's: keep the map bounded
            self._windows.clear()
        self._windows[bucket, ttl] = window
        return window

    def times(self, bucket: Bucket, ttl: int | None) -> tuple[int, int]:
        """(issued_at, expires_at) for a URL signed now: both fixed for the whole window."""
        return self._times(bucket, ttl, int(self._clock()))

    def _times(self, bucket: Bucket, ttl: int | None, now: int) -> tuple[int, int]:
        effective = self.policy.effective_ttl(bucket, ttl)
        window = self.policy.window(effective)
        if window < 1:
            return now, now + effective
        start = now - now % window
        return start, start + window + effective


# Distinct (bucket, requested TTL) windows a signer remembers at once.
MAX_WINDOWS = 256


@dataclass(frozen=True, slots=True)
class _Window:
    """A signing window: every URL signed at a second in [start, until) gets these times."""

    start: int
    until: int
    issued_at: int
    expires_at: int
    expires: datetime
