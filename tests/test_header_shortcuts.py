"""Shortcuts on the request's headers may only be faster: the Content-Type split by hand (server/graphql_request.py)
says what ``email.message``, strawberry's parser, says, and the Accept choice kept per value
(server/media_types.py) is the one parsing it again gives."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from server.graphql_request import _media_type, _media_type_by_email
from server.media_types import CACHED_ACCEPT_CHARS, CHOICES_KEPT, _choice, _kept_choice, response_media_type

PIECES = st.sampled_from(
    ["application/json", "APPLICATION/JSON", "text/plain", ";", "=", " ", "\t", "charset", "utf-8", "UTF-8",
     "latin-1", ",", '"', "\\", "(", ")", "x", ";;", "==", "é", "*/*", "*", "'", "%"]
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


def test_an_rfc_2231_parameter_is_read_as_email_message_reads_it() -> None:
    # given a charset in RFC 2231's extended form (``charset*``: a charset, a language and the value, quoted by %),
    # which email.message decodes into another value than the text after the "="
    content_type = "application/json; charset*=utf-8''latin-1"

    # when the shortcut reads it
    media_type, params = _media_type(content_type)

    # then it answers as email.message does (which the request then refuses as an unsupported charset), not with
    # a parameter named "charset*" that leaves the charset unsaid (read as UTF-8)
    assert (media_type, params) == _media_type_by_email(content_type)
    assert "charset" in params


ACCEPT_PIECES = st.sampled_from(
    ["application/json", "application/graphql-response+json", "*/*", "application/*", "text/html", ",", ";",
     "q=0", "q=0.5", "q=1", "q=x", "charset=utf-8", "charset=latin-1", " ", "APPLICATION/JSON"]
)  # fmt: skip


@settings(max_examples=2000, deadline=None)
@given(st.lists(ACCEPT_PIECES, max_size=8).map("".join))
def test_a_kept_accept_choice_is_the_one_parsing_gives(accept: str) -> None:
    assert response_media_type(accept) == _choice(accept)
    assert response_media_type(accept) == _choice(accept)  # the second answer comes from the kept choices


def test_accept_choices_kept_are_bounded_and_long_values_are_not_kept() -> None:
    _kept_choice.cache_clear()
    for n in range(CHOICES_KEPT * 3):
        assert response_media_type(f"application/json;v={n}") == "application/json"
    assert _kept_choice.cache_info().currsize == CHOICES_KEPT
    long_value = "application/json, " + "x" * CACHED_ACCEPT_CHARS
    _kept_choice.cache_clear()
    assert response_media_type(long_value) == "application/json"
    assert _kept_choice.cache_info().currsize == 0
