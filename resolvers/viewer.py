"""Who is asking: the authenticated user every resolver filters by."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID


@dataclass(frozen=True, slots=True)
class Viewer:
    user_id: UUID
    # When the token stops being accepted: its exp plus the clock-skew leeway (server/auth.py).
    expires_at: datetime
