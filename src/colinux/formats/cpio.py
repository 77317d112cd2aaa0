"""A writer for the cpio "newc" format, the format the kernel unpacks as an initramfs.

Pure functions over bytes, so the guest image can be built without the
``cpio`` program and tested byte for byte::

    archive = CpioArchive()
    archive.add_dir("bin")
    archive.add_file("bin/busybox", data, mode=0o755)
    archive.add_symlink("bin/sh", "busybox")
    image = archive.to_bytes()
"""

from __future__ import annotations

import stat
from dataclasses import dataclass

MAGIC = b"070701"
TRAILER = "TRAILER!!!"


@dataclass(frozen=True)
class CpioEntry:
    name: str
    mode: int  # full st_mode: type and permission bits
    data: bytes = b""
    uid: int = 0
    gid: int = 0
    mtime: int = 0
    rdev_major: int = 0
    rdev_minor: int = 0


def _pad4(length: int) -> bytes:
    return b"\0" * (-length % 4)


def encode_entry(entry: CpioEntry, ino: int) -> bytes:
    """One newc header, name and data, each padded to a multiple of four bytes."""
    name = entry.name.encode() + b"\0"
    fields = (
        ino,
        entry.mode,
        entry.uid,
        entry.gid,
        1,  # nlink
        entry.mtime,
        len(entry.data),
        0,  # devmajor
        0,  # devminor
        entry.rdev_major,
        entry.rdev_minor,
        len(name),
        0,  # check
    )
    header = MAGIC + b"".join(b"%08x" % f for f in fields)
    head = header + name
    return head + _pad4(len(head)) + entry.data + _pad4(len(entry.data))


def decode(archive: bytes) -> list[CpioEntry]:
    """Read a newc archive back (for tests and for checking images we built)."""
    entries: list[CpioEntry] = []
    pos = 0
    while True:
        if archive[pos : pos + 6] != MAGIC:
            raise ValueError(f"bad cpio magic at offset {pos}")
        fields = [int(archive[pos + 6 + 8 * i : pos + 14 + 8 * i], 16) for i in range(13)]
        namesize, filesize = fields[11], fields[6]
        name_start = pos + 110
        name = archive[name_start : name_start + namesize - 1].decode()
        data_start = name_start + namesize
        data_start += -data_start % 4
        data = archive[data_start : data_start + filesize]
        pos = data_start + filesize
        pos += -pos % 4
        if name == TRAILER:
            return entries
        entries.append(
            CpioEntry(
                name=name,
                mode=fields[1],
                data=data,
                uid=fields[2],
                gid=fields[3],
                mtime=fields[5],
                rdev_major=fields[9],
                rdev_minor=fields[10],
            )
        )


class CpioArchive:
    """Entries in order; directories must be added before what they hold."""

    def __init__(self) -> None:
        self.entries: list[CpioEntry] = []

    def add(self, entry: CpioEntry) -> None:
        if entry.name == TRAILER:  # it would end the archive early
            raise ValueError(f"a cpio entry cannot be named {TRAILER}")
        self.entries.append(entry)

    def add_dir(self, name: str, mode: int = 0o755) -> None:
        self.add(CpioEntry(name, stat.S_IFDIR | mode))

    def add_file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self.add(CpioEntry(name, stat.S_IFREG | mode, data))

    def add_symlink(self, name: str, target: str) -> None:
        self.add(CpioEntry(name, stat.S_IFLNK | 0o777, target.encode()))

    def add_char_device(self, name: str, major: int, minor: int, mode: int = 0o600) -> None:
        self.add(CpioEntry(name, stat.S_IFCHR | mode, rdev_major=major, rdev_minor=minor))

    def to_bytes(self) -> bytes:
        parts = [encode_entry(e, ino) for ino, e in enumerate(self.entries, start=1)]
        parts.append(encode_entry(CpioEntry(TRAILER, 0), 0))
        out = b"".join(parts)
        return out + _pad4(len(out))
