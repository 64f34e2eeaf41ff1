"""A URL a browser can load right now, and until when."""

from __future__ import annotations

from datetime import datetime
from typing import cast

import strawberry

from storage.objects.signing import SignedUrl


@strawberry.type(
    name="SignedUrl",
    description="A URL to show an image with. Signed URLs of one object are identical within a cache window, "
    "so browsers and CDNs can cache the image.",
)
class SignedUrlType:
    url: str = strawberry.field(
        description="Load it as is (an <img> src): our signed object route or bucket URL, or an external URL."
    )
    expires_at: datetime | None = strawberry.field(
        description="When a signed URL stops working; null for an external URL passed through unsigned."
    )

    @staticmethod
    def from_model(signed: SignedUrl | None) -> SignedUrlType | None:
        """storage's SignedUrl itself, resolved as this type: its attributes carry the fields' Python names and
        SignedUrlType has no interface (no ``is_type_of``), so no copy is made per URL."""
        return cast(SignedUrlType | None, signed)
