"""``colinux exec`` and ``colinux shell``: a command in a running guest, from the host.

    colinux exec [-t] [-w DIR] [-e KEY=VALUE]... [--wait S] NAME -- CMD [ARGS...]
    colinux shell NAME               # root's login shell; a terminal when this is one

The command's stdout and stderr arrive here apart and byte for byte, and
colinux exits with its status (128+N when a signal N ended it). Standard
input is forwarded, with its end, when it is not a terminal; a terminal (and
/dev/null) gives the command an empty stdin. With ``-t`` the command runs on
a terminal of its own in the guest: this terminal goes raw, every key (Ctrl-C
too) goes to the guest, and its size follows this one. Without ``-t``, Ctrl-C,
SIGTERM and SIGHUP here are sent on to the command. If the guest goes away
first: one line, exit status 255 (as ssh). The daemon's side is
``daemon.exec_sessions``.

This module is what every ``colinux exec`` pays for at start (bench/exec.py
measures it; the whole command has 100 ms), so it imports neither asyncio nor
the rest of colinux: plain sockets and one ``selectors`` loop. For the same
reason a well-formed command line is read by ``_parse_quickly`` and argparse
(``build_parser``, the grammar of record) is imported only for the help and
for mistakes, and the run directory is found by ``_guest_paths`` rather than
``control.rundir`` (a test holds the two to the same answer).
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import socket
import stat
import struct
import sys
import time

from colinux.console.terminal import raw_terminal, window_size
from colinux.errors import ColinuxError, UserError

TYPE_CHECKING = False  # typing itself costs 3 ms to import; mypy reads this as True
if TYPE_CHECKING:
    import argparse
    from collections.abc import Sequence
    from typing import NoReturn

# The control socket's framing (control.protocol), kept here so that this
# module need not import the daemon's modules.
_HEADER = struct.Struct(">cI")
_JSON, _DATA, _ERR = b"J", b"D", b"E"
_CHUNK = 1 << 16
_STDIN_HIGH = 1 << 20  # frames waiting for the daemon: stop reading stdin above this
_FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
_NAMES: dict[int, str] = {
    signal.SIGINT: "INT", signal.SIGTERM: "TERM", signal.SIGHUP: "HUP",
    signal.SIGQUIT: "QUIT", signal.SIGPIPE: "PIPE",
}  # fmt: skip
LOST_STATUS = 255  # the guest went away before the command ended (ssh's 255)


class ExecLost(ColinuxError):
    exit_status = LOST_STATUS


def _frame(kind: bytes, payload: bytes) -> bytes:
    return _HEADER.pack(kind, len(payload)) + payload


def _json(message: dict[str, object]) -> bytes:
    return _frame(_JSON, json.dumps(message, separators=(",", ":")).encode())


class _Frames:
    """Whole frames out of a byte stream (``control.protocol.FrameDecoder``'s format)."""

    def __init__(self) -> None:
        self.buffer = bytearray()

    def feed(self, data: bytes) -> list[tuple[bytes, bytes]]:
        self.buffer += data
        frames = []
        while len(self.buffer) >= _HEADER.size:
            kind, length = _HEADER.unpack_from(self.buffer)
            end = _HEADER.size + length
            if len(self.buffer) < end:
                break
            frames.append((kind, bytes(self.buffer[_HEADER.size : end])))
            del self.buffer[:end]
        return frames


# -- the command line -------------------------------------------------------------------


DESCRIPTIONS = {
    "exec": "Run CMD in the running guest NAME: its output arrives here, stdout and stderr "
    "apart, standard input is forwarded unless it is a terminal, and colinux exits with "
    "CMD's status.",
    "shell": "Root's login shell in a running guest: on a terminal of its own when this is "
    "a terminal, else reading its commands from standard input.",
}
USAGE = "colinux exec [-t] [-w DIR] [-e KEY=VALUE]... NAME -- CMD [ARGS...]"


def add_exec_arguments(parser: argparse.ArgumentParser, verb: str) -> None:
    """``colinux exec``'s or ``colinux shell``'s arguments (here, and in colinux's parser)."""
    import argparse

    parser.description = DESCRIPTIONS[verb]
    if verb == "exec":
        parser.usage = USAGE
        parser.add_argument("-t", "--tty", action="store_true", help="a terminal for CMD")
        parser.add_argument("-w", "--workdir", metavar="DIR", help="CMD's working directory")
        parser.add_argument(
            "-e", "--env", action="append", default=[], metavar="KEY=VALUE",
            help="a variable of CMD's environment (KEY alone: this one's value); repeatable",
        )  # fmt: skip
    parser.add_argument("name", help="the guest (see colinux list)")
    if verb == "exec":
        parser.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD [ARGS...]")
    parser.add_argument(
        "--wait", type=float, default=60.0, metavar="S",
        help="how long a guest that is still booting may take to be ready (default 60 s)",
    )  # fmt: skip
    parser.add_argument("--debug", action="store_true", help="a traceback for an error")


def build_parser(verb: str) -> argparse.ArgumentParser:
    import argparse

    class Parser(argparse.ArgumentParser):
        def error(self, message: str) -> NoReturn:
            raise UserError(f"{self.prog}: {message} (see {self.prog} --help)")

    parser = Parser(prog=f"colinux {verb}")
    add_exec_arguments(parser, verb)
    return parser


class _Options:
    """What ``build_parser`` gives, for ``_parse_quickly`` to give the same."""

    def __init__(self) -> None:
        self.tty = False
        self.workdir: str | None = None
        self.env: list[str] = []
        self.name = ""
        self.command: list[str] = []
        self.wait = 60.0
        self.debug = False


def _parse_quickly(verb: str, words: Sequence[str]) -> _Options | None:
    """The common forms of the command line, without argparse; None for anything else."""
    ns = _Options()
    i = 0
    while i < len(words):
        word = words[i]
        value = words[i + 1] if i + 1 < len(words) else None
        if ns.name:
            if verb == "shell":
                return None
            ns.command = list(words[i:])
            break
        if word in ("-t", "--tty") and verb == "exec":
            ns.tty = True
        elif word == "--debug":
            ns.debug = True
        elif word in ("-w", "--workdir", "-e", "--env", "--wait") and value is not None:
            if word == "--wait":
                try:
                    ns.wait = float(value)
                except ValueError:
                    return None
            elif verb != "exec" or value.startswith("-"):
                return None
            elif word in ("-w", "--workdir"):
                ns.workdir = value
            else:
                ns.env.append(value)
            i += 1
        elif word.startswith("-"):
            return None  # the help, a joined or unknown option: argparse's to read
        else:
            ns.name = word
        i += 1
    return ns if ns.name else None


def parse_request(argv: Sequence[str]) -> tuple[str, dict[str, object]]:
    """The guest's name and the daemon's ``exec`` request, from ``colinux exec|shell ...``."""
    verb = argv[0]
    ns = _parse_quickly(verb, argv[1:]) or build_parser(verb).parse_args(list(argv[1:]))
    name = ns.name
    if ns.wait < 0:
        raise UserError(f"colinux {verb}: --wait {ns.wait:g}: expected seconds, 0 or more")
    request: dict[str, object] = {"op": "exec", "wait": ns.wait}
    if verb == "shell":
        request["login"] = True
        tty = sys.stdin.isatty()
    else:
        command = list(ns.command)
        if command[:1] == ["--"]:
            command = command[1:]
        if not command:
            raise UserError(f"colinux exec: no command: expected 'colinux exec {name} -- CMD'")
        request["argv"] = command
        tty = ns.tty
        if ns.workdir is not None:
            if not ns.workdir or "\0" in ns.workdir:
                raise UserError(f"colinux exec: -w {ns.workdir!r}: expected a directory")
            request["cwd"] = ns.workdir
        request["env"] = _environment(ns.env)
    if tty:
        request["mode"] = "tty"
        request["term"] = os.environ.get("TERM") or "xterm"
        size = window_size(0) or window_size(1)
        if size:
            request["rows"], request["cols"] = size
    else:
        request["mode"] = "pipe" if _forwarded(0) else "null"
    return name, request


def _variable_name(key: str) -> bool:
    return (
        key != ""
        and key.isascii()
        and not key[0].isdigit()
        and all(c.isalnum() or c == "_" for c in key)
    )


def _environment(words: Sequence[str]) -> dict[str, str]:
    env = {}
    for word in words:
        key, has_value, value = word.partition("=")
        if not _variable_name(key):
            raise UserError(f"colinux exec: -e {word}: expected KEY=VALUE, KEY a variable name")
        if not has_value:
            if key not in os.environ:
                raise UserError(f"colinux exec: -e {key}: not set here (give KEY=VALUE)")
            value = os.environ[key]
        if "\0" in value:
            raise UserError(f"colinux exec: -e {key}: the value holds a NUL byte")
        env[key] = value
    return env


def _forwarded(fd: int) -> bool:
    """Whether standard input goes to the command: not a terminal, not /dev/null."""
    try:
        st = os.fstat(fd)
    except OSError:
        return False  # closed
    if os.isatty(fd):
        return False
    if stat.S_ISCHR(st.st_mode):
        try:
            return st.st_rdev != os.stat(os.devnull).st_rdev
        except OSError:
            return True
    return True


# -- talking to the daemon ------------------------------------------------------------


def _guest_paths(name: str) -> tuple[str, str]:
    """Guest ``name``'s control socket and lock file, as ``control.rundir`` places them."""
    override = os.environ.get("COLINUX_RUN_DIR")
    uid = os.getuid()
    if override:
        base = override
    elif uid == 0:
        base = "/run/colinux"
    else:
        runtime = os.environ.get("XDG_RUNTIME_DIR")
        owned = False
        if runtime:
            try:
                owned = os.path.isdir(runtime) and os.stat(runtime).st_uid == uid
            except OSError:
                owned = False
        base = os.path.join(runtime, "colinux") if runtime and owned else f"/tmp/colinux-{uid}"
    directory = os.path.join(base, name)
    return os.path.join(directory, "control.sock"), os.path.join(directory, "lock")


def _connect(name: str) -> socket.socket:
    path, lock = _guest_paths(name) if "/" not in name else ("", "")
    from colinux.control.lock import held

    if not held(lock):
        from colinux.control.rundir import check_name

        check_name(name)  # a name that cannot be a guest's: say why
        raise UserError(f"no running guest named {name!r} (see colinux list)")
    deadline = time.monotonic() + 5.0
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(path)
            return sock
        except OSError as e:
            sock.close()
            starting = isinstance(e, FileNotFoundError | ConnectionRefusedError)
            if not starting or time.monotonic() > deadline or not held(lock):
                raise ColinuxError(f"guest {name}: cannot reach its daemon: {e}") from e
            time.sleep(0.02)


def _signal_session(name: str, session: object, signum: int) -> None:
    """Out of band, so that it never waits behind stdin the command does not read."""
    try:
        with _connect(name) as sock:
            sock.settimeout(5.0)
            sock.sendall(_json({"op": "exec-signal", "session": session, "signal": _NAMES[signum]}))
            sock.recv(4096)
    except (OSError, ColinuxError):
        pass


def _write_all(fd: int, data: bytes) -> None:
    import select

    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except BlockingIOError:
            select.select([], [fd], [])
            continue
        view = view[n:]


class _Session:
    """One exec session on its connection: the loop that moves the bytes."""

    def __init__(self, name: str, request: dict[str, object], sock: socket.socket) -> None:
        self.name = name
        self.request = request
        self.sock = sock
        self.tty = request["mode"] == "tty"
        self.forward_stdin = request["mode"] != "null"
        self.frames = _Frames()
        self.outgoing = bytearray()
        self.stdout_gone = False
        self.session: object = None
        self.early: list[tuple[bytes, bytes]] = []
        self.interrupts = 0

    def start(self) -> None:
        """Send the request and wait for the daemon's answer (the guest may be booting)."""
        self.sock.sendall(_json(self.request))
        while True:
            data = self.sock.recv(_CHUNK)
            if not data:
                raise ColinuxError(f"guest {self.name}: the daemon closed the connection")
            frames = self.frames.feed(data)
            for i, (kind, payload) in enumerate(frames):
                if kind != _JSON:
                    continue
                reply = json.loads(payload)
                if not reply.get("ok"):
                    message = f"colinux {self._verb()}: {reply.get('error', 'refused')}"
                    raise (UserError if reply.get("user") else ColinuxError)(message)
                self.session = reply.get("session")
                self.early = frames[i + 1 :]  # output, even the end, may have come with it
                return

    def _verb(self) -> str:
        return "shell" if self.request.get("login") else "exec"

    def run(self) -> int:
        stdin = 0
        with raw_terminal(stdin) if self.tty and os.isatty(stdin) else _nothing():
            return self._loop(stdin)

    def _loop(self, stdin: int) -> int:
        sel = selectors.DefaultSelector()
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        watched = _FORWARDED if not self.tty else (signal.SIGTERM, signal.SIGHUP)
        if self.tty:
            watched = (*watched, signal.SIGWINCH)
        old_handlers = {s: signal.signal(s, _no_op) for s in watched}
        old_wakeup = signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        self.sock.setblocking(False)
        stdin_file = False  # a regular file: never ready for select, always readable
        try:
            sel.register(self.sock, selectors.EVENT_READ)
            sel.register(wake_r, selectors.EVENT_READ)
            reading_stdin = self.forward_stdin
            if reading_stdin:
                try:
                    sel.register(stdin, selectors.EVENT_READ)
                except PermissionError:  # epoll refuses regular files
                    stdin_file = True
            if self.tty and os.isatty(stdin):
                self._resize(stdin)
            status = self._handle(self.early)
            while status is None:
                if stdin_file and reading_stdin and len(self.outgoing) < _STDIN_HIGH:
                    reading_stdin = self._read_stdin(stdin)
                want = selectors.EVENT_READ | (selectors.EVENT_WRITE if self.outgoing else 0)
                sel.modify(self.sock, want)
                timeout = 0 if stdin_file and reading_stdin else None
                for key, events in sel.select(timeout):
                    if key.fileobj is self.sock:
                        if events & selectors.EVENT_WRITE:
                            self._send()
                        if events & selectors.EVENT_READ and status is None:
                            status = self._receive()
                    elif key.fd == wake_r:
                        self._signals(os.read(wake_r, 256), stdin)
                    elif key.fd == stdin and not self._read_stdin(stdin):
                        sel.unregister(stdin)
                        reading_stdin = False
                if not stdin_file and reading_stdin:
                    # Stop reading stdin while the daemon has not taken what we have.
                    full = len(self.outgoing) >= _STDIN_HIGH
                    registered = stdin in sel.get_map()
                    if full and registered:
                        sel.unregister(stdin)
                    elif not full and not registered:
                        sel.register(stdin, selectors.EVENT_READ)
            return status
        finally:
            signal.set_wakeup_fd(old_wakeup)
            for signum, handler in old_handlers.items():
                signal.signal(signum, handler)
            sel.close()
            os.close(wake_r)
            os.close(wake_w)

    def _read_stdin(self, fd: int) -> bool:
        """Forward what stdin has; False at its end."""
        try:
            data = os.read(fd, _CHUNK)
        except BlockingIOError:
            return True
        except OSError:
            data = b""
        if data:
            self.outgoing += _frame(_DATA, data)
        else:
            self.outgoing += _json({"op": "eof"})
        return bool(data)

    def _send(self) -> None:
        try:
            n = self.sock.send(self.outgoing)
        except BlockingIOError:
            return
        except OSError:  # the daemon is gone: its end is read next
            self.outgoing.clear()
            return
        del self.outgoing[:n]

    def _receive(self) -> int | None:
        try:
            data = self.sock.recv(_CHUNK * 4)
        except BlockingIOError:
            return None
        except OSError:
            data = b""
        if not data:
            raise ExecLost(
                f"colinux {self._verb()}: guest {self.name}'s daemon went away "
                "before the command ended"
            )
        return self._handle(self.frames.feed(data))

    def _handle(self, frames: list[tuple[bytes, bytes]]) -> int | None:
        for kind, payload in frames:
            if kind == _DATA:
                self._output(1, payload)
            elif kind == _ERR:
                self._output(2, payload)
            elif kind == _JSON:
                message = json.loads(payload)
                if "exited" in message:
                    return int(message["exited"])
                if message.get("ok") is False:
                    error = f"colinux {self._verb()}: {message.get('error')}"
                    raise (ExecLost if message.get("lost") else ColinuxError)(error)
        return None

    def _output(self, fd: int, data: bytes) -> None:
        if fd == 1 and self.stdout_gone:
            return
        try:
            _write_all(fd, data)
        except BrokenPipeError:
            if fd == 1:
                # As in a host pipeline (| head): the command's reader is gone.
                self.stdout_gone = True
                _signal_session(self.name, self.session, signal.SIGPIPE)
        except OSError:
            pass

    def _signals(self, received: bytes, stdin: int) -> None:
        for signum in received:
            if signum == signal.SIGWINCH:
                self._resize(stdin)
                continue
            if signum == signal.SIGINT:
                self.interrupts += 1
                if self.interrupts >= 3:
                    raise ColinuxError(
                        f"colinux exec: interrupted; the command may still run in guest {self.name}"
                    )
            _signal_session(self.name, self.session, signum)

    def _resize(self, fd: int) -> None:
        size = window_size(fd)
        if size:
            self.outgoing += _json({"op": "resize", "rows": size[0], "cols": size[1]})


def _no_op(signum: int, frame: object) -> None:
    """A handler, so that the signal wakes the loop (set_wakeup_fd) instead of killing us."""


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def exec_command(argv: Sequence[str]) -> int:
    """``colinux exec ...`` or ``colinux shell ...`` (``argv[0]`` is the verb): its status."""
    name, request = parse_request(argv)
    with _connect(name) as sock:
        session = _Session(name, request, sock)
        session.start()
        return session.run()


def exec_main(argv: Sequence[str]) -> NoReturn:
    """The entry point's fast path: one line for a mistake, as colinux's handler does."""
    command = list(argv)
    end = command.index("--") if "--" in command else len(command)
    debug = "--debug" in command[:end]
    try:
        status = exec_command(command)
    except ColinuxError as e:
        if debug:
            raise
        message = str(e)
        print(message if message.startswith("colinux") else f"colinux: {message}", file=sys.stderr)
        status = e.exit_status
    except KeyboardInterrupt:
        status = 130
    # Nothing is left to clean up: skip the interpreter's teardown (tens of ms), as
    # colinux's own handler does, once what is buffered is written.
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(status)
