"""The console hub: one guest console, many readers and writers.

The hub reads the host end of the guest console, keeps the most recent
output (replayed to each client that attaches, as coLinux's console did)
and passes every byte to each attached sink. Input from any client is
queued and written to the console without blocking the daemon::

    hub = ConsoleHub(fd, loop)
    detach = hub.attach(sink, replay=True)   # sink(bytes) -> None
    hub.write(b"ls\\r")
    await hub.closed                          # the guest side went away
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
from collections.abc import Callable

Sink = Callable[[bytes], None]
log = logging.getLogger("colinux.daemon.hub")
HISTORY_BYTES = 64 * 1024


class ConsoleHub:
    def __init__(
        self,
        fd: int,
        loop: asyncio.AbstractEventLoop,
        history: int = HISTORY_BYTES,
        *,
        line: str = "console",  # or ttyS0..ttyS3: how debug events name this hub
    ):
        self.fd = fd
        self.line = line
        self.loop = loop
        self.history_limit = history
        self.history = bytearray()
        self.sinks: list[Sink] = []
        self.closed: asyncio.Future[None] = loop.create_future()
        self._pending = bytearray()
        os.set_blocking(fd, False)
        loop.add_reader(fd, self._on_readable)

    def attach(self, sink: Sink, *, replay: bool = True) -> Callable[[], None]:
        """Start passing output to ``sink``; returns the function that detaches it."""
        if replay and self.history:
            sink(bytes(self.history))
        self.sinks.append(sink)
        fields = {"line": self.line, "clients": len(self.sinks)}
        log.info("client attached", extra={"fields": fields})

        def detach() -> None:
            with contextlib.suppress(ValueError):
                self.sinks.remove(sink)
                fields = {"line": self.line, "clients": len(self.sinks)}
                log.info("client detached", extra={"fields": fields})

        return detach

    def _on_readable(self) -> None:
        self.drain()

    def drain(self) -> None:
        """Read and pass on everything the guest has written so far."""
        while not self.closed.done():
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                return
            except OSError as e:
                if e.errno != errno.EIO:  # EIO: the pty's other end is closed
                    raise
                data = b""
            if not data:
                self._close()
                return
            self.history += data
            if len(self.history) > self.history_limit:
                del self.history[: len(self.history) - self.history_limit]
            for sink in list(self.sinks):
                sink(data)

    def switch(self, fd: int) -> None:
        """Serve a new console (the guest rebooted into a new engine)."""
        self.loop.remove_reader(self.fd)
        self.loop.remove_writer(self.fd)
        with contextlib.suppress(OSError):
            os.close(self.fd)
        self.fd = fd
        self._pending.clear()
        self.closed = self.loop.create_future()
        os.set_blocking(fd, False)
        self.loop.add_reader(fd, self._on_readable)

    def write(self, data: bytes) -> None:
        if self.closed.done() or not data:
            return
        start_writer = not self._pending
        self._pending += data
        if start_writer:
            self._flush()

    def _flush(self) -> None:
        try:
            n = os.write(self.fd, self._pending)
            del self._pending[:n]
        except BlockingIOError:
            pass
        except OSError:
            self._pending.clear()
        if self._pending:
            self.loop.add_writer(self.fd, self._on_writable)
        else:
            self.loop.remove_writer(self.fd)

    def _on_writable(self) -> None:
        self._flush()

    def _close(self) -> None:
        self.loop.remove_reader(self.fd)
        self.loop.remove_writer(self.fd)
        if not self.closed.done():
            self.closed.set_result(None)

    def close(self) -> None:
        self._close()
        with contextlib.suppress(OSError):
            os.close(self.fd)
