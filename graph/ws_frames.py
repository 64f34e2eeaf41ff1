"""RFC 6455 for a server, without I/O: the opening handshake, an incremental frame parser, frame builders.

graph/ws_protocol.py speaks websockets with these. websockets' own sans-io
``ServerProtocol`` keeps a parser generator alive per connection, and with it
the handshake request (~5 KB per idle socket); the parser here keeps a few
slots between feeds and bytes only while a frame is incomplete.

We negotiate no extension, so every RSV bit must be 0.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from collections.abc import Iterable
from http import HTTPStatus
from typing import NamedTuple

try:  # websockets' C implementation, when it was built
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover
    from websockets.utils import apply_mask

OP_CONTINUATION = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA
DATA_OPCODES = frozenset((OP_CONTINUATION, OP_TEXT, OP_BINARY))
CONTROL_OPCODES = frozenset((OP_CLOSE, OP_PING, OP_PONG))

MAX_CONTROL_PAYLOAD = 125
MAX_HANDSHAKE_SIZE = 64 * 1024
WEBSOCKET_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

# Close codes (RFC 6455 section 7.4).
CLOSE_NORMAL = 1000
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_NO_STATUS = 1005
CLOSE_ABNORMAL = 1006
CLOSE_INVALID_DATA = 1007
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL_ERROR = 1011
CLOSE_SERVICE_RESTART = 1012


def is_valid_close_code(code: int) -> bool:
    """Codes an endpoint may put in a close frame (1005, 1006 and 1015 are for reporting only)."""
    return code in (1000, 1001, 1002, 1003) or 1007 <= code <= 1014 or 3000 <= code <= 4999


# --- Events the parser yields -------------------------------------------------------------


class TextMessage(NamedTuple):
    text: str


class BinaryMessage(NamedTuple):
    data: bytes


class Ping(NamedTuple):
    payload: bytes


class Pong(NamedTuple):
    payload: bytes


class Close(NamedTuple):
    """The peer's close frame; ``code`` is None when it carried no payload."""

    code: int | None
    reason: str


class ProtocolViolation(NamedTuple):
    """The peer broke RFC 6455: close with ``code`` (1002, 1007 or 1009). Always the last event."""

    code: int
    reason: str


Event = TextMessage | BinaryMessage | Ping | Pong | Close | ProtocolViolation


class _Violation(Exception):
    """Unwinds the parser to the point where the violation becomes an event."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


# --- Parsing client frames ------------------------------------------------------------------


class FrameParser:
    """Turns the bytes a client sends into messages and control frames.

    ``feed`` returns the events completed by the bytes given. Between feeds
    it keeps only the fragments of an unfinished message and the bytes of an
    incomplete frame; an idle connection's parser is a few empty slots. After
    a close frame or a protocol violation it ignores everything.
    """

    __slots__ = ("max_size", "_leftover", "_message_opcode", "_fragments", "_fragments_size", "_finished")

    def __init__(self, max_size: int | None) -> None:
        self.max_size = max_size
        self._leftover: bytearray | None = None
        self._message_opcode = 0  # OP_TEXT or OP_BINARY while a fragmented message is open
        self._fragments: list[bytes] | None = None
        self._fragments_size = 0
        self._finished = False

    def feed(self, data: bytes) -> list[Event]:
        """The events completed by ``data``, in order; a ProtocolViolation ends them for good."""
        if self._finished:
            return []
        buffer = self._buffer_with(data)
        events: list[Event] = []
        position = 0
        try:
            with memoryview(buffer) as view:
                while not self._finished:
                    frame_end = self._parse_frame(view, position, events)
                    if frame_end is None:
                        break
                    position = frame_end
        except _Violation as violation:
            self._finish()
            events.append(ProtocolViolation(violation.code, violation.reason))
            return events
        self._keep_leftover(buffer, position)
        return events

    def _buffer_with(self, data: bytes) -> bytes | bytearray:
        """``data`` alone (no copy) unless an incomplete frame waits for it."""
        leftover = self._leftover
        if leftover is None:
            return data
        leftover += data
        return leftover

    def _keep_leftover(self, buffer: bytes | bytearray, position: int) -> None:
        if self._finished or position == len(buffer):
            self._leftover = None
        elif position == 0 and isinstance(buffer, bytearray):
            self._leftover = buffer  # still waiting for the same frame: keep growing it in place
        else:
            self._leftover = bytearray(memoryview(buffer)[position:])

    def _finish(self) -> None:
        self._finished = True
        self._leftover = None
        self._fragments = None
        self._message_opcode = 0

    def _parse_frame(self, view: memoryview, start: int, events: list[Event]) -> int | None:
        """Parse the frame at ``start``: append its event (if it completes one), return where it ends.

        None when the frame is not all there yet. Violations are raised as
        soon as the header shows them, before any payload is buffered.
        """
        available = len(view) - start
        if available < 2:
            return None
        first, second = view[start], view[start + 1]
        fin = bool(first & 0x80)
        opcode = first & 0x0F
        if first & 0x70:
            raise _Violation(CLOSE_PROTOCOL_ERROR, "reserved bits must be 0")
        if opcode not in DATA_OPCODES and opcode not in CONTROL_OPCODES:
            raise _Violation(CLOSE_PROTOCOL_ERROR, f"unknown opcode {opcode}")
        if not second & 0x80:
            raise _Violation(CLOSE_PROTOCOL_ERROR, "client frames must be masked")
        length = second & 0x7F
        length_size = 0  # bytes of extended payload length
        if length == 126:
            length_size = 2
            if available < 2 + length_size:
                return None
            (length,) = struct.unpack_from("!H", view, start + 2)
        elif length == 127:
            length_size = 8
            if available < 2 + length_size:
                return None
            (length,) = struct.unpack_from("!Q", view, start + 2)
            if length >> 63:
                raise _Violation(CLOSE_PROTOCOL_ERROR, "payload length has its most significant bit set")
        self._check_frame(opcode, fin, length)
        header_size = 2 + length_size + 4  # the mask ends the header
        if available < header_size + length:
            return None
        mask = bytes(view[start + header_size - 4 : start + header_size])
        payload_start = start + header_size
        payload = apply_mask(view[payload_start : payload_start + length], mask)
        event = self._frame_event(opcode, fin, payload)
        if event is not None:
            events.append(event)
        return payload_start + length

    def _check_frame(self, opcode: int, fin: bool, length: int) -> None:
        if opcode in CONTROL_OPCODES:
            if not fin:
                raise _Violation(CLOSE_PROTOCOL_ERROR, "fragmented control frame")
            if length > MAX_CONTROL_PAYLOAD:
                raise _Violation(CLOSE_PROTOCOL_ERROR, "control frame too long")
            return
        if opcode == OP_CONTINUATION and not self._message_opcode:
            raise _Violation(CLOSE_PROTOCOL_ERROR, "unexpected continuation frame")
        if opcode != OP_CONTINUATION and self._message_opcode:
            raise _Violation(CLOSE_PROTOCOL_ERROR, "expected a continuation frame")
        if self.max_size is not None and self._fragments_size + length > self.max_size:
            raise _Violation(CLOSE_TOO_BIG, "message too big")

    def _frame_event(self, opcode: int, fin: bool, payload: bytes) -> Event | None:
        if opcode == OP_PING:
            return Ping(payload)
        if opcode == OP_PONG:
            return Pong(payload)
        if opcode == OP_CLOSE:
            close = parse_close_payload(payload)
            self._finish()
            return close
        if opcode != OP_CONTINUATION:
            if fin:
                return _message(opcode, payload)
            self._message_opcode = opcode
            self._fragments = [payload]
            self._fragments_size = len(payload)
            return None
        assert self._fragments is not None
        self._fragments.append(payload)
        self._fragments_size += len(payload)
        if not fin:
            return None
        message = _message(self._message_opcode, b"".join(self._fragments))
        self._message_opcode = 0
        self._fragments = None
        self._fragments_size = 0
        return message


def _message(opcode: int, payload: bytes) -> TextMessage | BinaryMessage:
    if opcode == OP_BINARY:
        return BinaryMessage(payload)
    try:
        return TextMessage(payload.decode("utf-8"))
    except UnicodeDecodeError:
        raise _Violation(CLOSE_INVALID_DATA, "invalid UTF-8 in a text message") from None


def parse_close_payload(payload: bytes) -> Close:
    """A close frame's code and reason; raises _Violation (1002, 1007) when they are not valid."""
    if not payload:
        return Close(None, "")
    if len(payload) == 1:
        raise _Violation(CLOSE_PROTOCOL_ERROR, "close payload of 1 byte")
    (code,) = struct.unpack_from("!H", payload)
    if not is_valid_close_code(code):
        raise _Violation(CLOSE_PROTOCOL_ERROR, f"invalid close code {code}")
    try:
        reason = payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        raise _Violation(CLOSE_INVALID_DATA, "invalid UTF-8 in the close reason") from None
    return Close(code, reason)


# --- Building server frames (never masked) --------------------------------------------------


def encode_frame(opcode: int, payload: bytes) -> bytes:
    """One final, unmasked frame, with the shortest length encoding."""
    length = len(payload)
    if length < 126:
        header = bytes((0x80 | opcode, length))
    elif length < 1 << 16:
        header = struct.pack("!BBH", 0x80 | opcode, 126, length)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 127, length)
    return header + payload


def text_frame(text: str) -> bytes:
    return encode_frame(OP_TEXT, text.encode("utf-8"))


def binary_frame(data: bytes) -> bytes:
    return encode_frame(OP_BINARY, bytes(data))


def ping_frame(payload: bytes = b"") -> bytes:
    return _control_frame(OP_PING, payload)


def pong_frame(payload: bytes = b"") -> bytes:
    return _control_frame(OP_PONG, payload)


def close_frame(code: int | None = None, reason: str = "") -> bytes:
    """A close frame; the reason is cut (on a character boundary) to fit the 125-byte limit.

    ``code`` None sends an empty close frame (no code, no reason). Raises
    ValueError for a code that may not go on the wire.
    """
    if code is None:
        return _control_frame(OP_CLOSE, b"")
    if not is_valid_close_code(code):
        raise ValueError(f"invalid close code {code}")
    encoded = reason.encode("utf-8")[: MAX_CONTROL_PAYLOAD - 2]
    encoded = encoded.decode("utf-8", "ignore").encode("utf-8")  # drop a character cut in half
    return _control_frame(OP_CLOSE, struct.pack("!H", code) + encoded)


def _control_frame(opcode: int, payload: bytes) -> bytes:
    if len(payload) > MAX_CONTROL_PAYLOAD:
        raise ValueError("control frame payloads are at most 125 bytes")
    return encode_frame(opcode, payload)


# --- The opening handshake ------------------------------------------------------------------


class HandshakeRequest(NamedTuple):
    method: str
    target: bytes  # path and query string, as sent
    headers: list[tuple[bytes, bytes]]  # names lowercase, values stripped


class HandshakeError(Exception):
    """The upgrade request cannot be accepted: answer ``status`` with ``message`` (and ``headers``)."""

    def __init__(self, status: int, message: str, headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


def split_request_head(buffer: bytes) -> tuple[bytes, bytes] | None:
    """(head, bytes after it) once the head's blank line is in ``buffer``; None while it is not.

    Raises HandshakeError (400) when the head is larger than 64 KiB.
    """
    end = buffer.find(b"\r\n\r\n", 0, MAX_HANDSHAKE_SIZE + 4)
    if end < 0:
        if len(buffer) >= MAX_HANDSHAKE_SIZE + 4:
            raise HandshakeError(400, "Request head too large")
        return None
    return buffer[:end], buffer[end + 4 :]


def parse_request_head(head: bytes) -> HandshakeRequest:
    """The request line and headers (without the final blank line); HandshakeError (400) when malformed."""
    request_line, *header_lines = head.split(b"\r\n")
    parts = request_line.split(b" ")
    if len(parts) != 3 or not parts[0] or not parts[1]:
        raise HandshakeError(400, "Invalid request line")
    method, target, version = parts
    if version != b"HTTP/1.1":
        raise HandshakeError(400, "Unsupported HTTP version")
    headers: list[tuple[bytes, bytes]] = []
    for line in header_lines:
        name, colon, value = line.partition(b":")
        if not colon or not name or name != name.strip():
            raise HandshakeError(400, "Invalid header line")
        headers.append((_shared_header_name(name.lower()), value.strip(b" \t")))
    try:
        return HandshakeRequest(method.decode("ascii"), target, headers)
    except UnicodeDecodeError:
        raise HandshakeError(400, "Invalid request method") from None


# One bytes object per common header name for every connection's scope, instead of a copy each
# (a closed set: an open cache would grow with whatever names clients invent).
_COMMON_HEADER_NAMES = {
    name: name
    for name in (
        b"host",
        b"upgrade",
        b"connection",
        b"origin",
        b"user-agent",
        b"cookie",
        b"authorization",
        b"accept-encoding",
        b"accept-language",
        b"cache-control",
        b"pragma",
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-real-ip",
        b"sec-websocket-key",
        b"sec-websocket-version",
        b"sec-websocket-protocol",
        b"sec-websocket-extensions",
    )
}


def _shared_header_name(name: bytes) -> bytes:
    return _COMMON_HEADER_NAMES.get(name, name)


def header_values(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> list[bytes]:
    """Every value of header ``name`` (lowercase), in order."""
    return [value for header, value in headers if header == name]


def header_tokens(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> list[str]:
    """The comma-separated tokens of every ``name`` header, stripped, empty ones dropped."""
    tokens: list[str] = []
    for value in header_values(headers, name):
        tokens.extend(token for token in (part.strip() for part in value.decode("latin-1").split(",")) if token)
    return tokens


def check_handshake(request: HandshakeRequest) -> str:
    """Validate an upgrade request as websockets does; the Sec-WebSocket-Accept value to answer with.

    Raises HandshakeError: 400 (not GET, bad key), 426 (not a websocket
    upgrade, or a version other than 13, with ``Sec-WebSocket-Version: 13``).
    """
    if request.method != "GET":
        raise HandshakeError(400, "WebSocket handshakes must use GET")
    if not any(token.lower() == "upgrade" for token in header_tokens(request.headers, b"connection")):
        raise HandshakeError(426, "Missing 'Connection: Upgrade'", ((b"upgrade", b"websocket"),))
    if not any(token.lower() == "websocket" for token in header_tokens(request.headers, b"upgrade")):
        raise HandshakeError(426, "Missing 'Upgrade: websocket'", ((b"upgrade", b"websocket"),))
    keys = header_values(request.headers, b"sec-websocket-key")
    if len(keys) != 1:
        raise HandshakeError(400, "Expected exactly one Sec-WebSocket-Key header")
    try:
        raw_key = base64.b64decode(keys[0], validate=True)
    except binascii.Error:
        raw_key = b""
    if len(raw_key) != 16:
        raise HandshakeError(400, "Invalid Sec-WebSocket-Key header")
    if header_values(request.headers, b"sec-websocket-version") != [b"13"]:
        raise HandshakeError(426, "Unsupported Sec-WebSocket-Version", ((b"sec-websocket-version", b"13"),))
    return accept_key(keys[0].decode("ascii"))


def accept_key(key: str) -> str:
    """Sec-WebSocket-Accept for a Sec-WebSocket-Key (RFC 6455 section 4.2.2)."""
    digest = hashlib.sha1((key + WEBSOCKET_GUID).encode("ascii")).digest()
    return base64.b64encode(digest).decode("ascii")


def accept_response(
    accept: str, *, subprotocol: str | None = None, headers: Iterable[tuple[bytes, bytes]] = ()
) -> bytes:
    """The 101 response that opens the websocket."""
    lines = [
        b"HTTP/1.1 101 Switching Protocols",
        b"upgrade: websocket",
        b"connection: Upgrade",
        b"sec-websocket-accept: " + accept.encode("ascii"),
    ]
    if subprotocol:
        lines.append(_header_line(b"sec-websocket-protocol", subprotocol.encode("latin-1")))
    lines.extend(_header_line(name, value) for name, value in headers)
    return b"\r\n".join(lines) + b"\r\n\r\n"


def error_response(status: int, message: str = "", *, headers: Iterable[tuple[bytes, bytes]] = ()) -> bytes:
    """A plain-text HTTP error that ends the connection (the websocket is refused)."""
    body = message.encode("utf-8")
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = ""
    lines = [
        f"HTTP/1.1 {status} {phrase}".encode("latin-1"),
        b"content-type: text/plain; charset=utf-8",
        b"content-length: " + str(len(body)).encode("ascii"),
        b"connection: close",
    ]
    lines.extend(_header_line(name, value) for name, value in headers)
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def _header_line(name: bytes, value: bytes) -> bytes:
    """``name: value``; refuses what would split the response (CR, LF, NUL)."""
    name, value = bytes(name), bytes(value)
    for forbidden in (b"\r", b"\n", b"\0"):
        if forbidden in name or forbidden in value:
            raise ValueError(f"invalid character in header {name!r}")
    if not name or b":" in name or b" " in name:
        raise ValueError(f"invalid header name {name!r}")
    return name + b": " + value
