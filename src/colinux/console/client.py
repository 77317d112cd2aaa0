"""Clients of a guest daemon's control socket: requests and the terminal console.

    request("web", {"op": "status"})     # one request, one reply
    attach_console("web")                 # this terminal becomes web's console
    attach_console("web", line=0)         # ... or its serial line ttyS0
    attach_console("web", line=0, pty=True)  # a host pty for screen/minicom instead

While attached, the terminal is raw: every key goes to the guest except the
detach key (Ctrl-]), which leaves the guest running. Several consoles may be
attached to one guest at once; each sees the recent output replayed first.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time

from colinux.console.terminal import (
    DETACH_KEY,
    DETACH_KEY_NAME,
    raw_terminal,
    read_typed,
    window_size,
)
from colinux.control import protocol
from colinux.control.rundir import GuestDir, guest_dir, list_guests
from colinux.errors import ColinuxError, UserError


def _connect(gdir: GuestDir, timeout: float = 5.0) -> socket.socket:
    if not gdir.is_live():
        raise UserError(f"no running guest named {gdir.name!r} (see colinux list)")
    deadline = time.monotonic() + timeout
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(str(gdir.control_socket))
            return sock
        except OSError as e:
            sock.close()
            # A daemon that is still starting has its lock but not yet its socket.
            starting = isinstance(e, FileNotFoundError | ConnectionRefusedError)
            if not starting or time.monotonic() > deadline or not gdir.is_live():
                raise ColinuxError(f"guest {gdir.name}: cannot reach its daemon: {e}") from e
            time.sleep(0.05)


def _read_reply(sock: socket.socket, decoder: protocol.FrameDecoder) -> dict[str, object]:
    while True:
        data = sock.recv(65536)
        if not data:
            raise ColinuxError("the daemon closed the connection")
        for kind, payload in decoder.feed(data):
            if kind == protocol.JSON:
                return protocol.decode_json(payload)


def request(name: str, message: dict[str, object]) -> dict[str, object]:
    gdir = guest_dir(name)
    with _connect(gdir) as sock:
        sock.sendall(protocol.encode_json(message))
        try:
            reply = _read_reply(sock, protocol.FrameDecoder())
        except (OSError, protocol.ProtocolError) as e:
            raise ColinuxError(f"guest {name}: {e}") from e
    if not reply.get("ok"):
        raise ColinuxError(f"guest {name}: {reply.get('error', 'request failed')}")
    return reply


def request_all(message: dict[str, object]) -> list[dict[str, object]]:
    """The replies of every live guest; run directories of dead daemons are removed."""
    replies = []
    for gdir in list_guests():
        if not gdir.is_live():
            gdir.remove_if_stale()
            continue
        with contextlib.suppress(ColinuxError):
            replies.append(request(gdir.name, message))
    return replies


def attach_console(
    name: str, *, replay: bool = True, line: int | None = None, pty: bool = False
) -> int:
    """Attach this terminal to guest ``name`` until detached or the guest stops.

    ``line`` N attaches to serial line ttySN instead of the console. ``pty``
    makes a host pseudo-terminal the end instead, and prints its path, for
    ``screen`` or ``minicom``; it lasts until interrupted or the guest stops.
    """
    gdir = guest_dir(name)
    if line is not None:
        check_served_line(name, line)
    sock = _connect(gdir)
    sock.settimeout(None)
    if not pty:
        return asyncio.run(_attach(sock, name, replay, line))
    import pty as ptys
    import tty

    master, slave = ptys.openpty()
    tty.setraw(slave)  # the program that opens it chooses its own mode
    try:
        path = os.ttyname(slave)
        what = f"ttyS{line}" if line is not None else "console"
        print(f"{name} {what} is on {path} (e.g. screen {path}); Ctrl-C ends it", flush=True)
        # We keep the slave open too, so the line survives the program closing it.
        return asyncio.run(_attach(sock, name, replay, line, fds=(master, master)))
    except KeyboardInterrupt:
        return 0
    finally:
        os.close(master)
        os.close(slave)


def check_served_line(name: str, line: int) -> None:
    """Guest ``name``'s daemon serves ttyS``line`` (ttysN=daemon), or a UserError."""
    reply = request(name, {"op": "status"}).get("serials")
    served = list(reply) if isinstance(reply, list) else []
    if line not in served:
        lines = ", ".join(f"ttyS{i}" for i in served) or "none"
        raise UserError(
            f"guest {name} has no serial line ttyS{line} served by its daemon "
            f"(served: {lines}; start it with ttys{line}=daemon)"
        )


async def _attach(
    sock: socket.socket,
    name: str,
    replay: bool,
    line: int | None = None,
    fds: tuple[int, int] | None = None,
) -> int:
    loop = asyncio.get_running_loop()
    reader, writer = await asyncio.open_connection(sock=sock)
    message: dict[str, object] = {"op": "attach", "replay": replay}
    if line is not None:
        message["line"] = line
    writer.write(protocol.encode_json(message))
    in_fd, out_fd = fds or (sys.stdin.fileno(), sys.stdout.fileno())
    interactive = fds is None and os.isatty(in_fd)
    what = f"{name} ttyS{line}" if line is not None else name
    detached = asyncio.Event()

    def send_size() -> None:
        size = window_size(in_fd)
        if size:
            writer.write(protocol.encode_json({"op": "resize", "rows": size[0], "cols": size[1]}))

    def typed() -> None:
        data = read_typed(in_fd)
        if not data:
            loop.remove_reader(in_fd)
            if interactive:
                detached.set()
            return
        if interactive and DETACH_KEY in data:
            data = data[: data.index(DETACH_KEY)]
            detached.set()
        if data:
            writer.write(protocol.encode_data(data))

    async def show() -> None:
        decoder = protocol.FrameDecoder()
        while data := await reader.read(65536):
            for kind, payload in decoder.feed(data):
                if kind == protocol.DATA:
                    os.write(out_fd, payload)
                elif kind == protocol.JSON:
                    reply = protocol.decode_json(payload)
                    if not reply.get("ok"):
                        raise ColinuxError(f"guest {name}: {reply.get('error')}")

    with raw_terminal(in_fd):
        if interactive:
            print(f"[attached to {what}; {DETACH_KEY_NAME} detaches]\r", file=sys.stderr)
            send_size()
        try:
            loop.add_reader(in_fd, typed)
        except PermissionError:  # a file or /dev/null: it never blocks, so send it now
            while data := read_typed(in_fd):
                writer.write(protocol.encode_data(data))
        if interactive:
            loop.add_signal_handler(signal.SIGWINCH, send_size)
        output = asyncio.create_task(show())
        wait_detach = asyncio.create_task(detached.wait())
        try:
            done, _ = await asyncio.wait({output, wait_detach}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            loop.remove_reader(in_fd)
            if interactive:
                loop.remove_signal_handler(signal.SIGWINCH)
            output.cancel()
            wait_detach.cancel()
            writer.close()
    if output in done:
        with contextlib.suppress(asyncio.CancelledError):
            output.result()  # a protocol error surfaces here
        print(f"\r\n[guest {name} has stopped]", file=sys.stderr)
    else:
        print(f"\r\n[detached from {name}; it keeps running]", file=sys.stderr)
    return 0
