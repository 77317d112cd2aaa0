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
import asyncio
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from colinux.config.model import Machine, NetworkCard
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

    def describe(self) -> dict[str, object]:
        """What this backend serves, as fields of its debug events."""
        return {}


def backend_log(backend: Backend) -> logging.Logger:
    """The logger of a backend's component (colinux.net.slirp: net, colinux.cofs: cofs,
    colinux.image.locks: image), so the debug collector files its events under it."""
    return logging.getLogger(type(backend).__module__)


def event_fields(backend: Backend, wiring: Wiring) -> dict[str, object]:
    """A backend's debug-event fields: what it serves and how the engine reaches it."""
    fields: dict[str, object] = {"backend": type(backend).__name__, **backend.describe()}
    if wiring.kernel_args:
        fields["kernel_args"] = " ".join(wiring.kernel_args)
    return fields


def network_fields(
    cards: Sequence[NetworkCard], processes: Sequence[asyncio.subprocess.Process] = ()
) -> dict[str, object]:
    """A network backend's ``describe()``: its cards and the helpers it runs for them."""
    fields: dict[str, object] = {"cards": ",".join(f"eth{c.index}={c.type.value}" for c in cards)}
    if processes:
        fields["pids"] = ",".join(str(p.pid) for p in processes)
    return fields


def backends_for(machine: Machine, *, name: str, state_dir: Path) -> list[Backend]:
    """The backends the machine's devices need, in start order."""
    from colinux.cofs.backend import CofsBackend  # imports this module: import late
    from colinux.image.locks import DiskLocks

    # Disks first: a locked image stops the boot before anything else starts.
    backends: list[Backend] = [DiskLocks(machine)] if machine.enabled_block_devices() else []
    backends += [CofsBackend(s, state_dir=state_dir) for s in machine.cofs if s.enabled]
    from colinux.config.model import NetworkType
    from colinux.net.passt import PasstNetwork
    from colinux.net.slirp import SlirpNetwork
    from colinux.net.tap import HostNetwork

    slirp_cards = [c for c in machine.networks if c.type == NetworkType.SLIRP]
    host_cards = [c for c in machine.networks if c.type != NetworkType.SLIRP]
    if slirp_cards:
        if slirp_stack(with_host_cards=bool(host_cards)) == "passt":
            backends.append(PasstNetwork(slirp_cards, guest=name, state_dir=state_dir))
        else:
            backends.append(SlirpNetwork(slirp_cards, guest=name, state_dir=state_dir))
    if host_cards:
        backends.append(HostNetwork(host_cards, guest=name))
    return backends


SLIRP_STACKS = ("slirp4netns", "passt")


def slirp_stack(*, with_host_cards: bool) -> str:
    """Which user-mode stack serves slirp cards: ``COLINUX_SLIRP`` if set, else
    slirp4netns where this user may open /dev/net/tun and the engine may have a
    network namespace of its own (no tuntap or pcap-bridge card), else passt."""
    from colinux.net.slirp import tun_usable

    chosen = os.environ.get("COLINUX_SLIRP", "")
    if chosen and chosen not in SLIRP_STACKS:
        raise UserError(f"COLINUX_SLIRP={chosen!r}: must be one of {', '.join(SLIRP_STACKS)}")
    if chosen == "slirp4netns" and with_host_cards:
        raise UserError(
            "COLINUX_SLIRP=slirp4netns runs the engine in a network namespace of its own, "
            "and tuntap and pcap-bridge cards need the host's: use passt"
        )
    if chosen:
        return chosen
    return "slirp4netns" if tun_usable() and not with_host_cards else "passt"
