"""FUSE wire format (protocol 7.31 subset): pure functions over bytes.

virtio-fs carries FUSE requests unchanged: each request is a ``fuse_in_header``
followed by its opcode's arguments; each reply a ``fuse_out_header`` followed
by the result. ``decode_request`` checks lengths and NUL-terminated names and
raises ``FuseProtocolError`` on anything malformed, so the file system layer
only ever sees well-formed values::

    req = decode_request(data)          # -> Request(header, args)
    if req.header.opcode == Opcode.LOOKUP: name = req.args.name
    reply = encode_reply(req.header.unique, encode_entry(...))
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from colinux.errors import ColinuxError

IN_HEADER = struct.Struct("<IIQQIIIHH")  # len opcode unique nodeid uid gid pid extlen pad
OUT_HEADER = struct.Struct("<IiQ")  # len error unique
ATTR = struct.Struct("<QQQQQQIIIIIIIIII")  # 88 bytes
KERNEL_VERSION = 7
KERNEL_MINOR = 31
NAME_MAX = 255


class Opcode(IntEnum):
    LOOKUP = 1
    FORGET = 2
    GETATTR = 3
    SETATTR = 4
    READLINK = 5
    SYMLINK = 6
    MKNOD = 8
    MKDIR = 9
    UNLINK = 10
    RMDIR = 11
    RENAME = 12
    LINK = 13
    OPEN = 14
    READ = 15
    WRITE = 16
    STATFS = 17
    RELEASE = 18
    FSYNC = 20
    SETXATTR = 21
    GETXATTR = 22
    LISTXATTR = 23
    REMOVEXATTR = 24
    FLUSH = 25
    INIT = 26
    OPENDIR = 27
    READDIR = 28
    RELEASEDIR = 29
    FSYNCDIR = 30
    GETLK = 31
    SETLK = 32
    SETLKW = 33
    ACCESS = 34
    CREATE = 35
    INTERRUPT = 36
    BMAP = 37
    DESTROY = 38
    IOCTL = 39
    POLL = 40
    BATCH_FORGET = 42
    FALLOCATE = 43
    READDIRPLUS = 44
    RENAME2 = 45
    LSEEK = 46
    COPY_FILE_RANGE = 47
    SYNCFS = 50


# FUSE_INIT flags we use.
INIT_ASYNC_READ = 1 << 0
INIT_ATOMIC_O_TRUNC = 1 << 3
INIT_BIG_WRITES = 1 << 5
INIT_AUTO_INVAL_DATA = 1 << 12
INIT_DO_READDIRPLUS = 1 << 13
INIT_READDIRPLUS_AUTO = 1 << 14
INIT_WRITEBACK_CACHE = 1 << 16
INIT_PARALLEL_DIROPS = 1 << 18
INIT_MAX_PAGES = 1 << 22

# fuse_open_out.open_flags
FOPEN_KEEP_CACHE = 1 << 1

# SETATTR valid bits.
FATTR_MODE = 1 << 0
FATTR_UID = 1 << 1
FATTR_GID = 1 << 2
FATTR_SIZE = 1 << 3
FATTR_ATIME = 1 << 4
FATTR_MTIME = 1 << 5
FATTR_FH = 1 << 6
FATTR_ATIME_NOW = 1 << 7
FATTR_MTIME_NOW = 1 << 8


class FuseProtocolError(ColinuxError):
    """A FUSE request that does not decode; answered with EINVAL when it can be."""


@dataclass(frozen=True)
class InHeader:
    length: int
    opcode: int
    unique: int
    nodeid: int
    uid: int
    gid: int
    pid: int


@dataclass(frozen=True)
class Request:
    header: InHeader
    args: Any  # one of the *In dataclasses below, or None


@dataclass(frozen=True)
class NameIn:  # LOOKUP, UNLINK, RMDIR
    name: bytes


@dataclass(frozen=True)
class ForgetIn:
    nlookup: int


@dataclass(frozen=True)
class BatchForgetIn:
    forgets: tuple[tuple[int, int], ...]  # (nodeid, nlookup)


@dataclass(frozen=True)
class GetattrIn:
    flags: int
    fh: int


@dataclass(frozen=True)
class SetattrIn:
    valid: int
    fh: int
    size: int
    atime: int
    mtime: int
    atimensec: int
    mtimensec: int
    mode: int
    uid: int
    gid: int


@dataclass(frozen=True)
class MknodIn:
    mode: int
    rdev: int
    umask: int
    name: bytes


@dataclass(frozen=True)
class MkdirIn:
    mode: int
    umask: int
    name: bytes


@dataclass(frozen=True)
class SymlinkIn:
    name: bytes
    target: bytes


@dataclass(frozen=True)
class RenameIn:
    newdir: int
    flags: int
    old: bytes
    new: bytes


@dataclass(frozen=True)
class LinkIn:
    oldnodeid: int
    name: bytes


@dataclass(frozen=True)
class OpenIn:
    flags: int


@dataclass(frozen=True)
class CreateIn:
    flags: int
    mode: int
    umask: int
    name: bytes


@dataclass(frozen=True)
class ReadIn:
    fh: int
    offset: int
    size: int


@dataclass(frozen=True)
class WriteIn:
    fh: int
    offset: int
    size: int
    data: bytes


@dataclass(frozen=True)
class FhIn:  # RELEASE, FLUSH, FSYNC, RELEASEDIR, FSYNCDIR
    fh: int
    flags: int


@dataclass(frozen=True)
class InitIn:
    major: int
    minor: int
    max_readahead: int
    flags: int


@dataclass(frozen=True)
class AccessIn:
    mask: int


@dataclass(frozen=True)
class FallocateIn:
    fh: int
    offset: int
    length: int
    mode: int


def _name(data: bytes) -> bytes:
    """One NUL-terminated file name, exactly filling ``data``."""
    if not data.endswith(b"\0"):
        raise FuseProtocolError("name without its NUL")
    name = data[:-1]
    _check_name(name)
    return name


def _check_name(name: bytes) -> None:
    if not name or len(name) > NAME_MAX or b"\0" in name or b"/" in name:
        raise FuseProtocolError(f"bad file name {name[:64]!r}")


def _two_names(data: bytes) -> tuple[bytes, bytes]:
    parts = data.split(b"\0")
    if len(parts) != 3 or parts[2] != b"":
        raise FuseProtocolError("expected two NUL-terminated names")
    return parts[0], parts[1]


def _need(data: bytes, size: int, what: str) -> None:
    if len(data) < size:
        raise FuseProtocolError(f"{what}: {len(data)} bytes, {size} needed")


def decode_header(data: bytes) -> InHeader:
    _need(data, IN_HEADER.size, "request header")
    length, opcode, unique, nodeid, uid, gid, pid, _extlen, _pad = IN_HEADER.unpack_from(data)
    if length != len(data):
        raise FuseProtocolError(f"request says {length} bytes, carries {len(data)}")
    return InHeader(length, opcode, unique, nodeid, uid, gid, pid)


def decode_request(data: bytes) -> Request:
    """Decode one request; unknown opcodes decode with ``args=None``."""
    header = decode_header(data)
    body = data[IN_HEADER.size :]
    return Request(header, _decode_args(header.opcode, body))


def _decode_args(op: int, body: bytes) -> Any:
    if op in (Opcode.LOOKUP, Opcode.UNLINK, Opcode.RMDIR):
        return NameIn(_name(body))
    if op == Opcode.FORGET:
        _need(body, 8, "forget")
        return ForgetIn(struct.unpack_from("<Q", body)[0])
    if op == Opcode.BATCH_FORGET:
        _need(body, 8, "batch forget")
        (count,) = struct.unpack_from("<I", body)
        _need(body, 8 + 16 * count, "batch forget")
        return BatchForgetIn(tuple(struct.iter_unpack("<QQ", body[8 : 8 + 16 * count])))
    if op == Opcode.GETATTR:
        _need(body, 16, "getattr")
        return GetattrIn(*struct.unpack_from("<IxxxxQ", body))
    if op == Opcode.SETATTR:
        _need(body, 88, "setattr")
        v = struct.unpack_from("<IxxxxQQQQQQIIIIxxxxIIxxxx", body)
        return SetattrIn(v[0], v[1], v[2], v[4], v[5], v[7], v[8], v[10], v[11], v[12])
    if op == Opcode.MKNOD:
        _need(body, 16, "mknod")
        mode, rdev, umask = struct.unpack_from("<III", body)
        return MknodIn(mode, rdev, umask, _name(body[16:]))
    if op == Opcode.MKDIR:
        _need(body, 8, "mkdir")
        mode, umask = struct.unpack_from("<II", body)
        return MkdirIn(mode, umask, _name(body[8:]))
    if op == Opcode.SYMLINK:
        name, target = _two_names(body)
        _check_name(name)
        if not target or len(target) > 4095:
            raise FuseProtocolError("bad symlink target")
        return SymlinkIn(name, target)
    if op in (Opcode.RENAME, Opcode.RENAME2):
        size = 8 if op == Opcode.RENAME else 16
        _need(body, size, "rename")
        newdir = struct.unpack_from("<Q", body)[0]
        flags = struct.unpack_from("<I", body, 8)[0] if op == Opcode.RENAME2 else 0
        old, new = _two_names(body[size:])
        _check_name(old)
        _check_name(new)
        return RenameIn(newdir, flags, old, new)
    if op == Opcode.LINK:
        _need(body, 8, "link")
        return LinkIn(struct.unpack_from("<Q", body)[0], _name(body[8:]))
    if op in (Opcode.OPEN, Opcode.OPENDIR):
        _need(body, 8, "open")
        return OpenIn(struct.unpack_from("<I", body)[0])
    if op == Opcode.CREATE:
        _need(body, 16, "create")
        flags, mode, umask = struct.unpack_from("<III", body)
        return CreateIn(flags, mode, umask, _name(body[16:]))
    if op in (Opcode.READ, Opcode.READDIR, Opcode.READDIRPLUS):
        _need(body, 40, "read")
        fh, offset, size = struct.unpack_from("<QQI", body)
        return ReadIn(fh, offset, size)
    if op == Opcode.WRITE:
        _need(body, 40, "write")
        fh, offset, size = struct.unpack_from("<QQI", body)
        if len(body) - 40 != size:
            raise FuseProtocolError(f"write of {size} bytes carries {len(body) - 40}")
        return WriteIn(fh, offset, size, body[40:])
    if op in (Opcode.RELEASE, Opcode.RELEASEDIR, Opcode.FLUSH, Opcode.FSYNC, Opcode.FSYNCDIR):
        _need(body, 16, "file handle")
        fh, flags = struct.unpack_from("<QI", body)
        return FhIn(fh, flags)
    if op == Opcode.INIT:
        _need(body, 16, "init")
        return InitIn(*struct.unpack_from("<IIII", body))
    if op == Opcode.ACCESS:
        _need(body, 8, "access")
        return AccessIn(struct.unpack_from("<I", body)[0])
    if op == Opcode.FALLOCATE:
        _need(body, 32, "fallocate")
        fh, offset, length, mode = struct.unpack_from("<QQQI", body)
        return FallocateIn(fh, offset, length, mode)
    return None


# -- replies --------------------------------------------------------------


def encode_out_header(unique: int, error: int, body_len: int) -> bytes:
    """``error`` is 0 or a positive errno (sent negated, as FUSE wants)."""
    return OUT_HEADER.pack(OUT_HEADER.size + body_len, -error, unique)


def encode_reply(unique: int, body: bytes = b"") -> bytes:
    return encode_out_header(unique, 0, len(body)) + body


def encode_error(unique: int, errno_: int) -> bytes:
    return encode_out_header(unique, errno_, 0)


@dataclass(frozen=True)
class Attr:
    ino: int
    size: int
    blocks: int
    atime: int
    mtime: int
    ctime: int
    atimensec: int
    mtimensec: int
    ctimensec: int
    mode: int
    nlink: int
    uid: int
    gid: int
    rdev: int
    blksize: int


def encode_attr(a: Attr) -> bytes:
    return ATTR.pack(
        a.ino, a.size, a.blocks, a.atime, a.mtime, a.ctime, a.atimensec, a.mtimensec,
        a.ctimensec, a.mode, a.nlink, a.uid, a.gid, a.rdev, a.blksize, 0,
    )  # fmt: skip


def encode_entry(nodeid: int, attr: Attr, timeout: float) -> bytes:
    sec, nsec = _split(timeout)
    return struct.pack("<QQQQII", nodeid, 0, sec, sec, nsec, nsec) + encode_attr(attr)


ENTRY_OUT_SIZE = 40 + ATTR.size


def entry_mode(entry: bytes) -> int:
    """st_mode in an encoded fuse_entry_out."""
    return int(struct.unpack_from("<I", entry, 40 + 60)[0])


def encode_attr_out(attr: Attr, timeout: float) -> bytes:
    sec, nsec = _split(timeout)
    return struct.pack("<QII", sec, nsec, 0) + encode_attr(attr)


def encode_open(fh: int, open_flags: int = 0) -> bytes:
    return struct.pack("<QII", fh, open_flags, 0)


def encode_write_out(size: int) -> bytes:
    return struct.pack("<II", size, 0)


def encode_statfs(
    blocks: int, bfree: int, bavail: int, files: int, ffree: int, bsize: int, namelen: int
) -> bytes:
    return struct.pack(
        "<QQQQQIIII24x", blocks, bfree, bavail, files, ffree, bsize, namelen, bsize, 0
    )


def encode_init(*, flags: int, max_readahead: int, max_write: int, max_pages: int) -> bytes:
    return struct.pack(
        "<IIIIHHIIHHI28x",
        KERNEL_VERSION, KERNEL_MINOR, max_readahead, flags, 64, 48, max_write, 1, max_pages, 0, 0,
    )  # fmt: skip


def dirent_size(name: bytes) -> int:
    return (24 + len(name) + 7) & ~7


def encode_dirent(ino: int, next_offset: int, dtype: int, name: bytes) -> bytes:
    raw = struct.pack("<QQII", ino, next_offset, len(name), dtype) + name
    return raw.ljust(dirent_size(name), b"\0")


def _split(timeout: float) -> tuple[int, int]:
    sec = int(timeout)
    return sec, int((timeout - sec) * 1e9)
