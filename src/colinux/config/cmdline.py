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

The settings (every other word goes to the guest kernel, in order, as the
original did with keys it did not know):

==============================================  =========================================
``kernel=PATH``, ``initrd=PATH``                 the UML kernel; an initial ramdisk
``mem=N``                                        megabytes; ``128``, ``128M`` or ``2G``
``cpus=N``                                       guest CPUs, 1..8 (default 1)
``userspace=auto``                               guest processes on seccomp where the host
                                                 allows it, else ptrace (the default)
``userspace=seccomp``                            seccomp, or the guest does not start
``userspace=ptrace``                             strict: slower, one CPU (see below)
``cobdN=PATH[,ro][,cow=FILE]``                  block device N (0..31) backed by PATH;
                                                 ro: read-only; cow: writes go to FILE
``hdaN=PATH``, ``sdbN=PATH``...                  the first free cobd, with that guest name
``hda1=:cobd0``                                  a guest name for cobd0 (in any word order)
``cofsN=PATH[,flat|meta][,ro]``                  host directory PATH shared as cofsN
``ethN=slirp[,MAC][,REDIRS]``                    user-mode NAT; REDIRS ``tcp:2222:22/udp:...``
``ethN=tuntap[,"NAME"][,MAC]``                   host TAP device NAME
``ethN=pcap-bridge[,"NAME"][,MAC][,nopromisc]``  bridged onto host interface NAME
``ttysN=DEVICE[,"MODE"]``                        guest ttySN (0..3) on a host tty or pty
``ttysN=daemon``                                 ttySN served by the daemon (colinux serial)
==============================================  =========================================

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

from colinux.config import values
from colinux.config.model import (
    DEFAULT_CPUS,
    MAX_INDEX,
    MAX_NETWORK_INDEX,
    MAX_SERIAL_INDEX,
    BlockDevice,
    CofsShare,
    CofsType,
    HostPath,
    Machine,
    NetworkCard,
    NetworkType,
    SerialLine,
    Userspace,
)
from colinux.errors import UserError

COMMAND_LINE = "command line"
MAX_AT_DEPTH = 8  # @FILE inside @FILE, this deep at most

# A word and where it came from: None for the command line itself (messages then
# name the ``source`` given to the parser), or "FILE:LINE".
Word = tuple[str, str | None]

SCALAR_KEYS = ("kernel", "mem", "cpus", "userspace", "initrd")
_INDEXED_KEY = re.compile(r"(cobd|cofs|eth|ttys)([0-9]+)", re.ASCII)
# Device keys mistyped (ttyS0=, ETH0=, cobd=): refused rather than given to the kernel.
_NEAR_MISS = re.compile(r"(cobd|cofs|eth|ttys)([0-9]*)", re.ASCII | re.IGNORECASE)
_INDEX_LIMITS = {"eth": MAX_NETWORK_INDEX, "ttys": MAX_SERIAL_INDEX}
SERIAL_DAEMON = "daemon"  # ttysN=daemon: the daemon serves the line
_ALIAS_REFERENCE = re.compile(r":cobd([0-9]+)", re.ASCII)

# The characters a POSIX shell leaves alone (those of shlex.quote).
_SHELL_SAFE = re.compile(r"[\w@%+=:,./-]+", re.ASCII)
# A field a shell may strip the quotes from without changing what it means.
_PLAIN_FIELD = re.compile(r'[^"]*|"[^",]*"')

_NETWORK_SYNTAX = {
    NetworkType.SLIRP: "slirp[,MAC][,REDIRS]",
    NetworkType.TAP: 'tuntap[,"NAME"][,MAC]',
    NetworkType.BRIDGED: 'pcap-bridge[,"NAME"][,MAC][,promisc|nopromisc]',
}


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


# --- fields ----------------------------------------------------------------------------


def split_fields(value: str) -> list[str]:
    """Split a value on commas outside double quotes, and unquote each field."""
    fields: list[str] = []
    i, n = 0, len(value)
    while True:
        if i < n and value[i] == '"':
            chars: list[str] = []
            j = i + 1
            while True:
                if j >= n:
                    raise values.BadValue("unterminated double quote")
                if value[j] == '"':
                    if value.startswith('""', j):  # "" inside quotes: one "
                        chars.append('"')
                        j += 2
                        continue
                    j += 1
                    break
                chars.append(value[j])
                j += 1
            if j < n and value[j] != ",":
                raise values.BadValue("text follows a closing quote; quote the whole field")
            fields.append("".join(chars))
        else:
            j = value.find(",", i)
            if j < 0:
                j = n
            fields.append(value[i:j])
        if j >= n:
            return fields
        i = j + 1


def quote_field(text: str, *, always: bool = False) -> str:
    """A field as ``split_fields`` reads it back: quoted when it has to be."""
    if always or "," in text or text.startswith('"'):
        return '"' + text.replace('"', '""') + '"'
    return text


def _single_value(value: str) -> str:
    """A one-field value (a path): optionally quoted whole, commas allowed."""
    if not value.startswith('"'):
        return value
    fields = split_fields(value)
    if len(fields) != 1:
        raise values.BadValue("expected one quoted path; text follows the closing quote")
    return fields[0]


def _single_quote(text: str) -> str:
    return '"' + text.replace('"', '""') + '"' if text.startswith('"') else text


# --- reading ---------------------------------------------------------------------------


class _Builder:
    """Collects words into a Machine, starting from ``base``."""

    def __init__(self, source: str, base: Machine | None) -> None:
        self.source = source
        base = base or Machine()
        self.base_source = base.source
        self.kernel = base.kernel
        self.memory_mb = base.memory_mb
        self.cpus = base.cpus
        self.userspace = base.userspace
        # The words that last set them (None: the base's), for the CPU/userspace check.
        self.cpus_word: Word | None = None
        self.userspace_word: Word | None = None
        self.initrd = base.initrd
        self.bootparams = list(base.bootparams)
        self.block = {d.index: d for d in base.block_devices}
        self.cofs = {s.index: s for s in base.cofs}
        self.networks = {c.index: c for c in base.networks}
        self.serials = {s.index: s for s in base.serials}
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

    def path(self, word: Word, value: str) -> HostPath:
        text = _single_value(value)
        if text == "":
            raise values.BadValue("expected a path")
        return HostPath(text)

    def add(self, word: Word) -> None:
        key = setting_key(word[0])
        if key is None:
            near = _NEAR_MISS.fullmatch(word[0].partition("=")[0]) if "=" in word[0] else None
            if near:  # ttyS0=, ETH0=, cobd=: a typo, not a kernel parameter
                kind, index = near.group(1).lower(), near.group(2) or "N"
                raise self.fail(word, f"did you mean {kind}{index}=? (lower case, with an index)")
            self.bootparams.append(word[0])
            return
        value = word[0][len(key) + 1 :]
        try:
            self.setting(key, value, word)
        except values.BadValue as error:
            raise self.fail(word, str(error)) from None

    def setting(self, key: str, value: str, word: Word) -> None:
        if key == "kernel":
            self.kernel = self.path(word, value)
        elif key == "initrd":
            self.initrd = self.path(word, value)
        elif key == "mem":
            self.memory_mb = values.parse_memory(value)
        elif key == "cpus":
            self.cpus = values.parse_cpus(value)
            self.cpus_word = word
        elif key == "userspace":
            self.userspace = values.parse_userspace(value)
            self.userspace_word = word
        elif match := _INDEXED_KEY.fullmatch(key):
            kind, digits = match.groups()
            index = values.parse_index(digits, _INDEX_LIMITS.get(kind, MAX_INDEX))
            self.claim(f"{kind}{index}", word)
            if kind == "cobd":
                self.block[index] = self.block_device(index, word, value)
            elif kind == "cofs":
                self.cofs[index] = self.cofs_share(index, value)
            elif kind == "ttys":
                self.serials[index] = self.serial_line(index, value)
            else:
                self.networks[index] = self.network_card(index, value)
        else:  # an alias: hda1=PATH or hda1=:cobd0
            self.claim(key, word)
            if value.startswith(":"):
                match = _ALIAS_REFERENCE.fullmatch(value)
                if match is None:
                    raise values.BadValue("expected :cobdN to name an existing device")
                index = values.parse_index(match.group(1))
                self.alias_references.append((key, index, word))
            else:
                self.alias_paths.append((key, self.block_device(0, word, value), word))

    def block_device(self, index: int, word: Word, value: str) -> BlockDevice:
        """``PATH[,ro][,cow=FILE]``. An unquoted path may hold commas as before,
        unless what follows its last commas reads as options."""
        fields = split_fields(value) if value.startswith('"') else value.split(",")
        options = fields[1:]
        if not value.startswith('"') and not all(_is_disk_option(o) for o in options):
            return BlockDevice(index, self.path(word, value))
        readonly, cow = False, None
        for option in options:
            lowered = option.lower()
            if lowered in ("ro", "rw"):
                readonly = lowered == "ro"
            elif lowered.startswith("cow="):
                cow = option[4:]
                if cow == "":
                    raise values.BadValue("cow= needs a file (the COW file for this disk)")
            elif option != "":
                raise values.BadValue(f"unknown option {option!r}: expected ro or cow=FILE")
        if readonly and cow is not None:
            raise values.BadValue("ro and cow= do not go together: the COW file takes the writes")
        path = fields[0]
        if path == "":
            raise values.BadValue("expected a path")
        return BlockDevice(
            index, HostPath(path), readonly=readonly, cow=HostPath(cow) if cow else None
        )

    def cofs_share(self, index: int, value: str) -> CofsShare:
        path, *options = split_fields(value)
        if path == "":
            raise values.BadValue("expected a host directory")
        kind: CofsType | None = None
        readonly = False
        for option in options:
            lowered = option.lower()
            if lowered in ("flat", "meta"):
                if kind is not None and kind.value != lowered:
                    raise values.BadValue("give flat or meta, not both")
                kind = CofsType(lowered)
            elif lowered in ("ro", "rw"):
                readonly = lowered == "ro"
            elif option != "":
                raise values.BadValue(
                    f"unknown option {option!r}: expected flat, meta or ro "
                    f'(quote a path holding a comma: cofs{index}="/srv/a,b")'
                )
        return CofsShare(index, HostPath(path), type=kind or CofsType.FLAT, readonly=readonly)

    def serial_line(self, index: int, value: str) -> SerialLine:
        if value in ("", SERIAL_DAEMON):
            return SerialLine(index)  # as the original, no device: the daemon's own terminal
        fields = split_fields(value)  # ttysN="daemon" is a device of that name
        if len(fields) > 2:
            raise values.BadValue(
                f'too many fields: expected ttys{index}=DEVICE[,"MODE"] or ttys{index}=daemon '
                '(quote a MODE holding commas: "baud=9600,data=7")'
            )
        if fields[0] == "":
            raise values.BadValue("expected a host device (a tty or pty) before the MODE")
        if value.startswith(SERIAL_DAEMON + ","):
            raise values.BadValue('the daemon\'s line takes no MODE (quote "daemon" for a file)')
        mode = values.parse_serial_mode(fields[1]) if len(fields) == 2 else None
        return SerialLine(index, HostPath(fields[0]), mode)

    def network_card(self, index: int, value: str) -> NetworkCard:
        kind_text, *fields = split_fields(value)
        kind = values.parse_cmdline_network_type(kind_text)
        slots = {NetworkType.SLIRP: 2, NetworkType.TAP: 2, NetworkType.BRIDGED: 3}[kind]
        if len(fields) > slots:
            raise values.BadValue(f"too many fields: expected eth{index}={_NETWORK_SYNTAX[kind]}")
        fields += [""] * (slots - len(fields))
        if kind == NetworkType.SLIRP:
            mac_text, redirections = fields
            return NetworkCard(
                index,
                kind,
                mac=values.parse_mac(mac_text) if mac_text else None,
                redirections=values.parse_redirections(redirections),
            )
        name = fields[0] or None
        mac_text = fields[1]
        promisc = True
        if kind == NetworkType.BRIDGED and fields[2]:
            if fields[2].lower() not in ("promisc", "nopromisc"):
                raise values.BadValue(
                    f"expected promisc or nopromisc, not {fields[2]!r} "
                    f"(eth{index}={_NETWORK_SYNTAX[kind]})"
                )
            promisc = fields[2].lower() == "promisc"
        return NetworkCard(
            index,
            kind,
            name=name,
            mac=values.parse_mac(mac_text) if mac_text else None,
            promisc=promisc,
        )

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
        if self.cpus == 1 or self.userspace != Userspace.PTRACE:
            return
        problem = "more than one CPU needs the seccomp userspace (userspace=ptrace runs one CPU)"
        if self.cpus_word is not None:
            raise self.fail(self.cpus_word, problem)
        where = f" ({self.base_source})" if self.base_source else ""
        word = self.userspace_word or (f"userspace={self.userspace}", None)
        raise self.fail(word, f"cpus={self.cpus}{where}: {problem}")

    def machine(self) -> Machine:
        self.resolve_aliases()
        self.check_cpus()
        return Machine(
            kernel=self.kernel,
            memory_mb=self.memory_mb,
            cpus=self.cpus,
            userspace=self.userspace,
            initrd=self.initrd,
            bootparams=tuple(self.bootparams),
            block_devices=tuple(self.block[i] for i in sorted(self.block)),
            cofs=tuple(self.cofs[i] for i in sorted(self.cofs)),
            networks=tuple(self.networks[i] for i in sorted(self.networks)),
            serials=tuple(self.serials[i] for i in sorted(self.serials)),
            source=self.base_source,
        )


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


def parse_cmdline_text(text: str, *, source: str, base_dir: str) -> Machine:
    """A key=value file's text as a Machine; messages name "SOURCE:LINE"."""
    words = expand_words(tokenize(text, source), base_dir=base_dir, source=source)
    return parse_words(words, source=source)


# --- writing ---------------------------------------------------------------------------


def write_cmdline(machine: Machine) -> list[str]:
    """The machine as key=value words, in the seed's order.

    Raw paths are written (not resolved host paths). Disabled devices are left
    out: the command line has no way to say "disabled". ``kernel=`` is left out
    when ``machine.kernel`` is None (the engine's kernel), and ``cpus=`` and
    ``userspace=`` at their defaults, so a machine that does not set them is
    written as coLinux 0.6 would have. Raises ``UserError``
    for a boot parameter that would read back as a colinux setting (such as
    ``mem=64`` or ``@file``).
    """
    words: list[str] = []
    if machine.kernel is not None:
        words.append(f"kernel={_single_quote(machine.kernel.raw)}")
    words.append(f"mem={machine.memory_mb}")
    if machine.cpus != DEFAULT_CPUS:
        words.append(f"cpus={machine.cpus}")
    if machine.userspace != Userspace.AUTO:
        words.append(f"userspace={machine.userspace.value}")
    for device in machine.enabled_block_devices():
        words.append(f"cobd{device.index}={_disk_value(device)}")
        if device.alias is not None:
            words.append(f"{device.alias}=:cobd{device.index}")
    for share in sorted(machine.cofs, key=lambda s: s.index):
        if not share.enabled:
            continue
        word = f"cofs{share.index}={quote_field(share.path.raw)}"
        if share.type != CofsType.FLAT:
            word += f",{share.type.value}"
        if share.readonly:
            word += ",ro"
        words.append(word)
    for param in machine.bootparams:
        if setting_key(param) is not None or param.startswith("@"):
            raise UserError(
                f"boot parameter {param!r} cannot be written on a command line: "
                "colinux would read it as its own setting"
            )
        words.append(param)
    if machine.initrd is not None:
        words.append(f"initrd={_single_quote(machine.initrd.raw)}")
    for card in sorted(machine.networks, key=lambda c: c.index):
        words.append(f"eth{card.index}={_network_value(card)}")
    for line in sorted(machine.serials, key=lambda s: s.index):
        if line.device is None:
            words.append(f"ttys{line.index}={SERIAL_DAEMON}")
            continue
        # A device literally named "daemon" is quoted, so as not to read back as the keyword.
        value = quote_field(line.device.raw, always=line.device.raw == SERIAL_DAEMON)
        if line.mode is not None:
            value += f",{quote_field(line.mode, always=True)}"  # MODE quoted, as the original
        words.append(f"ttys{line.index}={value}")
    return words


def _is_disk_option(option: str) -> bool:
    return option.lower() in ("ro", "rw") or option.lower().startswith("cow=")


def _disk_value(device: BlockDevice) -> str:
    raw = device.path.raw
    if not device.readonly and device.cow is None:
        # Quoted only when needed to read back as one path.
        parts = raw.split(",")
        plain = len(parts) == 1 or not all(_is_disk_option(p) for p in parts[1:])
        return _single_quote(raw) if plain else quote_field(raw, always=True)
    options = (["ro"] if device.readonly else []) + (
        [quote_field("cow=" + device.cow.raw)] if device.cow is not None else []
    )
    # A quoted path makes the reader split the fields honouring quotes; an
    # unquoted one is split on every comma, which only plain fields survive.
    plain = not any("," in f or '"' in f for f in [raw, *options])
    return ",".join([raw if plain else quote_field(raw, always=True), *options])


def _network_value(card: NetworkCard) -> str:
    mac = card.mac or ""
    if card.type == NetworkType.SLIRP:
        fields = ["slirp", mac, values.format_redirections(card.redirections)]
    else:
        # NAME always quoted, as in the seed: eth0=tuntap,"TAP-Win32"
        name = quote_field(card.name, always=True) if card.name is not None else ""
        fields = [card.type.cmdline_name, name, mac]
        if card.type == NetworkType.BRIDGED and not card.promisc:
            fields.append("nopromisc")
    while len(fields) > 1 and fields[-1] == "":
        fields.pop()
    return ",".join(fields)


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
        and match.group(1) in ("cofs", "eth", "ttys")  # the keys split_fields reads
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
