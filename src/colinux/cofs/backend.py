"""The daemon's side of a cofs share: a ``Backend`` that runs its server.

One ``CofsBackend`` per enabled share. It listens on ``cofsN.sock`` in the
engine's state directory (which the sandbox already shows the engine) and
asks UML for a virtio-fs device on it, tagged ``cofsN``::

    backend = CofsBackend(share, state_dir=Path(...))
    wiring = await backend.start()   # virtio_uml.device=.../cofs0.sock:26
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from pathlib import Path

from colinux.cofs import meta
from colinux.cofs.server import VIRTIO_ID_FS, CofsServer
from colinux.config.model import CofsShare, CofsType, HostPath, Machine
from colinux.engine.backend import Backend
from colinux.engine.base import Wiring
from colinux.errors import ColinuxError

log = logging.getLogger("colinux.cofs")


def share_tag(index: int) -> str:
    """The virtio-fs tag of share N, which the guest's mount.cofs mounts."""
    return f"cofs{index}"


class CofsBackend(Backend):
    def __init__(self, share: CofsShare, *, state_dir: Path) -> None:
        if share.path.host is None:
            raise ColinuxError(f"cofs{share.index}: the share's host path is not resolved")
        self.share = share
        self.socket_path = str(state_dir / f"cofs{share.index}.sock")
        self.server = CofsServer(
            self.socket_path,
            share.path.host,
            tag=share_tag(share.index),
            readonly=share.readonly,
            meta=share.type == CofsType.META,
        )

    async def start(self) -> Wiring:
        host = self.share.path.host
        if self.share.type == CofsType.META and host and not meta.supported(host):
            raise ColinuxError(
                f"cofs{self.share.index}: {host}: meta mode keeps its metadata in extended "
                "attributes, which this host file system does not support",
                hint="use a directory on ext4, xfs, btrfs or tmpfs, or type flat",
            )
        try:
            self.server.start()
        except OSError as e:
            raise ColinuxError(f"cofs{self.share.index}: {self.share.path.host}: {e}") from e
        return Wiring(kernel_args=(f"virtio_uml.device={self.socket_path}:{VIRTIO_ID_FS}",))

    def describe(self) -> dict[str, object]:
        share = self.share
        return {"share": f"cofs{share.index}", "path": share.path.host, "mode": share.type.value}

    async def stop(self) -> None:
        await asyncio.to_thread(self.server.stop)


DEFAULT_MOUNT = "/mnt/cofs0"


def share_current_directory(machine: Machine, cwd: str) -> tuple[Machine, tuple[str, ...]]:
    """``colinux run``'s default: ``cwd`` as cofs0, mounted at /mnt/cofs0, the job's cwd.

    Returns the machine with the share added and the kernel arguments that
    make the default guest mount it; unchanged when cofs0 is already set, or
    when we may not read the directory (a default must not stop the boot).
    """
    if any(s.index == 0 for s in machine.cofs):
        return machine, ()
    if not os.access(cwd, os.R_OK | os.X_OK):
        log.warning("not sharing %s as cofs0: it is not readable", cwd)
        return machine, ()
    share = CofsShare(index=0, path=HostPath(cwd, cwd))
    machine = dataclasses.replace(machine, cofs=(share, *machine.cofs))
    return machine, (f"colinux.cofs=0:{DEFAULT_MOUNT}", f"colinux.cwd={DEFAULT_MOUNT}")
