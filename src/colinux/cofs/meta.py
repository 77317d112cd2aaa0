"""Meta mode's on-disk format: UNIX metadata kept in one extended attribute.

A meta share keeps, for every file the guest made or changed, the UNIX
attributes the host file system cannot hold for it (the host file belongs to
whoever runs colinux) in the extended attribute ``user.cofs.meta`` of the
host file. An attribute travels with its inode, so it survives renames and
hard links, and it is invisible in the guest (cofs serves no host xattrs).

Value (24 bytes, little-endian)::

    offset size  field
    0      4     magic b"cfs1"
    4      4     st_mode: the file type and permission bits the guest sees
    8      4     uid
    12     4     gid
    16     8     rdev (device nodes), as the Linux kernel encodes dev_t

Types the host cannot (or, unprivileged, may not) create are stored as
regular host files: a symlink is a file holding its target, a device node,
FIFO or socket an empty file; ``st_mode`` says what the guest sees. A host
file without the attribute shows its host mode, owned by root; so a file or
directory the guest makes as root with the mode the host gave it gets none.
"""

from __future__ import annotations

import errno
import os
import struct
from dataclasses import dataclass

XATTR = "user.cofs.meta"
MAGIC = b"cfs1"
FORMAT = struct.Struct("<4sIIIQ")


@dataclass(frozen=True)
class Meta:
    mode: int
    uid: int
    gid: int
    rdev: int = 0


def encode(meta: Meta) -> bytes:
    return FORMAT.pack(MAGIC, meta.mode, meta.uid, meta.gid, meta.rdev)


def decode(value: bytes) -> Meta | None:
    """The metadata, or None if ``value`` is not ours (then the host's attributes apply)."""
    if len(value) != FORMAT.size:
        return None
    magic, mode, uid, gid, rdev = FORMAT.unpack(value)
    return Meta(mode, uid, gid, rdev) if magic == MAGIC else None


def read(path: str | int) -> Meta | None:
    """A path, or a descriptor that is not ``O_PATH`` (the kernel refuses those)."""
    try:
        return decode(os.getxattr(path, XATTR))
    except OSError as e:
        if e.errno in (errno.ENODATA, errno.ENOTSUP, errno.EPERM, errno.ENOENT):
            return None
        raise


def write(path: str | int, meta: Meta) -> None:
    try:
        os.setxattr(path, XATTR, encode(meta))
    except OSError as e:
        if e.errno == errno.ENOTSUP:
            raise OSError(errno.EPERM, "the host file system keeps no extended attributes") from e
        raise


def supported(directory: str) -> bool:
    """Whether ``directory``'s file system takes ``user.`` extended attributes."""
    try:
        os.getxattr(directory, XATTR)
    except OSError as e:
        return e.errno != errno.ENOTSUP
    return True
