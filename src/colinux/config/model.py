"""The machine model: the one thing config readers produce and engines consume.

A ``Machine`` is a frozen dataclass tree. The XML reader (``config.xml``) and
the command-line reader (``config.cmdline``) each build one; their writers
turn one back into text, and reading what a writer wrote gives an equal
``Machine``. Paths in a ``Machine`` are as the user wrote them (``raw``) and,
once resolved (``config.paths``), absolute host paths (``host``).

Run-time state (processes, sockets) never lives here.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum

MAX_INDEX = 31  # cobd0..cobd31, cofs0..cofs31 as in coLinux 0.6.2
MAX_NETWORK_INDEX = 31
MAX_SERIAL_INDEX = 3  # ttyS0..ttyS3, the PC's four serial ports
DEFAULT_KERNEL = "vmlinux"  # XML <image> default in the original
# coLinux 0.6 defaulted to 32 MB, but Debian's 6.1 UML kernel runs out of memory while
# it starts with less than about 56 (mostly at 32, sometimes at 48). Guest RAM is taken
# from the host on demand, so a larger floor costs nothing until the guest uses it.
MIN_MEMORY_MB = 64
DEFAULT_MEMORY_MB = 64
DEFAULT_CPUS = 1
# The guest kernel is built with NR_CPUS=8 (kernel/colinux.config): it cannot bring up
# more, so more is refused here rather than quietly ignored by the guest.
MAX_CPUS = 8


class CofsType(StrEnum):
    FLAT = "flat"
    META = "meta"


class Userspace(StrEnum):
    """How the UML engine runs guest processes; values are both forms' spellings.

    ``AUTO``: seccomp where the host allows it, else ptrace (fast where it can be).
    ``SECCOMP``: seccomp or fail, for a user who wants to know it is not ptrace.
    ``PTRACE``: every guest system call is trapped by ptrace; slower, but guest
    processes cannot reach guest kernel memory, for guests that run untrusted code.
    UML runs one CPU this way.
    """

    AUTO = "auto"
    SECCOMP = "seccomp"
    PTRACE = "ptrace"


class NetworkType(StrEnum):
    """Network card types; values are the XML spellings, ``cmdline_name`` the other form's."""

    TAP = "tap"
    BRIDGED = "bridged"
    SLIRP = "slirp"

    @property
    def cmdline_name(self) -> str:
        return _CMDLINE_NETWORK_NAMES[self]


_CMDLINE_NETWORK_NAMES = {
    NetworkType.TAP: "tuntap",
    NetworkType.BRIDGED: "pcap-bridge",
    NetworkType.SLIRP: "slirp",
}


@dataclass(frozen=True)
class HostPath:
    """A path as written by the user, and its host meaning once resolved.

    ``host`` is None until ``config.paths.resolve_machine`` has run.
    """

    raw: str
    host: str | None = None

    def __str__(self) -> str:
        return self.host if self.host is not None else self.raw


@dataclass(frozen=True)
class BlockDevice:
    """``cobdN=PATH[,ro][,cow=FILE]`` / ``<block_device index=N path=... alias=...
    enabled=... readonly=... cow=...>``.

    With ``cow``, ``path`` is a base image the guest only reads, and its writes
    go to the COW file (UML's ``ubdN=COW,BASE``), so many guests share a base.
    """

    index: int
    path: HostPath
    alias: str | None = None  # e.g. "hda1", "sdb2": a second guest name for the same disk
    enabled: bool = True
    readonly: bool = False
    cow: HostPath | None = None


@dataclass(frozen=True)
class CofsShare:
    """``cofsN=PATH[,flat|meta][,ro]`` / ``<cofs_device index=N path=... type=...>``."""

    index: int
    path: HostPath
    type: CofsType = CofsType.FLAT
    readonly: bool = False
    enabled: bool = True


@dataclass(frozen=True)
class Redirection:
    """A slirp port redirection ``tcp|udp:[ADDRESS:]HOSTPORT:GUESTPORT[:COUNT]``."""

    protocol: str  # "tcp" or "udp"
    host_port: int
    guest_port: int
    count: int = 1
    # The host address it listens on: loopback unless the user names another
    # (0.0.0.0 is every interface, as coLinux did).
    address: str = "127.0.0.1"


@dataclass(frozen=True)
class NetworkCard:
    """``ethN=TYPE,...`` / ``<network index=N type=... name=... mac=... redir=... promisc=...>``."""

    index: int
    type: NetworkType
    name: str | None = None  # host-side connection name (tap or bridged)
    mac: str | None = None  # "00:ff:12:34:56:78", lower case; None: chosen at start
    redirections: tuple[Redirection, ...] = ()  # slirp only
    promisc: bool = True  # bridged only


@dataclass(frozen=True)
class SerialLine:
    """``ttysN=DEVICE[,"MODE"]`` / ``ttysN=daemon`` / ``<serial index=N device=... mode=...>``.

    The guest's ``/dev/ttySN``. With a ``device`` (a host tty or pty) the line
    is connected to it, ``mode`` (``"baud=115200 data=8 parity=n stop=1"``,
    normalized by ``values.parse_serial_mode``) setting its line discipline;
    without one the daemon serves the line like the console
    (``colinux serial NAME N``).
    """

    index: int
    device: HostPath | None = None
    mode: str | None = None


@dataclass(frozen=True)
class Machine:
    """One cooperative guest, as configured.

    ``kernel`` None means the engine's own kernel (``/usr/bin/linux.uml``);
    ``initrd`` None with no root device means the embedded default guest.
    ``bootparams`` are words for the guest kernel command line, in order:
    the XML ``<bootparams>`` text split on spaces, or the command-line keys
    colinux does not know itself (``root=``, ``ro``, ``init=``...).
    ``cpus`` above 1 needs a seccomp userspace (``Userspace.PTRACE`` runs one
    CPU); the readers refuse a machine that asks for both.
    """

    kernel: HostPath | None = None
    memory_mb: int = DEFAULT_MEMORY_MB
    cpus: int = DEFAULT_CPUS
    userspace: Userspace = Userspace.AUTO
    initrd: HostPath | None = None
    bootparams: tuple[str, ...] = ()
    block_devices: tuple[BlockDevice, ...] = ()
    cofs: tuple[CofsShare, ...] = ()
    networks: tuple[NetworkCard, ...] = ()
    serials: tuple[SerialLine, ...] = ()
    source: str | None = field(default=None, compare=False)  # file it was read from, for messages

    def enabled_block_devices(self) -> tuple[BlockDevice, ...]:
        return tuple(sorted((d for d in self.block_devices if d.enabled), key=lambda d: d.index))

    def with_overrides(self, **changes: object) -> Machine:
        return replace(self, **changes)  # type: ignore[arg-type]
