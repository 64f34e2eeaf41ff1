"""The RFC 6455 codec (graph/ws_frames.py): client frames in, events out; server frames; the handshake."""

from __future__ import annotations

import struct

import pytest
from websockets.frames import Frame, Opcode

from graph.ws_frames import (
    BinaryMessage,
    Close,
    FrameParser,
    HandshakeError,
    Ping,
    Pong,
    ProtocolViolation,
    TextMessage,
    accept_key,
    accept_response,
    binary_frame,
    check_handshake,
    close_frame,
    encode_frame,
    error_response,
    parse_request_head,
    ping_frame,
    pong_frame,
    split_request_head,
    text_frame,
)

MASK = b"\x37\xfa\x21\x3d"


def client_frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    rsv: int = 0,
    masked: bool = True,
    length: int | None = None,
) -> bytes:
    """A frame as a client sends it (masked unless told otherwise); ``length`` overrides the header's."""
    declared = len(payload) if length is None else length
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    mask_bit = 0x80 if masked else 0
    if declared < 126:
        header = bytes((first, mask_bit | declared))
    elif declared < 1 << 16:
        header = struct.pack("!BBH", first, mask_bit | 126, declared)
    else:
        header = struct.pack("!BBQ", first, mask_bit | 127, declared)
    if not masked:
        return header + payload
    masked_payload = bytes(byte ^ MASK[index % 4] for index, byte in enumerate(payload))
    return header + MASK + masked_payload


def feed(data: bytes, max_size: int | None = 1 << 20) -> list[object]:
    return list(FrameParser(max_size).feed(data))


def violation(events: list[object]) -> ProtocolViolation:
    assert events, "expected a protocol violation"
    last = events[-1]
    assert isinstance(last, ProtocolViolation), events
    return last


# --- Data frames -------------------------------------------------------------------------


def test_text_and_binary_messages() -> None:
    data = client_frame(0x1, "héllo".encode()) + client_frame(0x2, b"\x00\xff")
    assert feed(data) == [TextMessage("héllo"), BinaryMessage(b"\x00\xff")]


def test_empty_messages() -> None:
    assert feed(client_frame(0x1) + client_frame(0x2)) == [TextMessage(""), BinaryMessage(b"")]


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 70000])
def test_every_length_encoding(size: int) -> None:
    payload = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    assert feed(client_frame(0x2, payload)) == [BinaryMessage(payload)]


def test_frames_fed_byte_by_byte() -> None:
    data = (
        client_frame(0x1, "partial ✓".encode())
        + client_frame(0x9, b"p")
        + client_frame(0x2, b"x" * 300)
        + client_frame(0x1, b"a", fin=False)
        + client_frame(0x0, b"b")
        + client_frame(0x8, struct.pack("!H", 1000) + b"bye")
    )
    parser = FrameParser(1 << 20)
    events = []
    for index in range(len(data)):
        events.extend(parser.feed(data[index : index + 1]))
    assert events == [TextMessage("partial ✓"), Ping(b"p"), BinaryMessage(b"x" * 300), TextMessage("ab"), Close(1000, "bye")]


def test_frames_split_at_every_point() -> None:
    data = client_frame(0x2, b"y" * 70000) + client_frame(0x1, b"end")
    for split in (1, 2, 5, 9, 13, 14, 1000, 70013, 70014, 70015, len(data) - 1):
        parser = FrameParser(None)
        events = parser.feed(data[:split]) + parser.feed(data[split:])
        assert events == [BinaryMessage(b"y" * 70000), TextMessage("end")], split


def test_no_bytes_kept_between_complete_frames() -> None:
    parser = FrameParser(1 << 20)
    assert not hasattr(parser, "__dict__")
    parser.feed(client_frame(0x1, b"whole"))
    assert parser._leftover is None
    parser.feed(client_frame(0x1, b"half")[:4])
    assert parser._leftover is not None and len(parser._leftover) == 4
    assert parser.feed(client_frame(0x1, b"half")[4:]) == [TextMessage("half")]
    assert parser._leftover is None


# --- Fragmentation -------------------------------------------------------------------------


def test_fragmented_message_with_interleaved_control_frames() -> None:
    data = (
        client_frame(0x1, b"frag", fin=False)
        + client_frame(0x9, b"ping!")
        + client_frame(0x0, b"men", fin=False)
        + client_frame(0xA, b"pong")
        + client_frame(0x0, b"ted")
    )
    assert feed(data) == [Ping(b"ping!"), Pong(b"pong"), TextMessage("fragmented")]


def test_fragmented_binary_message() -> None:
    data = client_frame(0x2, b"\x01", fin=False) + client_frame(0x0, b"", fin=False) + client_frame(0x0, b"\x02")
    assert feed(data) == [BinaryMessage(b"\x01\x02")]


def test_utf8_character_split_across_fragments() -> None:
    encoded = "€".encode()
    data = client_frame(0x1, encoded[:1], fin=False) + client_frame(0x0, encoded[1:])
    assert feed(data) == [TextMessage("€")]


def test_continuation_without_a_message_is_a_protocol_error() -> None:
    assert violation(feed(client_frame(0x0, b"orphan"))).code == 1002


def test_new_data_frame_inside_a_fragmented_message_is_a_protocol_error() -> None:
    data = client_frame(0x1, b"one", fin=False) + client_frame(0x1, b"two")
    assert violation(feed(data)).code == 1002
    data = client_frame(0x2, b"one", fin=False) + client_frame(0x2, b"two", fin=False)
    assert violation(feed(data)).code == 1002


def test_events_before_a_violation_are_kept_and_nothing_after() -> None:
    parser = FrameParser(1 << 20)
    events = parser.feed(client_frame(0x1, b"ok") + client_frame(0x1, b"bad", masked=False) + client_frame(0x1, b"x"))
    assert events[0] == TextMessage("ok")
    assert violation(events).code == 1002
    assert len(events) == 2
    assert parser.feed(client_frame(0x1, b"later")) == []


# --- Header rules -------------------------------------------------------------------------


def test_unmasked_frames_are_a_protocol_error() -> None:
    assert violation(feed(client_frame(0x1, b"hi", masked=False))).code == 1002


@pytest.mark.parametrize("rsv", [1, 2, 4, 7])
def test_reserved_bits_are_a_protocol_error(rsv: int) -> None:
    assert violation(feed(client_frame(0x1, b"hi", rsv=rsv))).code == 1002


@pytest.mark.parametrize("opcode", [3, 4, 5, 6, 7, 11, 12, 13, 14, 15])
def test_unknown_opcodes_are_a_protocol_error(opcode: int) -> None:
    assert violation(feed(client_frame(opcode, b""))).code == 1002


@pytest.mark.parametrize("opcode", [0x8, 0x9, 0xA])
def test_fragmented_control_frames_are_a_protocol_error(opcode: int) -> None:
    assert violation(feed(client_frame(opcode, b"", fin=False))).code == 1002


@pytest.mark.parametrize("opcode", [0x9, 0xA])
def test_control_payloads_over_125_bytes_are_a_protocol_error(opcode: int) -> None:
    assert feed(client_frame(opcode, b"x" * 125))[0].payload == b"x" * 125  # type: ignore[attr-defined]
    assert violation(feed(client_frame(opcode, b"x" * 126))).code == 1002


def test_64_bit_length_with_its_top_bit_set_is_a_protocol_error() -> None:
    header = struct.pack("!BBQ", 0x82, 0x80 | 127, 1 << 63)
    assert violation(feed(header, max_size=None)).code == 1002


# --- Size limit ---------------------------------------------------------------------------


def test_message_at_the_size_limit_passes() -> None:
    assert feed(client_frame(0x2, b"z" * 1000), max_size=1000) == [BinaryMessage(b"z" * 1000)]


def test_oversized_frame_is_refused_from_its_header_alone() -> None:
    header = client_frame(0x2, b"", length=1001)  # no payload sent at all
    assert violation(feed(header, max_size=1000)).code == 1009


def test_oversized_fragmented_message_is_refused() -> None:
    data = client_frame(0x1, b"a" * 600, fin=False) + client_frame(0x0, b"b" * 401)
    assert violation(feed(data, max_size=1000)).code == 1009
    data = client_frame(0x1, b"a" * 600, fin=False) + client_frame(0x0, b"b" * 400)
    assert feed(data, max_size=1000) == [TextMessage("a" * 600 + "b" * 400)]


def test_control_frames_do_not_count_toward_the_size_limit() -> None:
    data = client_frame(0x1, b"a" * 10, fin=False) + client_frame(0x9, b"p" * 100) + client_frame(0x0, b"b" * 10)
    assert feed(data, max_size=20) == [Ping(b"p" * 100), TextMessage("a" * 10 + "b" * 10)]


# --- UTF-8 ---------------------------------------------------------------------------------


@pytest.mark.parametrize("payload", [b"\xff", b"\xc3", b"\xed\xa0\x80", b"ok\xc3\x28"])
def test_invalid_utf8_text_is_1007(payload: bytes) -> None:
    assert violation(feed(client_frame(0x1, payload))).code == 1007


def test_invalid_utf8_in_a_fragmented_text_message_is_1007_at_its_end() -> None:
    parser = FrameParser(1 << 20)
    assert parser.feed(client_frame(0x1, b"\xc3", fin=False)) == []  # not judged before the message ends
    assert violation(parser.feed(client_frame(0x0, b"\x28"))).code == 1007


def test_binary_messages_are_not_decoded() -> None:
    assert feed(client_frame(0x2, b"\xff\xfe")) == [BinaryMessage(b"\xff\xfe")]


# --- Close frames --------------------------------------------------------------------------


def test_empty_close() -> None:
    assert feed(client_frame(0x8)) == [Close(None, "")]


def test_close_with_code_and_reason() -> None:
    assert feed(client_frame(0x8, struct.pack("!H", 4001) + "à bientôt".encode())) == [Close(4001, "à bientôt")]


@pytest.mark.parametrize("code", [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 4999])
def test_valid_close_codes(code: int) -> None:
    assert feed(client_frame(0x8, struct.pack("!H", code))) == [Close(code, "")]


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535])
def test_invalid_close_codes_are_1002(code: int) -> None:
    assert violation(feed(client_frame(0x8, struct.pack("!H", code)))).code == 1002


def test_one_byte_close_payload_is_1002() -> None:
    assert violation(feed(client_frame(0x8, b"\x03"))).code == 1002


def test_close_reason_must_be_utf8() -> None:
    assert violation(feed(client_frame(0x8, struct.pack("!H", 1000) + b"\xff"))).code == 1007


def test_nothing_is_parsed_after_a_close_frame() -> None:
    parser = FrameParser(1 << 20)
    events = parser.feed(client_frame(0x8) + client_frame(0x1, b"after"))
    assert events == [Close(None, "")]
    assert parser.feed(client_frame(0x1, b"later")) == []


# --- Server frames -------------------------------------------------------------------------


def parse_server_frame(data: bytes) -> Frame:
    """Parse with websockets' own reader, as a client would (no mask expected)."""
    reader_input = bytearray(data)

    def read_exact(n: int):  # type: ignore[no-untyped-def]
        chunk = bytes(reader_input[:n])
        del reader_input[:n]
        return chunk
        yield  # makes this a generator, as Frame.parse expects

    generator = Frame.parse(read_exact, mask=False)
    try:
        next(generator)
    except StopIteration as done:
        frame: Frame = done.value
        assert not reader_input, "trailing bytes"
        return frame
    raise AssertionError("frame incomplete")


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536])
def test_server_frames_use_the_shortest_length_encoding(size: int) -> None:
    frame = binary_frame(b"b" * size)
    expected_header = 2 if size < 126 else 4 if size < 65536 else 10
    assert len(frame) == expected_header + size
    assert frame[1] & 0x80 == 0  # never masked
    parsed = parse_server_frame(frame)
    assert parsed.opcode is Opcode.BINARY and parsed.fin and parsed.data == b"b" * size


def test_server_text_ping_pong_frames() -> None:
    assert parse_server_frame(text_frame("héllo")).data == "héllo".encode()
    assert parse_server_frame(text_frame("héllo")).opcode is Opcode.TEXT
    assert parse_server_frame(ping_frame(b"1234")).opcode is Opcode.PING
    assert parse_server_frame(pong_frame(b"1234")).data == b"1234"
    assert encode_frame(0x1, b"hi") == b"\x81\x02hi"
    with pytest.raises(ValueError):
        ping_frame(b"x" * 126)


def test_close_frames() -> None:
    assert close_frame() == b"\x88\x00"
    parsed = parse_server_frame(close_frame(4000, "bye"))
    assert parsed.opcode is Opcode.CLOSE and parsed.data == struct.pack("!H", 4000) + b"bye"
    with pytest.raises(ValueError):
        close_frame(1005)


def test_close_reason_is_truncated_on_a_character_boundary() -> None:
    frame = close_frame(1000, "é" * 100)  # 200 bytes of reason
    payload = parse_server_frame(frame).data
    assert len(payload) <= 125
    reason = payload[2:].decode("utf-8")  # still valid UTF-8
    assert reason == "é" * 61  # 122 bytes: a 62nd "é" would make 124 > 123
    assert parse_server_frame(close_frame(1000, "a" * 200)).data[2:] == b"a" * 123


# --- The handshake -------------------------------------------------------------------------

RFC_KEY = "dGhlIHNhbXBsZSBub25jZQ=="
RFC_ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def upgrade_request(*extra: str, method: str = "GET", drop: tuple[str, ...] = ()) -> bytes:
    headers = {
        "host": "example.com",
        "upgrade": "websocket",
        "connection": "Upgrade",
        "sec-websocket-key": RFC_KEY,
        "sec-websocket-version": "13",
    }
    lines = [f"{method} /chat?room=1 HTTP/1.1"]
    lines += [f"{name}: {value}" for name, value in headers.items() if name not in drop]
    lines += list(extra)
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def handshake_of(request: bytes) -> str:
    split = split_request_head(request)
    assert split is not None
    head, rest = split
    assert rest == b""
    return check_handshake(parse_request_head(head))


def handshake_error(request: bytes) -> HandshakeError:
    with pytest.raises(HandshakeError) as raised:
        handshake_of(request)
    return raised.value


def test_accept_key_from_rfc_6455() -> None:
    assert accept_key(RFC_KEY) == RFC_ACCEPT


def test_valid_handshake() -> None:
    assert handshake_of(upgrade_request()) == RFC_ACCEPT


def test_request_head_parsing() -> None:
    head, rest = split_request_head(upgrade_request("X-Thing:  spaced value ") + b"\x81\x00") or (b"", b"")
    assert rest == b"\x81\x00"
    request = parse_request_head(head)
    assert request.method == "GET"
    assert request.target == b"/chat?room=1"
    assert (b"x-thing", b"spaced value") in request.headers
    assert (b"host", b"example.com") in request.headers


def test_request_head_is_buffered_until_complete() -> None:
    request = upgrade_request()
    assert split_request_head(request[:-1]) is None
    assert split_request_head(request[:10]) is None


def test_request_head_over_64_kib_is_refused() -> None:
    huge = upgrade_request("x-big: " + "a" * 70000)
    with pytest.raises(HandshakeError) as raised:
        split_request_head(huge)
    assert raised.value.status == 400
    with pytest.raises(HandshakeError):
        split_request_head(b"GET / HTTP/1.1\r\nx: " + b"a" * 70000)  # never ends


def test_connection_and_upgrade_are_token_lists_in_any_case() -> None:
    request = upgrade_request("connection: keep-alive, UPGRADE", "upgrade: WebSocket", drop=("connection", "upgrade"))
    assert handshake_of(request) == RFC_ACCEPT


def test_missing_upgrade_is_426() -> None:
    assert handshake_error(upgrade_request(drop=("upgrade",))).status == 426
    assert handshake_error(upgrade_request("upgrade: h2c", drop=("upgrade",))).status == 426


def test_missing_connection_upgrade_is_426() -> None:
    assert handshake_error(upgrade_request("connection: keep-alive", drop=("connection",))).status == 426


@pytest.mark.parametrize("version", ["8", "12", "13, 8"])
def test_unsupported_version_is_426_with_the_supported_one(version: str) -> None:
    error = handshake_error(upgrade_request(f"sec-websocket-version: {version}", drop=("sec-websocket-version",)))
    assert error.status == 426
    assert (b"sec-websocket-version", b"13") in error.headers


def test_missing_version_is_426() -> None:
    assert handshake_error(upgrade_request(drop=("sec-websocket-version",))).status == 426


@pytest.mark.parametrize("key", ["not base64!", "c2hvcnQ=", "dGhlIHNhbXBsZSBub25jZSB0b28gbG9uZw=="])
def test_bad_keys_are_400(key: str) -> None:
    assert handshake_error(upgrade_request(f"sec-websocket-key: {key}", drop=("sec-websocket-key",))).status == 400


def test_missing_or_repeated_key_is_400() -> None:
    assert handshake_error(upgrade_request(drop=("sec-websocket-key",))).status == 400
    assert handshake_error(upgrade_request(f"sec-websocket-key: {RFC_KEY}")).status == 400


def test_other_methods_are_400() -> None:
    assert handshake_error(upgrade_request(method="POST")).status == 400


@pytest.mark.parametrize("head", [b"GET /", b"GET / HTTP/1.0", b"GET / HTTP/1.1\r\nno colon here", b"GET  / HTTP/1.1"])
def test_malformed_heads_are_400(head: bytes) -> None:
    with pytest.raises(HandshakeError) as raised:
        parse_request_head(head)
    assert raised.value.status == 400


def test_accept_response() -> None:
    response = accept_response(RFC_ACCEPT, subprotocol="graphql-transport-ws", headers=[(b"server", b"uvicorn")])
    head, _, body = response.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"HTTP/1.1 101 Switching Protocols"
    assert b"upgrade: websocket" in lines
    assert b"connection: Upgrade" in lines
    assert b"sec-websocket-accept: " + RFC_ACCEPT.encode() in lines
    assert b"sec-websocket-protocol: graphql-transport-ws" in lines
    assert b"server: uvicorn" in lines
    assert body == b""


def test_accept_response_refuses_header_injection() -> None:
    with pytest.raises(ValueError):
        accept_response(RFC_ACCEPT, headers=[(b"x-evil", b"a\r\nset-cookie: b")])


def test_error_response() -> None:
    response = error_response(426, "Upgrade required\n", headers=[(b"sec-websocket-version", b"13")])
    head, _, body = response.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"HTTP/1.1 426 Upgrade Required"
    assert b"content-length: 17" in lines
    assert b"connection: close" in lines
    assert b"content-type: text/plain; charset=utf-8" in lines
    assert b"sec-websocket-version: 13" in lines
    assert body == b"Upgrade required\n"
    assert error_response(403).startswith(b"HTTP/1.1 403 Forbidden\r\n")
    assert error_response(500).endswith(b"content-length: 0\r\nconnection: close\r\n\r\n")
