"""UML's management console ("mconsole"): codec and client.

The kernel listens on a unix datagram socket ``UML_DIR/UMID/mconsole``. A
request is ``magic, version, length`` (native 32-bit words) and up to 512
bytes of command text; each reply is ``err, more, length`` and up to 512
bytes of text, with ``more`` set while further parts follow. The server
answers to the sender's address, so the client binds a socket of its own,
in a directory the sandboxed kernel can see::

    client = MconsoleClient(socket_path, reply_dir)
    text = client.command("version")        # "OK ..." replies join parts
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import tempfile
from dataclasses import dataclass

from colinux.errors import ColinuxError

MAGIC = 0xCAFEBABE
VERSION = 2
MAX_DATA = 512
_REQUEST = struct.Struct("=III")
_REPLY = struct.Struct("=III")


class MconsoleError(ColinuxError):
    """The mconsole socket could not be reached or answered with an error."""


@dataclass(frozen=True)
class Reply:
    err: int
    more: bool
    data: str


def encode_request(command: str) -> bytes:
    data = command.encode()
    if len(data) >= MAX_DATA:
        raise ValueError(f"mconsole command too long ({len(data)} bytes)")
    return _REQUEST.pack(MAGIC, VERSION, len(data)) + data.ljust(MAX_DATA, b"\0")


def decode_reply(packet: bytes) -> Reply:
    if len(packet) < _REPLY.size:
        raise ValueError(f"short mconsole reply ({len(packet)} bytes)")
    err, more, length = _REPLY.unpack_from(packet)
    if length > MAX_DATA or _REPLY.size + length > len(packet):
        raise ValueError(f"mconsole reply length {length} out of range")
    data = packet[_REPLY.size : _REPLY.size + length].split(b"\0", 1)[0]
    return Reply(err, bool(more), data.decode(errors="replace"))


class MconsoleClient:
    """Blocking client; each command takes well under a millisecond when the guest runs."""

    def __init__(self, socket_path: str, reply_dir: str, timeout: float = 5.0) -> None:
        self.socket_path = socket_path
        self.reply_dir = reply_dir
        self.timeout = timeout

    def command(self, command: str) -> str:
        fd, reply_path = tempfile.mkstemp(dir=self.reply_dir, prefix="mc-")
        os.close(fd)
        os.unlink(reply_path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.bind(reply_path)
            sock.settimeout(self.timeout)
            sock.sendto(encode_request(command), self.socket_path)
            parts = []
            while True:
                reply = decode_reply(sock.recv(_REPLY.size + MAX_DATA))
                parts.append(reply.data)
                if not reply.more:
                    break
            if reply.err:
                raise MconsoleError(f"mconsole {command!r}: {''.join(parts)}")
            return "".join(parts)
        except (OSError, ValueError) as e:
            raise MconsoleError(f"mconsole {command!r} at {self.socket_path}: {e}") from e
        finally:
            sock.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(reply_path)
