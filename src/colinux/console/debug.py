"""``colinux debug`` and ``colinux-debug-daemon``: follow a guest's debug records.

    follow_debug("web", Filter(components=frozenset({"cofs"})), out=sys.stdout)

The daemon switches its collector on while anyone follows (or for good with
``colinux debug NAME --on``), replays what it collected, then streams new
records; filtering by component, facility and level happens here. Records are
one text line each, or with ``xml`` the original's ``-p`` XML records.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
from collections.abc import Iterator
from typing import TextIO

from colinux.console.client import _connect, request
from colinux.control import protocol
from colinux.control.debug import Filter, Record
from colinux.control.rundir import guest_dir
from colinux.errors import ColinuxError, UserError

DEFAULT_UDP_PORT = 63000

XML_HEADER = '<?xml version="1.0" encoding="UTF-8"?>\n<colinux-debug>\n'
XML_FOOTER = "</colinux-debug>\n"


class UdpSender:
    """A text sink that sends each write as one UDP datagram (colinux-debug-daemon -n)."""

    def __init__(self, address: tuple[str, int]) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

    @classmethod
    def to(cls, target: str) -> UdpSender:
        host, _, port = target.rpartition(":") if ":" in target else (target, "", "")
        if not port:
            port = str(DEFAULT_UDP_PORT)
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise UserError(f"-n {target}: expected HOST or HOST:PORT")
        try:
            address = socket.getaddrinfo(host, int(port), socket.AF_INET, socket.SOCK_DGRAM)
        except socket.gaierror as e:
            raise UserError(f"-n {target}: {e.strerror}") from None
        sockaddr = address[0][4]
        return cls((str(sockaddr[0]), int(sockaddr[1])))

    def write(self, text: str) -> int:
        with contextlib.suppress(OSError):  # nobody listening is not our failure
            self.sock.sendto(text.encode(), self.address)
        return len(text)

    def flush(self) -> None:
        pass

    def __enter__(self) -> UdpSender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM (kill, a service manager) ends a follower as Ctrl-C does: the XML
    dump gets its closing tag, the file its last records."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def set_collector(name: str, on: bool) -> bool:
    """Switch guest ``name``'s collector on or off for good; the new state."""
    return bool(request(name, {"op": "debug", "enable": on}).get("enabled"))


def follow_debug(
    name: str,
    wanted: Filter,
    *,
    out: TextIO | UdpSender,
    xml: bool = False,
    live: bool = True,
    replay: bool = True,
) -> int:
    """Write guest ``name``'s debug records to ``out`` until the guest stops (or, with
    ``live`` False, what was collected so far); Ctrl-C ends it cleanly."""
    sock = _connect(guest_dir(name))
    sock.settimeout(None)
    if xml:
        out.write(XML_HEADER)
    try:
        with sock, contextlib.suppress(KeyboardInterrupt), _terminate_as_interrupt():
            sock.sendall(protocol.encode_json({"op": "follow", "live": live, "replay": replay}))
            decoder = protocol.FrameDecoder()
            while data := sock.recv(65536):
                for kind, payload in decoder.feed(data):
                    if kind != protocol.JSON:
                        continue
                    message = protocol.decode_json(payload)
                    if message.get("ok") is False:
                        raise ColinuxError(f"guest {name}: {message.get('error')}")
                    if message.get("done"):
                        return 0
                    if "time" not in message:  # the reply to the request
                        continue
                    record = Record.from_json(message)
                    if wanted(record):
                        out.write((record.to_xml() if xml else record.to_text()) + "\n")
                        out.flush()
    finally:
        if xml:
            out.write(XML_FOOTER)
            out.flush()
    return 0
