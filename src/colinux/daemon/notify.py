"""systemd's readiness protocol (sd_notify), without libsystemd.

A service of ``Type=notify`` tells systemd how it is doing by sending short
datagrams (``READY=1``, ``STOPPING=1``, ``STATUS=...``, ``WATCHDOG=1``) to
the socket named in ``$NOTIFY_SOCKET``; a leading ``@`` names an abstract
socket. Outside systemd the variable is unset and every call does nothing::

    notifier = Notifier.from_environment()
    notifier.send(READY=1, STATUS="guest web is running")
    notifier.watchdog_interval()   # seconds between WATCHDOG=1, or None
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Mapping


def encode(fields: Mapping[str, object]) -> bytes:
    """One notification datagram: ``KEY=VALUE`` lines (newlines in values would split them)."""
    lines = []
    for key, value in fields.items():
        text = str(value).replace("\n", " ")
        lines.append(f"{key}={text}")
    return "\n".join(lines).encode()


def socket_address(variable: str) -> str | bytes:
    """``$NOTIFY_SOCKET``'s value as an address for ``socket.connect``."""
    if variable.startswith("@"):
        return b"\0" + variable[1:].encode()
    return variable


class Notifier:
    """Sends notifications to systemd; a no-op when not started by systemd."""

    def __init__(self, address: str | bytes | None, watchdog_usec: int | None = None) -> None:
        self.address = address
        self.watchdog_usec = watchdog_usec

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ) -> Notifier:
        variable = environ.get("NOTIFY_SOCKET")
        address = socket_address(variable) if variable else None
        watchdog = None
        # WATCHDOG_PID names the process the watchdog is for: not us, no watchdog.
        pid = environ.get("WATCHDOG_PID")
        usec = environ.get("WATCHDOG_USEC", "")
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            watchdog = int(usec)
        return cls(address, watchdog)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, **fields: object) -> None:
        if self.address is None:
            return
        # Best effort: a missing systemd must never take the guest down.
        with (
            contextlib.suppress(OSError),
            socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock,
        ):
            sock.sendto(encode(fields), self.address)

    def watchdog_interval(self) -> float | None:
        """How often to send WATCHDOG=1: half the period systemd allows."""
        if self.watchdog_usec is None:
            return None
        return self.watchdog_usec / 2e6
