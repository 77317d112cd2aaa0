"""Host file locks on disk images: one writer per image, checked before boot.

The daemon holds a BSD ``flock`` on every image its guest opens for as long
as it runs: exclusive on an image the guest may write (a plain cobd image, a
COW file), shared on one it only reads (``ro``, the base under a COW file).
So two guests on one base are fine, and a second guest wanting to write an
image in use is refused in one line that names the guest holding it.
``flock`` locks are independent of the ``fcntl`` locks UML takes itself on
the same files, so the two never collide::

    with locked_images([("/srv/root.img", True)], label="cobd0"):
        ...  # UserError if another guest holds it
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from colinux.config.model import Machine
from colinux.control.rundir import list_guests
from colinux.engine.backend import Backend
from colinux.engine.base import Wiring
from colinux.errors import UserError


def _holder(fd: int) -> str:
    """Who holds a flock on the file behind ``fd``: "guest 'web' (pid 123)", if we can tell."""
    st = os.fstat(fd)
    wanted = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return "another guest"
    for line in lines:
        fields = line.split()
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == wanted:
            pid = int(fields[4])
            if pid == os.getpid():
                return "this guest (given twice)"
            return f"guest '{_guest_name(pid)}' (daemon pid {pid})"
    return "another guest"


def _guest_name(pid: int) -> str:
    # The daemon's run directory says which guest it serves (its pid is in
    # daemon.json once the engine runs); before that, its command line may.
    with contextlib.suppress(OSError):
        for gdir in list_guests():
            if gdir.read_info().get("pid") == pid:
                return gdir.name
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return "?"
    if "--name" in argv[:-1]:
        return argv[argv.index("--name") + 1]
    if "run" in argv:  # `colinux run` names its guest after its pid
        return f"run-{pid}"
    return "colinux"


def lock_image(path: str, *, write: bool, label: str) -> int:
    """An fd holding the lock on ``path``; UserError if another guest conflicts."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as error:
        raise UserError(f"{label}: image '{path}': {error.strerror}") from None
    try:
        fcntl.flock(fd, (fcntl.LOCK_EX if write else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(fd)
        os.close(fd)
        how = "written" if write else "read"
        raise UserError(
            f"{label}: image '{path}' is in use by {holder}; it cannot be {how} by two "
            "guests at once (use ro, or cow=FILE to share a base)"
        ) from None
    return fd


@contextlib.contextmanager
def locked_images(images: Sequence[tuple[str, bool]], *, label: str) -> Iterator[None]:
    fds: list[int] = []
    try:
        for path, write in images:
            fds.append(lock_image(path, write=write, label=label))
        yield
    finally:
        for fd in fds:
            os.close(fd)


def machine_images(machine: Machine) -> list[tuple[str, bool, str]]:
    """(host path, opened for writing, label) of each image the guest opens."""
    out = []
    for device in machine.enabled_block_devices():
        label = f"cobd{device.index}"
        assert device.path.host is not None
        if device.cow is not None:
            assert device.cow.host is not None
            out.append((device.cow.host, True, label))
            out.append((device.path.host, False, label))
        else:
            out.append((device.path.host, not device.readonly, label))
    return out


class DiskLocks(Backend):
    """Makes missing COW files and holds the guest's image locks while it runs."""

    def __init__(self, machine: Machine) -> None:
        self.machine = machine
        self.fds: list[int] = []

    async def start(self) -> Wiring:
        from colinux.formats.cow import create_cow

        created: list[str] = []
        try:
            for device in self.machine.enabled_block_devices():
                cow = device.cow.host if device.cow is not None else None
                if cow is not None and not os.path.exists(cow):
                    assert device.path.host is not None
                    create_cow(cow, device.path.host)
                    created.append(cow)
            for path, write, label in machine_images(self.machine):
                self.fds.append(lock_image(path, write=write, label=label))
        except BaseException:
            await self.stop()
            for path in created:
                with contextlib.suppress(OSError):
                    os.unlink(path)
            raise
        return Wiring()

    def describe(self) -> dict[str, object]:
        devices = self.machine.enabled_block_devices()
        return {"disks": ",".join(f"cobd{d.index}={d.path.host}" for d in devices)}

    async def stop(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds = []
