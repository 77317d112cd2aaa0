"""The guest agent's line protocol on /dev/tty15, as pure functions over bytes.

One message is one line of words separated by single spaces (ASCII, but for
RUN's command, which is UTF-8 or any bytes)::

    guest -> daemon  HELLO <version> [serve] [exec]  once, when the agent starts: ``serve``
                                                     an image's agent (no RUN, no SHELL),
                                                     ``exec`` it runs exec sessions
                     EXIT <status>                   a RUN command's exit status
                     REBOOT                          the guest asks for a fresh engine
                     READY <slot>                    the slot's exec worker listens on it
                     FREE <slot>                     its session is over and the slot's input
                                                     clean (the end of the session's output is
                                                     on the slot's lines: ``exec_wire``)
    daemon -> guest  RUN raw|tty <quoted command>    run ``sh -c CMD``, then power off (CMD is
                                                     one single-quoted word: ``shell_word``)
                     SHELL once|respawn              a root shell on the console
                     REFUSE                          versions differ: power off
                     POWEROFF | REBOOT               clean shutdown requests
                     KMSG                            pass /dev/kmsg on, on tty13
                     EXEC <slot> <io> <err>          start the slot's exec worker (its
                                                     sessions come on IO: ``exec_wire``)
                     SIGNAL <slot> <NAME>            to the session's process group
                     RESIZE <slot> <rows> <cols>     the session's terminal size

``decode`` turns a line into one of the message classes below, or None for
what is not a message (an empty line, an unknown verb, a malformed field):
the daemon ignores those, so an agent of another version cannot upset it::

    line = encode(Free(slot=2))      # b"FREE 2\\n"
    decode(line) == Free(slot=2)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

MAX_LINE = 4096
SIGNALS = ("HUP", "INT", "QUIT", "KILL", "USR1", "USR2", "PIPE", "TERM", "CONT", "STOP", "WINCH")
_WORD = re.compile(r"[!-~]+")  # printable ASCII, no space
_DEVICE = re.compile(r"[A-Za-z0-9]+")  # ttyS4
_NUMBER = re.compile(r"0|[1-9][0-9]{0,5}")
MAX_NUMBER = 65535  # slots, statuses (0..255 from a shell), rows and columns


@dataclass(frozen=True)
class Hello:
    version: str
    flags: tuple[str, ...] = ()  # "serve", "exec"; unknown ones are kept


@dataclass(frozen=True)
class Exit:
    status: int


@dataclass(frozen=True)
class Reboot:
    pass


@dataclass(frozen=True)
class Ready:
    slot: int


@dataclass(frozen=True)
class Free:
    slot: int


@dataclass(frozen=True)
class Run:
    mode: Literal["raw", "tty"]
    command: str  # a shell command line (shlex.join of the job)


@dataclass(frozen=True)
class Shell:
    mode: Literal["once", "respawn"]


@dataclass(frozen=True)
class Refuse:
    pass


@dataclass(frozen=True)
class Poweroff:
    pass


@dataclass(frozen=True)
class Kmsg:
    pass


@dataclass(frozen=True)
class Exec:
    slot: int
    io: str  # the guest device of stdin and stdout (the terminal with -t), e.g. ttyS4
    err: str  # the guest device of stderr


@dataclass(frozen=True)
class Signal:
    slot: int
    name: str  # one of SIGNALS


@dataclass(frozen=True)
class Resize:
    slot: int
    rows: int
    cols: int


Message = (
    Hello
    | Exit
    | Reboot
    | Ready
    | Free
    | Run
    | Shell
    | Refuse
    | Poweroff
    | Kmsg
    | Exec
    | Signal
    | Resize
)


def shell_word(text: str) -> str:
    """TEXT as one single-quoted ``sh`` word on one line, for the agent's ``eval``: a
    newline is written ``'"$nl"'``, which the agent defines as one. (A quoted word,
    not base64: decoding cost the guest a subshell and a program per run.)"""
    return "'" + text.replace("'", "'\\''").replace("\n", "'\"$nl\"'") + "'"


def _shell_unword(word: str) -> str | None:
    """``shell_word``'s text back, or None for what it does not write."""
    out, i = [], 0
    while i < len(word):
        if word[i] != "'":
            return None
        end = word.find("'", i + 1)
        if end < 0:
            return None
        out.append(word[i + 1 : end])
        i = end + 1
        if word.startswith("\\'", i):
            out.append("'")
            i += 2
        elif word.startswith('"$nl"', i):
            out.append("\n")
            i += 5
        elif i != len(word):
            return None
    return "".join(out) if word else None


def _number(value: int) -> str:
    if not 0 <= value <= MAX_NUMBER:
        raise ValueError(f"{value} is out of range 0..{MAX_NUMBER}")
    return str(value)


def _word(value: str, pattern: re.Pattern[str] = _WORD) -> str:
    if not pattern.fullmatch(value):
        raise ValueError(f"{value!r} is not a protocol word")
    return value


def encode(message: Message) -> bytes:
    """One line, ending in a newline; ValueError for a field the protocol cannot carry."""
    match message:
        case Hello(version, flags):
            words = ["HELLO", _word(version), *(_word(f) for f in flags)]
        case Exit(status):
            words = ["EXIT", _number(status)]
        case Reboot():
            words = ["REBOOT"]
        case Ready(slot):
            words = ["READY", _number(slot)]
        case Free(slot):
            words = ["FREE", _number(slot)]
        case Run(mode, command):
            if mode not in ("raw", "tty"):
                raise ValueError(f"RUN mode {mode!r}")
            if not command or "\r" in command:
                raise ValueError("a RUN command is one or more characters, no carriage return")
            words = ["RUN", mode, shell_word(command)]
        case Shell(mode):
            if mode not in ("once", "respawn"):
                raise ValueError(f"SHELL mode {mode!r}")
            words = ["SHELL", mode]
        case Refuse():
            words = ["REFUSE"]
        case Poweroff():
            words = ["POWEROFF"]
        case Kmsg():
            words = ["KMSG"]
        case Exec(slot, io, err):
            words = ["EXEC", _number(slot), _word(io, _DEVICE), _word(err, _DEVICE)]
        case Signal(slot, name):
            if name not in SIGNALS:
                raise ValueError(f"signal {name!r}")
            words = ["SIGNAL", _number(slot), name]
        case Resize(slot, rows, cols):
            words = ["RESIZE", _number(slot), _number(rows), _number(cols)]
        case _:
            raise TypeError(f"not an agent message: {message!r}")
    line = (" ".join(words) + "\n").encode("utf-8", "surrogateescape")
    if len(line) > MAX_LINE:
        raise ValueError(f"a line of {len(line)} bytes is over {MAX_LINE}")
    return line


def _int(word: str) -> int:
    if not _NUMBER.fullmatch(word) or int(word) > MAX_NUMBER:
        raise ValueError(word)
    return int(word)


def decode(line: bytes) -> Message | None:
    """The message on ``line`` (with or without its newline), or None."""
    text = line.rstrip(b"\r\n").decode("utf-8", "surrogateescape")
    verb, _, rest = text.partition(" ")
    if verb == "RUN":  # its command is a quoted word, which may hold spaces
        mode, _, word = rest.partition(" ")
        command = _shell_unword(word)
        if mode not in ("raw", "tty") or not command:
            return None
        return Run("raw" if mode == "raw" else "tty", command)
    if not text.isascii():
        return None
    words = rest.split(" ") if rest else []
    try:
        return _decode(verb, words)
    except (ValueError, IndexError):
        return None


def _decode(verb: str, words: list[str]) -> Message | None:
    # Each branch checks its word count: a field too many is as wrong as one too few.
    if verb == "HELLO" and words and all(_WORD.fullmatch(w) for w in words):
        return Hello(words[0], tuple(words[1:]))
    if verb == "EXIT" and len(words) == 1:
        return Exit(_int(words[0]))
    if verb == "REBOOT" and not words:
        return Reboot()
    if verb == "READY" and len(words) == 1:
        return Ready(_int(words[0]))
    if verb == "FREE" and len(words) == 1:
        return Free(_int(words[0]))
    if verb == "SHELL" and len(words) == 1 and words[0] in ("once", "respawn"):
        return Shell("once" if words[0] == "once" else "respawn")
    if verb == "REFUSE" and not words:
        return Refuse()
    if verb == "POWEROFF" and not words:
        return Poweroff()
    if verb == "KMSG" and not words:
        return Kmsg()
    if verb == "EXEC" and len(words) == 3 and all(_DEVICE.fullmatch(w) for w in words[1:]):
        return Exec(_int(words[0]), words[1], words[2])
    if verb == "SIGNAL" and len(words) == 2 and words[1] in SIGNALS:
        return Signal(_int(words[0]), words[1])
    if verb == "RESIZE" and len(words) == 3:
        return Resize(_int(words[0]), _int(words[1]), _int(words[2]))
    return None
