"""One provider call's time budget, shared by every HTTP call and every pause within it."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from pipeline.providers.interface import ProviderError


@dataclass(frozen=True, slots=True)
class Deadline:
    seconds: float
    end: float

    @classmethod
    def start(cls, seconds: float) -> Deadline:
        return cls(seconds, asyncio.get_running_loop().time() + seconds)

    def remaining(self) -> float:
        return self.end - asyncio.get_running_loop().time()

    def exceeded(self, what: str) -> ProviderError:
        """Retryable: a later attempt resumes the request, which may have finished by then."""
        return ProviderError(f"{what} timed out after {self.seconds:g} s", retryable=True)
