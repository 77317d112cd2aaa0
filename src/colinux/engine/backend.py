"""The interface of device backends: host processes or tasks that serve a guest's devices.

A cofs share is served by our FUSE-over-vhost-user server, a network card by
a user-mode network stack or a TAP device, the disks by the guest's image
locks. Each is a ``Backend``: started by the daemon before the engine, it says
through a ``Wiring`` how the engine reaches it (kernel arguments, sockets to
bind into the sandbox, descriptors to inherit), and it is stopped after the
engine has ended. Backends live as long as the daemon: a guest that reboots
gets a new engine, the same backends.

This module sits below both the backends (``cofs``, ``net``, ``image``) and the
daemon, which picks them (``daemon/backends.py``), so neither imports the other::

    class DiskLocks(Backend):
        async def start(self) -> Wiring: ...
        async def stop(self) -> None: ...
"""

from __future__ import annotations

import abc
import asyncio
import logging
from collections.abc import Sequence

from colinux.config.model import NetworkCard
from colinux.engine.base import Wiring


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
