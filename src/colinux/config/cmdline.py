"""The coLinux key=value command line: reader, writer and ``@FILE`` expansion.

The seed starts its guest with::

    colinux-daemon kernel=vmlinux mem=128 cobd0=root.img cobd1=swap.img cofs0=c:\\
        root=/dev/cobd0 initrd=initrd.gz eth0=tuntap,"TAP-Win32"

``parse_cmdline`` turns such words into a ``Machine``; ``write_cmdline`` turns
a ``Machine`` back into words, and parsing them gives an equal ``Machine``;
``format_cmdline`` joins them into one line a user can paste into a shell::

    words = expand_at_files(sys.argv[1:], cwd=os.getcwd())
    machine = parse_cmdline(words)                  # or base=read_xml(...)
    print(format_cmdline(machine))

Every setting (``mem=``, ``cobdN=``, ``ethN=``...) is a row of the one
settings table, ``config.settings``, which says how each is written; any
other word goes to the guest kernel, in order, as the original did with keys
it did not know.

Values with several fields are split on commas; a field in double quotes may
hold commas, and ``""`` inside it stands for one ``"`` (``cofs0="/srv/a,b",meta``).
Quotes a field does not need are optional: ``eth0=tuntap,"TAP-Win32"`` (as a Windows
shell leaves it) and ``eth0=tuntap,TAP-Win32`` (as a POSIX shell leaves it) are
the same. A single-path value (``cobd0=``, ``kernel=``) may be quoted whole.
Backslashes are ordinary characters, so Windows paths arrive intact in
``HostPath.raw``; ``config.paths`` gives them a host meaning.

``userspace=ptrace`` traps every guest system call with ptrace: slower, but
guest processes cannot reach guest kernel memory, for guests that run
untrusted code. UML runs one CPU that way, so ``cpus=2 userspace=ptrace`` is a
``UserError``, however the two are given (words, ``@FILE``, over an XML base).

Giving an indexed device twice (``cobd0=`` twice, an alias twice, two aliases
for one device) is a ``UserError`` naming both words. ``kernel=``, ``mem=``,
``cpus=``, ``userspace=`` and ``initrd=`` may be repeated: the last wins, so
``@defaults.conf mem=256`` overrides the file.

``@FILE`` files hold the same words, any number per line. ``#`` starts a
comment when it starts a word (so ``disk#1.img`` is a file name). ``"..."``
protects spaces and is kept in the word (the quotes mean something to the
fields above); ``'...'`` protects spaces and is removed, as a shell would, so
a line printed by ``format_cmdline`` reads back from a file. Relative names
resolve against the directory of the file that names them.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from colinux.config import devices, settings, values
from colinux.config.devices import SERIAL_DAEMON
from colinux.config.model import MAX_INDEX, BlockDevice, Machine
from colinux.config.settings import BootParams, Devices, Scalar
from colinux.errors import UserError

COMMAND_LINE = "command line"
MAX_AT_DEPTH = 8  # @FILE inside @FILE, this deep at most

# A word and where it came from: None for the command line itself (messages then
# name the ``source`` given to the parser), or "FILE:LINE".
Word = tuple[str, str | None]

SCALAR_KEYS = tuple(s.key for s in settings.SCALARS)
_DEVICE_KEYS = "|".join(s.key for s in settings.DEVICES)
_INDEXED_KEY = re.compile(f"({_DEVICE_KEYS})([0-9]+)", re.ASCII)
# Device keys mistyped (ttyS0=, ETH0=, cobd=): refused rather than given to the kernel.
_NEAR_MISS = re.compile(f"({_DEVICE_KEYS})([0-9]*)", re.ASCII | re.IGNORECASE)
_ALIAS_REFERENCE = re.compile(r":cobd([0-9]+)", re.ASCII)
# The device keys whose values split_fields reads (cobdN= has its own rule for commas).
_FIELD_KEYS = (settings.COFS.key, settings.NETWORKS.key, settings.SERIALS.key)

# The characters a POSIX shell leaves alone (those of shlex.quote).
_SHELL_SAFE = re.compile(r"[\w@%+=:,./-]+", re.ASCII)
# A field a shell may strip the quotes from without changing what it means.
_PLAIN_FIELD = re.compile(r'[^"]*|"[^",]*"')


def setting_key(word: str) -> str | None:
    """The colinux setting a word sets (``"cobd0"``, ``"mem"``), or None.

    None means the word is for the guest kernel (``root=/dev/cobd0``, ``ro``).
    """
    key, sep, _ = word.partition("=")
    if not sep:
        return None
    if key in SCALAR_KEYS or _INDEXED_KEY.fullmatch(key) or values.ALIAS_PATTERN.fullmatch(key):
        return key
    return None


# --- reading ---------------------------------------------------------------------------


class _Builder:
    """Collects words into a Machine, starting from ``base``."""

    def __init__(self, source: str, base: Machine | None) -> None:
        self.source = source
        base = base or settings.COLINUX_PROFILE
        self.base_source = base.source
        self.collected = settings.collect(base)
        self.block: dict[int, BlockDevice] = self.collected[settings.BLOCK_DEVICES.field]
        # key -> the word that last set it (None: the base's), for the CPU/userspace check.
        self.set_by: dict[str, Word] = {}
        # name -> the word that gave it: "cobd0", "hda1", "cofs0", "eth0", and
        # "=cobd0" for the word that named cobd0 with an alias.
        self.claims: dict[str, Word] = {}
        self.alias_paths: list[tuple[str, BlockDevice, Word]] = []
        self.alias_references: list[tuple[str, int, Word]] = []

    def where(self, word: Word) -> str:
        return word[1] if word[1] is not None else self.source

    def fail(self, word: Word, problem: str) -> UserError:
        return UserError(f"{self.where(word)}: {word[0]}: {problem}")

    def claim(self, name: str, word: Word, what: str | None = None) -> None:
        if name in self.claims:
            other = self.claims[name]
            place = f" ({self.where(other)})" if self.where(other) != self.where(word) else ""
            raise self.fail(word, f"{what or name} is already given by {other[0]}{place}")
        self.claims[name] = word

    def add(self, word: Word) -> None:
        key = setting_key(word[0])
        if key is None:
            near = _NEAR_MISS.fullmatch(word[0].partition("=")[0]) if "=" in word[0] else None
            if near:  # ttyS0=, ETH0=, cobd=: a typo, not a kernel parameter
                kind, index = near.group(1).lower(), near.group(2) or "N"
                raise self.fail(word, f"did you mean {kind}{index}=? (lower case, with an index)")
            self.collected[settings.BOOT_PARAMS.field].append(word[0])
            return
        value = word[0][len(key) + 1 :]
        try:
            self.setting(key, value, word)
        except values.BadValue as error:
            raise self.fail(word, str(error)) from None

    def setting(self, key: str, value: str, word: Word) -> None:
        scalar = settings.BY_KEY.get(key)
        if isinstance(scalar, Scalar):  # may be repeated: the last wins
            self.collected[scalar.field] = scalar.parse_word(value)
            self.set_by[key] = word
        elif match := _INDEXED_KEY.fullmatch(key):
            row = settings.BY_KEY[match.group(1)]
            assert isinstance(row, Devices)
            index = values.parse_index(match.group(2), row.max_index)
            self.claim(f"{row.key}{index}", word)
            device = row.parse_value(index, value)
            devices.check_device(device)
            self.collected[row.field][index] = device
        else:  # an alias: hda1=PATH or hda1=:cobd0
            self.claim(key, word)
            if value.startswith(":"):
                reference = _ALIAS_REFERENCE.fullmatch(value)
                if reference is None:
                    raise values.BadValue("expected :cobdN to name an existing device")
                index = values.parse_index(reference.group(1))
                self.alias_references.append((key, index, word))
            else:
                disk = devices.parse_block_value(0, value)
                devices.check_device(disk)
                self.alias_paths.append((key, disk, word))

    def resolve_aliases(self) -> None:
        # Aliases with a path take the first free index once every cobdN= word
        # is known, so the result does not depend on the order of the words.
        for alias, disk, word in self.alias_paths:
            index = next(
                (
                    d.index
                    for d in self.block.values()
                    if d.alias == alias and f"cobd{d.index}" not in self.claims
                ),
                None,
            )
            if index is None:
                index = next((i for i in range(MAX_INDEX + 1) if i not in self.block), None)
            if index is None:
                raise self.fail(word, f"no free cobd index for {alias} (all {MAX_INDEX + 1} used)")
            self.claims[f"cobd{index}"] = word
            self.claims[f"=cobd{index}"] = word
            self.block[index] = replace(disk, index=index, alias=alias)
        for alias, index, word in self.alias_references:
            if index not in self.block:
                raise self.fail(word, f"cobd{index} is not defined")
            self.claim(f"=cobd{index}", word, f"a name for cobd{index}")
            # The words win over the base: the alias leaves whichever device had it.
            for other in list(self.block.values()):
                if other.alias == alias:
                    self.block[other.index] = replace(other, alias=None)
            self.block[index] = replace(self.block[index], alias=alias)

    def check_cpus(self) -> None:
        # Checked once every word is in: the two may come from different words,
        # files, or a base the words override.
        cpus = self.collected[settings.CPUS.field]
        userspace = self.collected[settings.USERSPACE.field]
        if not values.cpus_need_seccomp(cpus, userspace):
            return
        problem = "more than one CPU needs the seccomp userspace (userspace=ptrace runs one CPU)"
        if settings.CPUS.key in self.set_by:
            raise self.fail(self.set_by[settings.CPUS.key], problem)
        where = f" ({self.base_source})" if self.base_source else ""
        word = self.set_by.get(settings.USERSPACE.key) or (f"userspace={userspace}", None)
        raise self.fail(word, f"cpus={cpus}{where}: {problem}")

    def machine(self) -> Machine:
        self.resolve_aliases()
        self.check_cpus()
        return settings.assemble(self.collected, source=self.base_source)


def parse_words(words: Sequence[Word], *, source: str, base: Machine | None = None) -> Machine:
    """``parse_cmdline`` for words that carry their own "FILE:LINE" location."""
    builder = _Builder(source, base)
    for word in words:
        builder.add(word)
    return builder.machine()


def parse_cmdline(
    words: Sequence[str], *, source: str = COMMAND_LINE, base: Machine | None = None
) -> Machine:
    """Read key=value words (``@FILE`` already expanded) into a Machine.

    ``source`` starts every message ("command line: mem=abc: ..."). With
    ``base`` (a machine read from XML), the words override it: ``kernel=``,
    ``mem=``, ``cpus=``, ``userspace=``, ``initrd=`` replace its values, a
    device replaces its device of the same index (or, for ``hda1=PATH``, the
    one with that alias), and the guest-kernel words follow its boot
    parameters. The result keeps ``base.source``; without a base, ``source``
    is None.
    """
    return parse_words([(word, None) for word in words], source=source, base=base)


# --- @FILE -----------------------------------------------------------------------------


def tokenize(text: str, source: str) -> list[Word]:
    """Split a key=value file's text into words located "SOURCE:LINE"."""
    words: list[Word] = []
    i, n, line = 0, len(text), 1
    if text.startswith("\ufeff"):
        i = 1
    while i < n:
        char = text[i]
        if char == "\n":
            line += 1
            i += 1
        elif char.isspace():
            i += 1
        elif char == "#":
            end = text.find("\n", i)
            i = n if end < 0 else end
        else:
            start_line = line
            parts: list[str] = []
            while i < n and not text[i].isspace():
                char = text[i]
                if char in "\"'":
                    end = text.find(char, i + 1)
                    if end < 0:
                        raise UserError(f"{source}:{line}: unterminated {char} quote")
                    quoted = text[i + 1 : end]
                    if char == "'" or (quoted and quoted.strip("'") == ""):
                        # '...' is removed as a shell removes it; so is "'", the
                        # idiom shlex.quote writes for a ' inside a quoted word.
                        parts.append(quoted)
                    else:
                        parts.append(text[i : end + 1])  # kept: split_fields reads it
                    line += text.count("\n", i, end)
                    i = end + 1
                else:
                    parts.append(char)
                    i += 1
            words.append(("".join(parts), f"{source}:{start_line}"))
    return words


def read_text(path: str, what: str) -> str:
    """A text file's contents, or a UserError that starts with ``what``."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise UserError(f"{what}: no such file") from None
    except IsADirectoryError:
        raise UserError(f"{what}: is a directory, not a file") from None
    except OSError as error:
        raise UserError(f"{what}: cannot read: {error.strerror}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise UserError(f"{what}: not UTF-8 text (byte {error.start})") from None


def expand_words(
    words: Sequence[Word], *, base_dir: str, source: str, stack: tuple[str, ...] = ()
) -> list[Word]:
    """Replace ``@FILE`` words by the words of FILE, keeping locations.

    ``stack`` holds the real paths of the files being read, for the loop check.
    """
    expanded: list[Word] = []
    for word in words:
        text, where = word
        if not text.startswith("@"):
            expanded.append(word)
            continue
        prefix = f"{where}: {text}" if where is not None else text
        name = text[1:]
        if name == "":
            raise UserError(f"{prefix}: expected a file name after @")
        path = os.path.join(base_dir, os.path.expanduser(name))
        real = os.path.realpath(path)
        if real in stack:
            chain = " -> ".join([*stack[stack.index(real) :], real])
            raise UserError(f"{prefix}: the file includes itself ({chain})")
        if len(stack) >= MAX_AT_DEPTH:
            raise UserError(f"{prefix}: @FILE nested more than {MAX_AT_DEPTH} deep")
        inner = tokenize(read_text(path, prefix), name)
        expanded += expand_words(
            inner, base_dir=os.path.dirname(real), source=source, stack=(*stack, real)
        )
    return expanded


def expand_at_files(words: Sequence[str], *, cwd: str) -> list[str]:
    """The words with each ``@FILE`` replaced by the words FILE holds.

    A relative FILE resolves against ``cwd``; an ``@FILE`` inside a file,
    against that file's directory.
    """
    located = expand_words([(w, None) for w in words], base_dir=cwd, source=COMMAND_LINE)
    return [text for text, _ in located]


def parse_cmdline_text(
    text: str, *, source: str, base_dir: str, base: Machine | None = None
) -> Machine:
    """A key=value file's text as a Machine, over ``base``; messages name "SOURCE:LINE"."""
    words = expand_words(tokenize(text, source), base_dir=base_dir, source=source)
    return parse_words(words, source=source, base=base)


# --- writing ---------------------------------------------------------------------------


def write_cmdline(machine: Machine) -> list[str]:
    """The machine as key=value words, in the seed's order (``settings.SETTINGS``').

    Raw paths are written (not resolved host paths). Disabled devices are left
    out: the command line has no way to say "disabled". A setting at its
    default is left out (``kernel=`` when ``machine.kernel`` is None, the
    engine's kernel; ``cpus=`` and ``userspace=``), except ``mem=``, so a
    machine that does not set them is written as coLinux 0.6 would have.
    Raises ``UserError`` for a boot parameter that would read back as a
    colinux setting (such as ``mem=64`` or ``@file``).
    """
    words: list[str] = []
    for setting in settings.SETTINGS:
        value: Any = getattr(machine, setting.field)
        if isinstance(setting, Scalar):
            if setting.written(value):
                words.append(f"{setting.key}={setting.format_word(value)}")
        elif isinstance(setting, BootParams):
            for param in value:
                if setting_key(param) is not None or param.startswith("@"):
                    raise UserError(
                        f"boot parameter {param!r} cannot be written on a command line: "
                        "colinux would read it as its own setting"
                    )
                words.append(param)
        elif isinstance(setting, Devices):
            for device in sorted(value, key=lambda d: d.index):
                if not getattr(device, "enabled", True):
                    continue
                words.append(f"{setting.key}{device.index}={setting.format_value(device)}")
                if isinstance(device, BlockDevice) and device.alias is not None:
                    words.append(f"{device.alias}=:cobd{device.index}")
    return words


def display_word(word: str) -> str:
    """A word as typed into a POSIX shell: quoted only when it must be.

    Double quotes around a comma-free field stay bare (``eth0=tuntap,"TAP-Win32"``,
    as in the seed): the shell removes them, and the field means the same
    without them.
    """
    if _SHELL_SAFE.fullmatch(word):
        return word
    key, _, value = word.partition("=")
    match = _INDEXED_KEY.fullmatch(key)
    if (
        match is not None
        and match.group(1) in _FIELD_KEYS
        and not (match.group(1) == "ttys" and value.startswith(f'"{SERIAL_DAEMON}"'))
        and '"' in value
        and _SHELL_SAFE.fullmatch(word.replace('"', ""))
        and all(_PLAIN_FIELD.fullmatch(field) for field in value.split(","))
    ):
        return word
    return shlex.quote(word)


def format_cmdline(machine: Machine) -> str:
    """``write_cmdline``'s words as one line to paste into a shell."""
    return " ".join(display_word(word) for word in write_cmdline(machine))
