"""What every image provider implements, and what it hands back.

A provider turns a prompt into one image. Slow, paid providers (fal.ai) work
in two steps: a submission that costs money and returns a request id, then
polling until the result is ready. The worker records the request id as soon
as the provider reports it (``ProgressReporter.submitted``), so a later
attempt resumes that request instead of paying for a new one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from storage.enums import Quality


@dataclass(frozen=True, slots=True)
class ImageReference:
    """A character's reference image as a provider takes it: a short-lived signed URL for a remote provider
    (which fetches it itself), or the bytes for one that renders on this machine. Never both."""

    url: str | None = field(default=None, repr=False)
    data: bytes | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if (self.url is None) == (self.data is None):
            raise ValueError("a reference image is either a URL or bytes")


@dataclass(frozen=True, slots=True)
class ImageRequest:
    model_key: str
    prompt: str
    # None lets the provider choose; the chosen seed comes back in the result.
    seed: int | None
    quality: Quality
    width: int = 1024
    height: int = 1024
    # Only for models whose image_models.supports_reference is true (job creation refuses the others).
    reference: ImageReference | None = None


@dataclass(frozen=True, slots=True)
class ProviderProgress:
    """Where the provider has the request: fal's words, IN_QUEUE, IN_PROGRESS or COMPLETED; and, from a provider
    whose logs show it (Replicate), the percent of its last progress bar (0 to 100) and its last log line
    (pipeline/providers/logs.py)."""

    status: str
    queue_position: int | None = None
    percent: int | None = None
    message: str | None = None


@dataclass(frozen=True, slots=True)
class ProviderResult:
    """The generated image: either its bytes (a local renderer) or a URL to download it from."""

    seed: int | None
    image_url: str | None = None
    image_bytes: bytes | None = None
    content_type: str | None = None

    def __post_init__(self) -> None:
        if (self.image_url is None) == (self.image_bytes is None):
            raise ValueError("a provider result has either image_url or image_bytes")


class ProviderError(Exception):
    """The provider failed; ``retryable`` says whether trying again later may help.

    5xx answers, timeouts and dropped connections are retryable; a refused
    request (4xx, bad key, malformed result) is not.
    """

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable


class ProgressReporter(Protocol):
    """The worker's side: it persists what the provider reports, as it happens."""

    async def submitted(self, request_id: str) -> None:
        """A paid request exists now; a retry must resume it rather than submit again."""
        ...

    async def progress(self, progress: ProviderProgress) -> None:
        """The provider's status changed (or the queue moved)."""
        ...


class ImageProvider(Protocol):
    name: str

    async def generate(
        self, request: ImageRequest, *, reporter: ProgressReporter, request_id: str | None = None
    ) -> ProviderResult:
        """Run ``request`` to completion; with ``request_id``, resume that earlier submission instead."""
        ...

    async def cancel(self, *, model_key: str, request_id: str) -> None:
        """Ask the provider to stop a submitted request; best effort, never raises."""
        ...

    async def close(self) -> None:
        ...
