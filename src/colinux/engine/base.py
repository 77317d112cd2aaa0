"""The small interface every cooperative engine offers the daemon.

An engine turns a resolved ``Machine`` into a running guest and hands back
the host ends of the guest's character channels. UML is the engine today;
QEMU will be another implementation of the same class::

    engine = create_engine(boot)      # UmlEngine(boot) today
    channels = await engine.start()
    ...                               # daemon serves channels.console etc.
    await engine.halt()               # clean halt without guest cooperation
    status = await engine.wait()
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field

from colinux.config.model import Machine


@dataclass(frozen=True)
class Wiring:
    """What device backends (cofs servers, network stacks) ask of the engine.

    Backends start before the engine and describe how to reach them; the
    engine adds it all to its process. Wirings add up with ``+``.
    """

    kernel_args: tuple[str, ...] = ()  # e.g. virtio_uml.device=SOCKET:26, vec0:transport=...
    # Kernel arguments for colinux's default guest only, whose init expects them
    # (e.g. ip=, the kernel numbering a slirp card); a user's own root may not.
    default_guest_args: tuple[str, ...] = ()
    binds: tuple[str, ...] = ()  # host paths the engine must see, at the same path, writable
    fds: tuple[int, ...] = ()  # host descriptors the engine process inherits
    share_net: bool = False  # keep the network namespace the engine is started in
    wrapper: tuple[str, ...] = ()  # a command that runs the sandbox (one per guest at most)
    # Capabilities the engine keeps in its network namespace (e.g. CAP_NET_RAW for
    # UML's vector transports). The sandbox then makes no user namespace of its
    # own, so it must start as uid 0: real root, or root of a wrapper's namespace.
    engine_caps: tuple[str, ...] = ()
    devices: tuple[str, ...] = ()  # host device nodes the engine opens (e.g. /dev/net/tun)

    def __add__(self, other: Wiring) -> Wiring:
        if self.wrapper and other.wrapper:
            raise ValueError("two backends both want to wrap the engine")
        return Wiring(
            kernel_args=self.kernel_args + other.kernel_args,
            default_guest_args=self.default_guest_args + other.default_guest_args,
            binds=self.binds + other.binds,
            fds=self.fds + other.fds,
            share_net=self.share_net or other.share_net,
            wrapper=self.wrapper or other.wrapper,
            engine_caps=tuple(dict.fromkeys(self.engine_caps + other.engine_caps)),
            devices=tuple(dict.fromkeys(self.devices + other.devices)),
        )


@dataclass(frozen=True)
class BootSpec:
    """What the daemon asks of an engine: the machine and how to present it."""

    machine: Machine  # resolved: every HostPath has .host
    name: str  # guest name; UML's umid
    state_dir: str  # private, writable directory for the engine's sockets
    initrd: str | None  # the user's initrd or the default guest's image
    default_guest: bool  # initrd is ours: its agent speaks on the agent channel
    quiet: bool = False  # hide kernel messages on the console (-k)
    extra_kernel_args: tuple[str, ...] = field(default=())
    wiring: Wiring = field(default_factory=Wiring)


@dataclass(frozen=True)
class ExecLines:
    """One exec slot (``colinux exec``): two guest lines and the host end of each."""

    io_device: str  # the guest's device of stdin and stdout (the terminal with -t): ttyS4
    io: int  # its host end, a socket the daemon owns
    err_device: str  # stderr's
    err: int


@dataclass(frozen=True)
class GuestChannels:
    """Host ends (file descriptors the daemon owns) of the guest's channels."""

    console: int  # the guest console (/dev/console): a pty master
    errors: int  # a second output-only line (/dev/tty14): job stderr
    agent: int  # the guest agent's line (/dev/tty15)
    # Serial lines the daemon serves: ttySN's index -> a pty master.
    serials: dict[int, int] = field(default_factory=dict)
    kmsg: int | None = None  # guest kernel messages, /dev/kmsg lines (the default guest)
    # A job's stdout in raw mode (/dev/tty12): a socket, which carries bulk output
    # far faster than the console's pty does.
    output: int | None = None
    exec_slots: tuple[ExecLines, ...] = ()  # lines the guest agent runs exec sessions on


class Engine(abc.ABC):
    """One guest's engine process."""

    spec: BootSpec  # what it was asked to boot
    kernel: str  # the host path of the guest kernel it runs

    @property
    @abc.abstractmethod
    def pid(self) -> int | None:
        """Host pid of the engine's outermost process, once started."""

    @abc.abstractmethod
    async def start(self) -> GuestChannels:
        """Start the guest; return the host ends of its channels."""

    @abc.abstractmethod
    async def wait(self) -> int:
        """Wait for the engine to end; its exit status (0 after a guest power-off)."""

    @abc.abstractmethod
    async def halt(self) -> None:
        """Flush the guest's disks and halt it without its cooperation."""

    @abc.abstractmethod
    async def ctrl_alt_del(self) -> None:
        """Send the guest Ctrl-Alt-Del."""

    @abc.abstractmethod
    def kill(self) -> None:
        """End every host process of the guest now."""

    @abc.abstractmethod
    def kernel_version(self) -> str:
        """The guest kernel's release, e.g. 6.1.176."""

    @abc.abstractmethod
    def log_tail(self, limit: int = 2000) -> str:
        """The last ``limit`` bytes the engine process wrote of its own (not the
        guest's console): what a failure message quotes."""


def create_engine(spec: BootSpec) -> Engine:
    """The engine that boots ``spec``: the daemon's one way to get one, so another
    engine (QEMU) is chosen here and the daemon stays as it is."""
    # Imported here: the implementations import this module for its interface.
    from colinux.engine.uml import UmlEngine

    return UmlEngine(spec)
