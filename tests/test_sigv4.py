"""Our presigned S3 URLs are botocore's, byte for byte, at a fraction of the cost.

botocore is the reference implementation of SigV4; moto (the test S3) does
not check query signatures, so equality with botocore at the same instant is
what proves a URL would pass on AWS, MinIO or R2. The one patch here pins
botocore's clock, a library function, never our code.
"""

from __future__ import annotations

import datetime
import functools
from typing import Any, Literal
from unittest import mock
from urllib.parse import parse_qsl, urlsplit

import botocore.auth
import botocore.config
import botocore.session
import pytest

from storage.objects.sigv4 import MAX_EXPIRES_SECONDS, Credentials, Presigner

INSTANTS = [1764000000, 1764086399, 1764086400, 1800000000]
KEYS = [
    "3f6c/job_1.png",
    "3f6c/job_1_char.thumb.webp",
    "u 1/a+b=c&d~e.png",
    "ünï/çødé/名前.png",
    "u/%41 literal percent.png",
]
CREDENTIALS = [
    Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
    Credentials("ASIAEXAMPLE", "secret/with+chars=", "FQoGZXIvYXdzE+token/with=odd&chars"),
]
AddressingStyle = Literal["path", "virtual"]
ENDPOINTS: list[tuple[str, AddressingStyle]] = [
    ("http://127.0.0.1:9000", "path"),
    ("https://s3.eu-west-1.amazonaws.com", "virtual"),
    ("https://project.supabase.co/storage/v1/s3", "path"),
]


@functools.cache
def botocore_client(endpoint: str, style: AddressingStyle, credentials: Credentials) -> Any:
    return botocore.session.get_session().create_client(
        "s3",
        region_name="eu-west-1",
        endpoint_url=endpoint,
        aws_access_key_id=credentials.access_key,
        aws_secret_access_key=credentials.secret_key,
        aws_session_token=credentials.token,
        config=botocore.config.Config(signature_version="s3v4", s3={"addressing_style": style}),
    )


def botocore_url(
    endpoint: str, style: AddressingStyle, credentials: Credentials, key: str, instant: int, expires: int
) -> str:
    client = botocore_client(endpoint, style, credentials)
    moment = datetime.datetime.fromtimestamp(instant, datetime.UTC).replace(tzinfo=None)
    with mock.patch.object(botocore.auth, "get_current_datetime", return_value=moment):
        url: str = client.generate_presigned_url(
            "get_object", Params={"Bucket": "user-library", "Key": key}, ExpiresIn=expires
        )
    return url


def parts(url: str) -> tuple[str, str, str, dict[str, str]]:
    split = urlsplit(url)
    return split.scheme, split.netloc, split.path, dict(parse_qsl(split.query, keep_blank_values=True))


@pytest.mark.parametrize("endpoint,style", ENDPOINTS)
@pytest.mark.parametrize("credentials", CREDENTIALS, ids=["long-term", "session-token"])
def test_urls_equal_botocores_for_the_same_instant(
    endpoint: str, style: AddressingStyle, credentials: Credentials
) -> None:
    presigner = Presigner(
        endpoint_url=endpoint, region="eu-west-1", credentials=credentials, path_style=style == "path"
    )
    for instant in INSTANTS:
        for key in KEYS:
            for expires in (1, 3600, MAX_EXPIRES_SECONDS):
                ours = presigner.url("user-library", key, issued_at=instant, expires_in=expires)
                theirs = botocore_url(endpoint, style, credentials, key, instant, expires)
                assert parts(ours) == parts(theirs), (ours, theirs)


def test_rotated_credentials_sign_with_the_new_key() -> None:
    # given a presigner that signed with old credentials (its signing key is cached)
    old, new = CREDENTIALS
    presigner = Presigner(endpoint_url="http://127.0.0.1:9000", region="eu-west-1", credentials=old, path_style=True)
    presigner.url("user-library", KEYS[0], issued_at=INSTANTS[0], expires_in=60)
    # when the credentials rotate
    presigner.credentials = new
    # then the next URL is the one botocore makes with the new ones
    ours = presigner.url("user-library", KEYS[0], issued_at=INSTANTS[0], expires_in=60)
    assert parts(ours) == parts(botocore_url("http://127.0.0.1:9000", "path", new, KEYS[0], INSTANTS[0], 60))


@pytest.mark.parametrize("expires", [0, -5, MAX_EXPIRES_SECONDS + 1])
def test_lifetimes_sigv4_refuses_are_refused_here(expires: int) -> None:
    presigner = Presigner(
        endpoint_url="http://127.0.0.1:9000", region="us-east-1", credentials=CREDENTIALS[0], path_style=True
    )
    with pytest.raises(ValueError):
        presigner.url("user-library", "a/b.png", issued_at=INSTANTS[0], expires_in=expires)
