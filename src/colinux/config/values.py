"""The values both configuration forms share: one parser and one writer per value.

The XML form (``config.xml``) and the key=value command line (``config.cmdline``)
spell their settings differently but hold the same values: indexes, sizes,
booleans, CPU counts, MAC addresses, slirp redirections, block-device aliases. Each value
is parsed and written here, once, so the two forms cannot drift apart::

    parse_index("3")                  # 3
    parse_memory("128M")              # 128
    parse_cpus("2")                   # 2
    parse_userspace("ptrace")         # Userspace.PTRACE
    parse_mac("00:FF:12:34:56:78")    # "00:ff:12:34:56:78"
    parse_redirections("tcp:2222:22") # (Redirection("tcp", 2222, 22),)
    parse_redirections("tcp:0.0.0.0:2222:22")  # the same, on every interface

A parser raises ``BadValue`` whose message says what was expected (no
location); the reader that called it adds the file, line or word and turns it
into a ``UserError``.
"""

from __future__ import annotations

import ipaddress
import re

from colinux.config.model import (
    MAX_CPUS,
    MAX_INDEX,
    CofsType,
    HostPath,
    NetworkType,
    Redirection,
    Userspace,
)

DEFAULT_REDIRECT_ADDRESS = Redirection("tcp", 1, 1).address

# No cap below 1 GB (the original's limit), but a sane ceiling so a typo such as
# mem=1280000000 is caught here rather than by the host's memory allocator.
MAX_MEMORY_MB = 1024 * 1024  # 1 TiB

# Guest names for a block device, as in coLinux: hda1, hdb, sda2...
ALIAS_PATTERN = re.compile(r"(?:hd|sd)[a-z][0-9]*", re.ASCII)

# The command-line spellings of the network types (NetworkType.cmdline_name), and
# the XML ones too: harmless, and it spares a user who copies type="tap" from an
# XML file a confusing error.
CMDLINE_NETWORK_TYPES = {kind.cmdline_name: kind for kind in NetworkType} | {
    kind.value: kind for kind in NetworkType
}

_DIGITS = re.compile(r"[0-9]+", re.ASCII)
_MEMORY = re.compile(r"([0-9]+)([mMgG]?)", re.ASCII)
_MAC = re.compile(r"[0-9a-fA-F]{2}([:-])[0-9a-fA-F]{2}(?:\1[0-9a-fA-F]{2}){4}", re.ASCII)


class BadValue(ValueError):
    """A value that does not parse; the message says what was expected."""


def _small_int(text: str) -> int | None:
    """``int(text)`` for plain decimal digits, None for anything else.

    Guards against int()'s acceptance of "+1", " 1", "1_000" and non-ASCII
    digits, and against its error on numbers over 4300 digits long: such
    numbers are simply "too large" for every value here.
    """
    if not _DIGITS.fullmatch(text):
        return None
    stripped = text.lstrip("0") or "0"
    if len(stripped) > 18:
        return 10**18
    return int(stripped)


def parse_index(text: str, maximum: int = MAX_INDEX) -> int:
    """A device index such as the 3 of cobd3: 0..maximum."""
    number = _small_int(text)
    if number is None:
        raise BadValue(f"expected an index from 0 to {maximum}")
    if number > maximum:
        raise BadValue(f"index {text} is out of range (0..{maximum})")
    return number


def parse_path(text: str) -> HostPath:
    """A path as the user wrote it; ``config.paths`` gives it a host meaning."""
    if text == "":
        raise BadValue("expected a path")
    return HostPath(text)


def format_path(path: HostPath) -> str:
    return path.raw  # as written, so the file means the same wherever it is read


def parse_bool(text: str) -> bool:
    """XML's ``true``/``false`` (any case)."""
    lowered = text.lower()
    if lowered == "true":
        return True
    if lowered == "false":
        return False
    raise BadValue("expected true or false")


def format_bool(value: bool) -> str:
    return "true" if value else "false"


def parse_memory(text: str) -> int:
    """Guest memory in megabytes: ``128``, ``128M`` or ``2G``."""
    match = _MEMORY.fullmatch(text)
    number = _small_int(match.group(1)) if match else None
    if match is None or number is None:
        raise BadValue("expected a size in megabytes")
    if match.group(2) in ("g", "G"):
        number *= 1024
    if number < 1:
        raise BadValue("expected a size in megabytes of at least 1")
    if number > MAX_MEMORY_MB:
        raise BadValue(f"expected a size in megabytes of at most {MAX_MEMORY_MB} (1 TiB)")
    return number


def parse_cpus(text: str) -> int:
    """The number of guest CPUs: 1..MAX_CPUS."""
    number = _small_int(text)
    if number is None or not 1 <= number <= MAX_CPUS:
        raise BadValue(f"expected a whole number of CPUs from 1 to {MAX_CPUS}")
    return number


def parse_userspace(text: str) -> Userspace:
    try:
        return Userspace(text.lower())
    except ValueError:
        raise BadValue("expected auto, seccomp or ptrace") from None


def cpus_need_seccomp(cpus: int, userspace: Userspace) -> bool:
    """Whether ``cpus`` and ``userspace`` clash: UML's ptrace mode runs one CPU.

    The one rule both readers apply once a machine is read (the two values may
    come from different words, files, or a base the words override).
    """
    return cpus > 1 and userspace == Userspace.PTRACE


def parse_mac(text: str) -> str:
    """A unicast MAC address, returned lower case with colons."""
    if not _MAC.fullmatch(text):
        raise BadValue("expected a MAC address such as 00:ff:12:34:56:78")
    mac = text.lower().replace("-", ":")
    if int(mac[:2], 16) & 1:
        raise BadValue("a network card needs a unicast MAC address (an even first byte)")
    return mac


def _port(text: str, what: str) -> int:
    number = _small_int(text)
    if number is None or not 1 <= number <= 65535:
        raise BadValue(f"{what} {text!r} is not a port number (1..65535)")
    return number


def parse_redirection(text: str) -> Redirection:
    """One slirp redirection: ``tcp|udp:[ADDRESS:]HOSTPORT:GUESTPORT[:COUNT]``.

    ADDRESS (IPv4, so it has dots where a port has none) is where the host
    listens: 127.0.0.1 unless given; ``0.0.0.0`` is every interface.
    """
    parts = text.split(":")
    address = DEFAULT_REDIRECT_ADDRESS
    if len(parts) > 1 and "." in parts[1]:
        try:
            address = str(ipaddress.IPv4Address(parts[1]))
        except ValueError:
            raise BadValue(
                f"redirection {text!r}: {parts[1]!r} is not an IPv4 address such as 0.0.0.0"
            ) from None
        del parts[1]
    if len(parts) not in (3, 4) or parts[0].lower() not in ("tcp", "udp"):
        raise BadValue(
            f"redirection {text!r}: expected tcp|udp:[ADDRESS:]HOSTPORT:GUESTPORT[:COUNT], "
            "e.g. tcp:2222:22"
        )
    host_port = _port(parts[1], f"redirection {text!r}: host port")
    guest_port = _port(parts[2], f"redirection {text!r}: guest port")
    count = 1
    if len(parts) == 4:
        parsed = _small_int(parts[3])
        if parsed is None or parsed < 1:
            raise BadValue(f"redirection {text!r}: expected a COUNT of at least 1")
        count = parsed
    if max(host_port, guest_port) + count - 1 > 65535:
        raise BadValue(f"redirection {text!r}: the ports run past 65535")
    return Redirection(parts[0].lower(), host_port, guest_port, count, address)


def parse_redirections(text: str) -> tuple[Redirection, ...]:
    """Slirp redirections joined by ``/``; the empty text means none."""
    if text == "":
        return ()
    return tuple(parse_redirection(part) for part in text.split("/"))


def format_redirection(redirection: Redirection) -> str:
    text = f"{redirection.protocol}:"
    if redirection.address != DEFAULT_REDIRECT_ADDRESS:
        text += f"{redirection.address}:"
    text += f"{redirection.host_port}:{redirection.guest_port}"
    if redirection.count != 1:
        text += f":{redirection.count}"
    return text


def format_redirections(redirections: tuple[Redirection, ...]) -> str:
    return "/".join(format_redirection(r) for r in redirections)


def parse_alias(text: str) -> str:
    """A guest name for a block device: ``hd`` or ``sd``, a letter, digits."""
    if not ALIAS_PATTERN.fullmatch(text):
        raise BadValue("expected an alias such as hda1 or sdb2")
    return text


def parse_cofs_type(text: str) -> CofsType:
    try:
        return CofsType(text.lower())
    except ValueError:
        raise BadValue("expected flat or meta") from None


def parse_xml_network_type(text: str) -> NetworkType:
    try:
        return NetworkType(text.lower())
    except ValueError:
        raise BadValue("expected tap, bridged or slirp") from None


def parse_cmdline_network_type(text: str) -> NetworkType:
    try:
        return CMDLINE_NETWORK_TYPES[text.lower()]
    except KeyError:
        raise BadValue("expected tuntap, pcap-bridge or slirp") from None


def parse_promisc_flag(text: str) -> bool:
    """pcap-bridge's ``promisc``/``nopromisc`` field (XML: ``promisc="true|false"``)."""
    lowered = text.lower()
    if lowered not in ("promisc", "nopromisc"):
        raise BadValue(f"expected promisc or nopromisc, not {text!r}")
    return lowered == "promisc"


def format_promisc_flag(promisc: bool) -> str:
    return "" if promisc else "nopromisc"  # promisc is the default: an empty field


# A serial line's MODE, in the spirit of the Windows ``mode`` command the
# original took it from: ``baud=115200 parity=n data=8 stop=1 xon=off``.
SERIAL_BAUDS = (
    50, 75, 110, 134, 150, 200, 300, 600, 1200, 1800, 2400, 4800, 9600, 19200, 38400,
    57600, 115200, 230400, 460800, 500000, 576000, 921600, 1000000, 1152000, 1500000,
    2000000, 2500000, 3000000, 3500000, 4000000,
)  # fmt: skip
SERIAL_MODE_KEYS = {
    "baud": tuple(str(b) for b in SERIAL_BAUDS),
    "data": ("5", "6", "7", "8"),
    "parity": ("n", "e", "o"),
    "stop": ("1", "2"),
    "xon": ("on", "off"),
}


def parse_serial_mode(text: str) -> str:
    """A serial MODE, checked and normalized (lower case, keys in a fixed order)."""
    settings: dict[str, str] = {}
    for item in text.replace(",", " ").split():
        key, eq, value = item.lower().partition("=")
        if not eq or key not in SERIAL_MODE_KEYS:
            raise BadValue(
                f"{item!r}: expected KEY=VALUE with KEY one of "
                f'{", ".join(SERIAL_MODE_KEYS)} (e.g. "baud=115200 data=8 parity=n stop=1")'
            )
        if value not in SERIAL_MODE_KEYS[key]:
            allowed = SERIAL_MODE_KEYS[key]
            shown = f"{allowed[0]}..{allowed[-1]}" if len(allowed) > 5 else "|".join(allowed)
            raise BadValue(f"{item!r}: {key} is {shown}")
        if key in settings:
            raise BadValue(f"{key} is given twice")
        settings[key] = value
    if not settings:
        raise BadValue('an empty MODE: leave it out, or give e.g. "baud=115200"')
    return " ".join(f"{k}={settings[k]}" for k in SERIAL_MODE_KEYS if k in settings)


def serial_mode_settings(mode: str) -> dict[str, str]:
    """A normalized MODE as a dict, for the engine that applies it."""
    return dict(item.split("=", 1) for item in mode.split())
