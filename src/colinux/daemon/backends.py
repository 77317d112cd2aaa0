"""Device backends: host processes or tasks that serve a guest's devices.

A cofs share is served by our FUSE-over-vhost-user server, a network card by
a user-mode network stack or a TAP device. Each is a ``Backend``: started by
the daemon before the engine, it says through a ``Wiring`` how the engine
reaches it (kernel arguments, sockets to bind into the sandbox, descriptors
to inherit), and it is stopped after the engine has ended. Backends live as
long as the daemon: a guest that reboots gets a new engine, the same backends.

    backends = backends_for(machine, state_dir=...)
    wiring = sum((await b.start() for b in backends), Wiring())
"""

from __future__ import annotations

import abc
from pathlib import Path

from colinux.config.model import Machine
from colinux.engine.base import Wiring
from colinux.errors import UserError


class Backend(abc.ABC):
    @abc.abstractmethod
    async def start(self) -> Wiring:
        """Start serving; how the engine reaches this backend."""

    async def engine_started(self, pid: int) -> None:
        """The engine (each boot's new one) runs as ``pid``; a backend that must
        join its namespaces does it here, before the guest needs the device."""
        return None  # most backends need nothing of the engine's process

    @abc.abstractmethod
    async def stop(self) -> None:
        """Stop serving and release everything (processes, sockets, devices)."""


def backends_for(machine: Machine, *, name: str, state_dir: Path) -> list[Backend]:
    """The backends the machine's devices need, in start order."""
    from colinux.cofs.backend import CofsBackend  # imports this module: import late
    from colinux.image.locks import DiskLocks

    # Disks first: a locked image stops the boot before anything else starts.
    backends: list[Backend] = [DiskLocks(machine)] if machine.enabled_block_devices() else []
    backends += [CofsBackend(s, state_dir=state_dir) for s in machine.cofs if s.enabled]
    from colinux.config.model import NetworkType
    from colinux.net.slirp import SlirpNetwork
    from colinux.net.tap import HostNetwork

    slirp_cards = [c for c in machine.networks if c.type == NetworkType.SLIRP]
    host_cards = [c for c in machine.networks if c.type != NetworkType.SLIRP]
    if slirp_cards and host_cards:
        # slirp runs the engine in a network namespace of its own, tuntap and
        # pcap-bridge need the host's: one engine cannot be in both.
        raise UserError(
            f"eth{slirp_cards[0].index}=slirp and eth{host_cards[0].index}="
            f"{host_cards[0].type.cmdline_name} cannot be used together (yet)"
        )
    if slirp_cards:
        backends.append(SlirpNetwork(slirp_cards, guest=name, state_dir=state_dir))
    if host_cards:
        backends.append(HostNetwork(host_cards, guest=name))
    return backends
