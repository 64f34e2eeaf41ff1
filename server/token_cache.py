"""Tokens already verified, so a client sending the same bearer token on every request pays for its check once.

Checking a JWT is most of the cost of a small request outside GraphQL
execution (pyjwt decodes it twice and checks every base64 character in
Python). A client sends the same token for its whole life, so
``TokenVerifier`` (server/auth.py) keeps what each token it accepted says,
by its exact text, and on a hit checks only what can change:

- the key: a JWKS token's entry holds the key object that verified it, and
  is used only while the key set still hands that same object for its
  ``kid``. A fetch that changes the keys (a rotation, a key withdrawn)
  replaces every object, so each token is checked again once against the
  new set. The HS256 secret is fixed at start;
- the clock: an entry is used only while the token is still accepted
  (``exp`` plus the leeway, the rule pyjwt applies); past it, it is dropped
  and the token refused as expired, as the whole check would then say.

Only successes are kept: a token refused once goes through the whole check
every time. The cache holds at most ``max_entries`` tokens, the least
recently used dropped first, so a flood of distinct valid tokens costs at
most ``max_entries`` x ``MAX_TOKEN_LENGTH`` characters (about 8 MB for the
default), never more.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from resolvers.viewer import Viewer

# Distinct tokens kept: a busy instance's active clients, each sending one token at a time.
MAX_ENTRIES = 1024


@dataclass(frozen=True, slots=True)
class Verified:
    """What a token was found to say when it was fully checked."""

    # Who it names; None for a valid token naming no user (Supabase's anon key).
    viewer: Viewer | None
    # Seconds since the epoch until which it is accepted: its exp plus the leeway.
    accepted_until: float
    # For a JWKS token, its kid and the key object that verified it; None for HS256.
    kid: str | None = None
    key: object | None = None


class VerifiedTokens:
    """A bounded LRU map from a token's exact text to what verifying it found; ``max_entries=0`` keeps none."""

    def __init__(self, max_entries: int = MAX_ENTRIES, *, clock: Callable[[], float] = time.time) -> None:
        if max_entries < 0:
            raise ValueError("max_entries must be 0 or more")
        self.max_entries = max_entries
        # Wall-clock seconds, as pyjwt reads them to check exp (tests pass their own).
        self.clock = clock
        self._entries: OrderedDict[str, Verified] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, token: str) -> Verified | None:
        """The token's entry, None when there is none (an entry past its exp is the caller's to refuse: ``expired``)."""
        entry = self._entries.get(token)
        if entry is not None:
            self._entries.move_to_end(token)
        return entry

    def expired(self, entry: Verified) -> bool:
        """Whether the token is past its exp plus the leeway (pyjwt: expired when exp <= now - leeway)."""
        return self.clock() >= entry.accepted_until

    def put(self, token: str, entry: Verified) -> None:
        """Keep ``entry``, unless it is already expired (an anon token whose exp is no number, say)."""
        if self.max_entries == 0 or self.expired(entry):
            return
        self._entries[token] = entry
        self._entries.move_to_end(token)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def discard(self, token: str) -> None:
        self._entries.pop(token, None)
