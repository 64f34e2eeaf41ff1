"""The request's Content-Type split by hand (server/graphql_request.py) says what ``email.message``, strawberry's
parser, says, for every value: the shortcut may only be faster."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from server.graphql_request import _media_type, _media_type_by_email

PIECES = st.sampled_from(
    ["application/json", "APPLICATION/JSON", "text/plain", ";", "=", " ", "\t", "charset", "utf-8", "UTF-8",
     "latin-1", ",", '"', "\\", "(", ")", "x", ";;", "==", "é", "*/*"]
)  # fmt: skip


@settings(max_examples=3000, deadline=None)
@given(st.lists(PIECES, max_size=9).map("".join))
def test_the_shortcut_reads_every_content_type_as_email_message_does(content_type: str) -> None:
    expected = _media_type_by_email(content_type) if content_type else ("", {})
    assert _media_type(content_type) == expected


def test_common_content_types() -> None:
    assert _media_type("application/json") == ("application/json", {})
    assert _media_type(" Application/JSON ; Charset=UTF-8") == ("application/json", {"charset": "UTF-8"})
    assert _media_type('application/json; charset="utf-8"') == ("application/json", {"charset": "utf-8"})
    assert _media_type(None) == ("", {})
