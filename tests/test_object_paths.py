"""The seed's path rules, in ``storage.objects.paths`` alone."""

from __future__ import annotations

import uuid

import pytest

from storage.objects.paths import (
    Bucket,
    ExternalUrl,
    InvalidObjectPath,
    ObjectKey,
    library_image_path,
    parse_image_reference,
    thumbnail_path,
    workspace_image_path,
)

USER = uuid.UUID("0b6a4f7e-7c1e-4c47-9a55-3f3e1e0b7a11")
JOB = uuid.UUID("1c2d3e4f-0000-4000-8000-000000000002")
CHARACTER = uuid.UUID("2d3e4f50-0000-4000-8000-000000000003")


@pytest.mark.parametrize(
    "reference,expected",
    [
        (None, None),
        ("", None),
        ("   ", None),
        ("https://fal.media/files/a.png", ExternalUrl("https://fal.media/files/a.png")),
        ("HTTP://EXAMPLE.COM/A.PNG", ExternalUrl("HTTP://EXAMPLE.COM/A.PNG")),
        (f"user-library/{USER}/a.png", ObjectKey(Bucket.USER_LIBRARY, f"{USER}/a.png")),
        (f"workspace-temp/{USER}/a.png", ObjectKey(Bucket.WORKSPACE_TEMP, f"{USER}/a.png")),
        (f"{USER}/a.png", ObjectKey(Bucket.USER_LIBRARY, f"{USER}/a.png")),
        # the bucket must be a whole first segment
        (f"user-library-old/{USER}/a.png", ObjectKey(Bucket.USER_LIBRARY, f"user-library-old/{USER}/a.png")),
    ],
)
def test_image_references_follow_the_seed(reference: str | None, expected: object) -> None:
    assert parse_image_reference(reference) == expected


@pytest.mark.parametrize("reference", ["user-library/../x.png", "workspace-temp/", "user-library/a//b.png", "a\\b.png"])
def test_bad_paths_in_references_are_refused(reference: str) -> None:
    with pytest.raises(InvalidObjectPath):
        parse_image_reference(reference)


def test_ownership_is_the_first_path_segment() -> None:
    key = ObjectKey(Bucket.USER_LIBRARY, f"{USER}/a.png")
    assert key.is_owned_by(USER)
    assert not key.is_owned_by(uuid.uuid4())
    assert not ObjectKey(Bucket.USER_LIBRARY, f"{USER}x/a.png").is_owned_by(USER)


def test_paths_are_exactly_the_seeds() -> None:
    workspace = workspace_image_path(user_id=USER, job_id=JOB, timestamp_ms=1764000000123)
    library = library_image_path(user_id=USER, job_id=JOB, character_id=CHARACTER)
    assert workspace == f"{USER}/{JOB}_1764000000123.png"
    assert library == f"{USER}/{JOB}_{CHARACTER}.png"
    assert thumbnail_path(library) == f"{USER}/{JOB}_{CHARACTER}.thumb.webp"
    assert thumbnail_path(workspace) == f"{USER}/{JOB}_1764000000123.thumb.webp"
