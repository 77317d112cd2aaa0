"""What travels on an exec slot's lines for ``colinux exec``: a session, and its stdin.

An exec slot is two of the guest's serial lines, wired to the daemon at boot
(``engine.base.ExecLines``): IO carries the command's stdin and stdout (the
whole terminal with ``-t``) and ERR its stderr. Outside terminal sessions
IO's input side is in canonical mode with every special character off but
two (``SLOT_STTY``): ``^D`` hands what was typed so far to ``read()`` without
a newline, and a ``^D`` on its own makes ``read()`` return 0, the end of
input; ``^V`` takes the next byte literally. So ``encode_input`` sends bytes
in chunks short enough for the line discipline (``INPUT_CHUNK``), quotes the
two special bytes, ends each chunk that lacks a newline with ``^D``, and
``INPUT_EOF`` is the end.

A session starts with its payload on IO: a few lines of shell that the slot's
worker in the guest reads with ``.`` (one read per chunk, where the shell's
``read`` takes one system call per byte) and then runs, its end, then the
command's stdin::

    sock.sendall(encode_input(session_payload(["tar", "x"], mode="pipe", nonce=n)))
    sock.sendall(INPUT_EOF)
    sock.sendall(encode_input(data)); sock.sendall(INPUT_EOF)

Words of the payload are quoted as ``$'...'`` where they need it (bash and
busybox sh read that; dash does not), so the payload is printable ASCII
whatever the command holds: newlines, UTF-8, any byte.

When the command has ended and its output is closed, the worker writes an
end marker on each line, after the output: NUL, the session's nonce, then
``o`` and the exit status in three digits on IO, ``e`` on ERR. In the stream
itself, the marker cannot overtake the output (as a message on another line
could, when the daemon is slow to read); the nonce is the daemon's secret,
so no output holds it by chance. ``OutputEnd`` finds it::

    end = OutputEnd(output_marker(nonce, "o"), trailer=3)
    client.write(end.feed(chunk))    # all but what may be the marker's start
    end.trailer                      # b"000" once the marker has come
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping, Sequence

EXEC_MODES = ("null", "pipe", "tty")  # the command's stdin: empty, the client's, a terminal

# The slot's input side between terminal sessions (see the module docstring); the
# guest's exec-sessions file sets exactly these (a test checks).
SLOT_STTY = (
    "cs8 -parenb icanon iexten -isig -echo -echonl -opost -icrnl -inlcr -igncr -istrip "
    "-ixon -ixoff -brkint -inpck -imaxbel eof ^D lnext ^V intr undef quit undef "
    "erase undef kill undef eol undef eol2 undef werase undef rprnt undef susp undef "
    "start undef stop undef"
)
# n_tty holds at most 4095 bytes of one line; a chunk is well under that.
INPUT_CHUNK = 2000
INPUT_EOF = b"\x04"
_VEOF, _VLNEXT = b"\x04", b"\x16"
# The guest's PATH for commands: Debian's for root (the default guest lacks some
# of the directories, which costs nothing).
GUEST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_SAFE = re.compile(r"[A-Za-z0-9_@%+=:,./-]+")
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def encode_input(data: bytes) -> bytes:
    """``data`` as the slot's line discipline gives it back to ``read()``, byte for byte."""
    out = bytearray()
    for i in range(0, len(data), INPUT_CHUNK):
        chunk = data[i : i + INPUT_CHUNK]
        out += chunk.replace(_VLNEXT, _VLNEXT + _VLNEXT).replace(_VEOF, _VLNEXT + _VEOF)
        if not chunk.endswith(b"\n"):
            out += _VEOF  # a newline hands the line over itself; a ^D after it would be EOF
    return bytes(out)


def shell_quote(word: str) -> str:
    """``word`` as one shell word of printable ASCII (``$'...'`` when it needs quoting).

    Bytes that are not UTF-8 (in ``surrogateescape`` form, as ``sys.argv``
    holds them) come out as the same bytes.
    """
    if _SAFE.fullmatch(word):
        return word
    raw = word.encode("utf-8", "surrogateescape")
    if b"\0" in raw:
        raise ValueError("a NUL byte cannot be in a command's word")
    body = "".join(
        chr(b) if 0x20 <= b < 0x7F and b not in (0x27, 0x5C) else f"\\{b:03o}" for b in raw
    )
    return f"$'{body}'"


def session_payload(
    argv: Sequence[str],
    *,
    mode: str,
    nonce: str,
    rows: int = 0,
    cols: int = 0,
    cwd: str | None = None,
    env: Mapping[str, str] | None = None,
    term: str | None = None,
    login: bool = False,
) -> bytes:
    """The shell the worker reads for a session: its settings and ``exec_command``.

    ``exec_command`` becomes the command, in a fresh environment and a
    session of its own (``setsid``; with mode ``tty`` the IO line is its
    controlling terminal, so Ctrl-C is SIGINT). ``login``: root's login
    shell from /etc/passwd (``argv`` is ignored), in root's home unless
    ``cwd`` says otherwise. A ``cwd`` that does not exist ends the session
    with status 126.
    """
    if mode not in EXEC_MODES:
        raise ValueError(f"mode {mode!r}: expected one of {', '.join(EXEC_MODES)}")
    if not re.fullmatch(r"[0-9a-f]{8,64}", nonce):
        raise ValueError("a nonce is hex digits")
    if not (0 <= rows <= 65535 and 0 <= cols <= 65535):
        raise ValueError("rows and cols: 0..65535")
    tty = mode == "tty"
    variables = {"HOME": "/root", "USER": "root", "LOGNAME": "root", "PATH": GUEST_PATH}
    if tty:
        variables["TERM"] = term or "xterm"
    for name, value in (env or {}).items():
        if not ENV_NAME.fullmatch(name):
            raise ValueError(f"{name!r} is not an environment variable name")
        variables[name] = value
    setsid = "setsid -c" if tty else "setsid"
    body = []
    if login:
        # Builtins only: the shell reads /etc/passwd itself, no process is started for it.
        body.append(
            'while IFS=: read -r u _ _ _ _ h s; do [ "$u" = root ] && break; done </etc/passwd'
        )
        variables["HOME"], variables["SHELL"] = "${h:-/root}", "${s:-/bin/sh}"
        body.append(f"cd {_directory(cwd)} || exit 126" if cwd else 'cd "${h:-/root}" || cd /')
        command = f'{setsid} "${{s:-/bin/sh}}" -l'
    else:
        if not argv:
            raise ValueError("a session needs a command")
        body.append(f"cd {_directory(cwd or '/root')} || exit 126")
        command = f"{setsid} " + " ".join(shell_quote(w) for w in argv)
    assignments = " ".join(
        f'"{k}={v}"' if k in ("HOME", "SHELL") and login else shell_quote(f"{k}={v}")
        for k, v in variables.items()
    )
    # env -i: nothing of the worker's environment; busybox runs env without a new process.
    body.append(f"exec env -i {assignments} {command}")
    lines = [
        f"exec_mode={mode} exec_rows={rows} exec_cols={cols} exec_nonce={nonce}",
        "exec_command() {",
        *(f"    {line}" for line in body),
        "}",
    ]
    return ("\n".join(lines) + "\n").encode("ascii")


def _directory(path: str) -> str:
    return shell_quote("./" + path if path.startswith("-") else path)


STATUS_DIGITS = 3


def output_marker(nonce: str, stream: str) -> bytes:
    """What follows the session's output on IO (``stream`` "o") or ERR ("e")."""
    return b"\0" + nonce.encode("ascii") + stream.encode("ascii")


class OutputEnd:
    """The end of a session's output on one line: ``marker``, then ``trailer`` bytes.

    ``feed`` returns what comes before the marker, holding back only a tail
    that may be the marker's beginning (it starts with NUL, so text output
    is never held); once the marker and its trailer are in, ``trailer`` is
    set and everything after them is dropped.
    """

    def __init__(self, marker: bytes, trailer: int = 0) -> None:
        self.marker = marker
        self.trailer_size = trailer
        self.trailer: bytes | None = None
        self._held = b""

    def feed(self, data: bytes) -> bytes:
        if self.trailer is not None:
            return b""
        buffer = self._held + data
        at = buffer.find(self.marker)
        if at >= 0:
            end = at + len(self.marker) + self.trailer_size
            if len(buffer) >= end:
                self.trailer = buffer[at + len(self.marker) : end]
                self._held = b""
            else:
                self._held = buffer[at:]
            return buffer[:at]
        keep = 0
        for k in range(min(len(self.marker) - 1, len(buffer)), 0, -1):
            if buffer.endswith(self.marker[:k]):
                keep = k
                break
        self._held = buffer[len(buffer) - keep :]
        return buffer[: len(buffer) - keep]


def new_nonce() -> str:
    """A word no stdin holds by chance: the end of what a session left in the slot's input."""
    return secrets.token_hex(16)
