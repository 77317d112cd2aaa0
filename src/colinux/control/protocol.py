"""The control socket's wire format: framed messages, as pure functions over bytes.

Every message is a frame: one type byte, a 32-bit big-endian payload length,
and the payload. ``J`` frames carry one JSON object (requests, replies,
events); ``D`` frames carry raw console bytes, in both directions (and an
exec session's stdin and stdout); ``E`` frames an exec session's stderr::

    data = encode_json({"op": "status"})      # client -> daemon
    decoder = FrameDecoder()
    for kind, payload in decoder.feed(received):  # any chunking
        ...

Requests (``op``): ``status``; ``attach`` (the reply, whose ``replay`` says
how many bytes of history follow, is followed by the replayed recent console
output and then live output as ``D`` frames; the
client's ``D`` frames are typed into the console; closing detaches; with
``line`` N, serial line ttySN instead of the console);
``stop`` (``force``: skip the clean shutdown); ``cad`` (Ctrl-Alt-Del);
``exec`` (a command in the guest: ``daemon.exec_sessions`` has its fields; the
reply, then ``D`` and ``E`` frames of its output and last ``{"exited": N}``)
and ``exec-signal`` (``session``, ``signal``: to a running exec's command).
Replies have ``ok`` and, when false, ``error``.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator

JSON = b"J"
DATA = b"D"
ERR = b"E"  # an exec session's stderr, apart from its stdout
KINDS = (JSON, DATA, ERR)
MAX_PAYLOAD = 1 << 20
_HEADER = struct.Struct(">cI")


class ProtocolError(ValueError):
    """The peer sent something that is not a valid frame."""


def encode_frame(kind: bytes, payload: bytes) -> bytes:
    if kind not in KINDS:
        raise ValueError(f"unknown frame kind {kind!r}")
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"frame payload of {len(payload)} bytes is over {MAX_PAYLOAD}")
    return _HEADER.pack(kind, len(payload)) + payload


def encode_json(message: dict[str, object]) -> bytes:
    return encode_frame(JSON, json.dumps(message, separators=(",", ":")).encode())


def encode_data(data: bytes) -> bytes:
    """Console bytes, split into as many frames as needed."""
    return b"".join(
        encode_frame(DATA, data[i : i + MAX_PAYLOAD]) for i in range(0, len(data), MAX_PAYLOAD)
    )


def encode_err(data: bytes) -> bytes:
    """An exec session's stderr bytes, split into as many frames as needed."""
    return b"".join(
        encode_frame(ERR, data[i : i + MAX_PAYLOAD]) for i in range(0, len(data), MAX_PAYLOAD)
    )


def decode_json(payload: bytes) -> dict[str, object]:
    try:
        message = json.loads(payload)
    except (UnicodeDecodeError, ValueError) as e:
        raise ProtocolError(f"bad JSON frame: {e}") from e
    if not isinstance(message, dict):
        raise ProtocolError("JSON frame is not an object")
    return message


class FrameDecoder:
    """Incremental decoder: feed it bytes as they arrive, get whole frames out."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> Iterator[tuple[bytes, bytes]]:
        self._buffer += data
        while len(self._buffer) >= _HEADER.size:
            kind, length = _HEADER.unpack_from(self._buffer)
            if kind not in KINDS:
                raise ProtocolError(f"unknown frame kind {kind!r}")
            if length > MAX_PAYLOAD:
                raise ProtocolError(f"frame of {length} bytes is over {MAX_PAYLOAD}")
            end = _HEADER.size + length
            if len(self._buffer) < end:
                return
            payload = bytes(self._buffer[_HEADER.size : end])
            del self._buffer[:end]
            yield kind, payload

    @property
    def pending(self) -> int:
        return len(self._buffer)
