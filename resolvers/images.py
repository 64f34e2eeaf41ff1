"""The seed's rules for showing a stored image reference, and for accepting one.

Showing: an http(s) URL passes through unsigned; a path in one of our buckets
is signed there, but only when it lies under its owner's ``{user_id}/`` prefix
and the catalog says the object exists; anything else is ``None`` (clients
show their placeholder), never an error that would break a list.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from uuid import UUID

from resolvers.errors import BadUserInput
from resolvers.validation import check_storable, clean_external_url
from storage.objects.paths import (
    DEFAULT_BUCKET,
    Bucket,
    ExternalUrl,
    InvalidObjectPath,
    ObjectKey,
    parse_image_reference,
    path_owned_by,
)
from storage.objects.signing import SignedUrl, UrlSigner

logger = logging.getLogger(__name__)

MAX_REFERENCE_LENGTH = 2048


def signed_image(
    reference: str | None,
    *,
    owner_id: UUID,
    stored_keys: Collection[str],
    signer: UrlSigner,
    ttl: int | None = None,
) -> SignedUrl | None:
    """A URL a browser can load for ``reference`` (as kept in ``image_url``), or None."""
    if reference is None or not reference.strip():
        return None
    known = _catalogued_key(reference, stored_keys)
    if known is not None:  # a key we wrote: checked then, not parsed again
        bucket, path = known
        return signer.sign_path(bucket, path, ttl=ttl) if path_owned_by(path, owner_id) else None
    try:
        target = parse_image_reference(reference)
    except InvalidObjectPath as error:
        logger.warning("not signing an invalid stored image path %r: %s", reference, error)
        return None
    if target is None:
        return None
    if isinstance(target, ExternalUrl):
        return SignedUrl(target.url, None)
    if not target.is_owned_by(owner_id) or target.key not in stored_keys:
        return None
    return signer.sign(target, ttl=ttl)


_BUCKETS = {bucket.value: bucket for bucket in Bucket}


def _catalogued_key(reference: str, stored_keys: Collection[str]) -> tuple[Bucket, str] | None:
    """The bucket and path ``reference`` names when the catalog holds it, by ``parse_image_reference``'s reading;
    else None. (A tuple, not an ObjectKey: a page signs a hundred, and the dataclass's frozen ``__init__`` cost
    more than the lookup.)

    The catalog (storage/objects/catalog.py) records only objects a store wrote, and both stores run
    ``check_path`` on every path they write (s3.py, local.py): a catalogued key's path passed it then and is
    not checked again. An external URL never matches (its default-bucket form holds the empty segment of
    "//", which ``check_path`` refuses, so no store wrote it); an uncatalogued reference takes the full parse.
    """
    if not stored_keys:
        return None
    head, separator, rest = reference.partition("/")
    bucket = _BUCKETS.get(head) if separator else None
    if bucket is not None:
        return (bucket, rest) if reference in stored_keys else None
    if f"{DEFAULT_BUCKET.value}/{reference}" in stored_keys:
        return DEFAULT_BUCKET, reference
    return None


def check_ttl(ttl_seconds: int | None) -> int | None:
    if ttl_seconds is not None and ttl_seconds < 1:
        raise BadUserInput("ttlSeconds must be at least 1", field="ttl_seconds")
    return ttl_seconds


def clean_image_reference(value: str, *, field: str, owner_id: UUID) -> str:
    """An external http(s) URL, or a path in the owner's own storage, stored as ``bucket/path``.

    A bare path is taken as user-library, as the seed's ChatMessage does.
    """
    value = value.strip()
    if len(value) > MAX_REFERENCE_LENGTH:  # before any character is looked at
        raise BadUserInput(f"{field} must be at most {MAX_REFERENCE_LENGTH} characters", field=field)
    check_storable(value, field=field)
    if "://" in value:
        return clean_external_url(value, field=field, max_length=MAX_REFERENCE_LENGTH)
    try:
        target = parse_image_reference(value)
    except InvalidObjectPath as error:
        raise BadUserInput(f"{field} is not a valid storage path: {error}", field=field) from None
    if not isinstance(target, ObjectKey):  # "mailto:x" and the like
        raise BadUserInput(f"{field} must be an http(s) URL or a storage path", field=field)
    if not target.is_owned_by(owner_id):
        raise BadUserInput(f"{field} must be a path under your own folder ({owner_id}/...)", field=field)
    return target.key
