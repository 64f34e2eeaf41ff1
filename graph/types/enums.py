"""The stored enums (storage/enums.py) as GraphQL enums: the same classes, so a value has one name everywhere.

``strawberry.enum`` registers each class in place; graph modules import the
enums from here, so the registration has run before any type names them.
"""

from __future__ import annotations

import strawberry

from storage.enums import ContentRating, JobAttemptOutcome, JobDestination, JobStatus, LibraryTab, Quality

strawberry.enum(JobStatus, description="Where a job is: queued, processing, then completed, failed or canceled.")
strawberry.enum(JobDestination, description="What the image is for.")
strawberry.enum(
    JobAttemptOutcome,
    description=(
        "How one attempt at a job ended: RUNNING until it ends; COMPLETED; FAILED (see retryable); CANCELED by you;"
        " ABANDONED (its worker stopped renewing the lease and the job was claimed again) or LEASE_LOST (the same,"
        " its worker still running); RELEASED (its worker stopped and handed the job back to the queue)."
    ),
)
strawberry.enum(Quality, description="Generation quality: high (the seed's default) or fast.")
strawberry.enum(ContentRating, description="Who the character is suitable for.")
strawberry.enum(LibraryTab, description="Which library images to list: everything, or the seed's characters tab.")

__all__ = ["ContentRating", "JobAttemptOutcome", "JobDestination", "JobStatus", "LibraryTab", "Quality"]
