"""Standard Webhooks signatures (Replicate's webhooks): HMAC-SHA256 with the endpoint's ``whsec_`` secret.

Headers ``webhook-id`` (the delivery: the same on every retry of one message),
``webhook-timestamp`` (Unix seconds) and ``webhook-signature``: one or more
space-separated ``v1,<base64 HMAC-SHA256 of "id.timestamp.body">`` (several
while a secret is being rotated). The key is the secret's base64 part after
``whsec_``. Compared in constant time; a timestamp outside the tolerance is
refused, so a captured call cannot be replayed later.

Not the ``standardwebhooks`` package (1.1.0, checked): its malformed-header
paths raise ValueError, binascii.Error or UnicodeDecodeError instead of its
own error (a caller must catch everything), it decodes the body as UTF-8 and
parses it as JSON whether wanted or not, and its 5-minute tolerance and clock
are fixed. The check itself is the 20 lines below; the tests sign with that
package, so this is checked against the spec's reference implementation.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Callable, Mapping

import orjson

from server.webhook_delivery import Delivery, WebhookRefused, check_timestamp

SECRET_PREFIX = "whsec_"
ID = "webhook-id"
TIMESTAMP = "webhook-timestamp"
SIGNATURE = "webhook-signature"
MAX_HEADER_CHARS = 256
# Signatures in one header we look at (a rotation sends two); more is not a sender we know.
MAX_SIGNATURES = 8


def decode_secret(secret: str) -> bytes:
    """The HMAC key of a ``whsec_<base64>`` secret (the prefix is optional); ValueError when it is not one."""
    raw = secret.strip().removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(raw + "=" * (-len(raw) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("a webhook signing secret is 'whsec_' and base64") from None
    if len(key) < 16:
        raise ValueError("the webhook signing secret is shorter than 16 bytes")
    return key


class StandardWebhookVerifier:
    def __init__(self, secret: str, *, tolerance_seconds: float, clock: Callable[[], float] = time.time) -> None:
        self._key = decode_secret(secret)
        self.tolerance_seconds = tolerance_seconds
        self.clock = clock

    async def verify(self, headers: Mapping[str, str], body: bytes) -> Delivery:
        """The delivery when the secret's holder signed it within the tolerance; ``WebhookRefused`` otherwise.

        The request it is about is the body's ``id`` (a Replicate prediction), read only once the body is verified.
        """
        message_id, timestamp, signatures = (headers.get(name, "") for name in (ID, TIMESTAMP, SIGNATURE))
        if not (message_id and timestamp and signatures):
            raise WebhookRefused("a webhook-id, webhook-timestamp or webhook-signature header is missing")
        if len(message_id) > MAX_HEADER_CHARS:
            raise WebhookRefused("the webhook-id header is too long")
        check_timestamp(timestamp, now=self.clock(), tolerance=self.tolerance_seconds)
        expected = hmac.digest(self._key, f"{message_id}.{timestamp}.".encode() + body, hashlib.sha256)
        if not any(hmac.compare_digest(expected, given) for given in _v1_signatures(signatures)):
            raise WebhookRefused("no v1 signature matches the signing secret")
        return Delivery(request_id=_body_id(body), key=f"standard:{message_id}:{timestamp}")


def _v1_signatures(header: str) -> list[bytes]:
    """The decodable ``v1,<base64>`` entries of a webhook-signature header; others (v1a, garbage) are skipped."""
    found = []
    for entry in header.split(" ")[:MAX_SIGNATURES]:
        version, _, value = entry.partition(",")
        if version != "v1" or not value:
            continue
        try:
            found.append(base64.b64decode(value, validate=True))
        except (binascii.Error, ValueError):
            continue
    return found


def _body_id(body: bytes) -> str | None:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    value = data.get("id") if isinstance(data, dict) else None
    return value if isinstance(value, str) and 0 < len(value) <= MAX_HEADER_CHARS else None
