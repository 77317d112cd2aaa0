"""FUSE wire format (protocol 7.31 subset): pure functions over bytes.

virtio-fs carries FUSE requests unchanged: each request is a ``fuse_in_header``
followed by its opcode's arguments; each reply a ``fuse_out_header`` followed
by the result. ``decode_request`` checks lengths and NUL-terminated names and
raises ``FuseProtocolError`` on anything malformed, so the file system layer
only ever sees well-formed values. A name longer than ``NAME_MAX`` is well
formed (FUSE carries names of up to 1024 bytes): it is a user's mistake, which
the file system answers with ENAMETOOLONG, as every Linux file system does::

    req = decode_request(data)          # -> Request(header, args)
    if req.header.opcode == Opcode.LOOKUP: name = req.args.name
    reply = encode_reply(req.header.unique, encode_entry(...))
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from enum import IntEnum
from typing import Any, NamedTuple

from colinux.errors import ColinuxError

IN_HEADER = struct.Struct("<IIQQIIIHH")  # len opcode unique nodeid uid gid pid extlen pad
OUT_HEADER = struct.Struct("<IiQ")  # len error unique
ATTR = struct.Struct("<QQQqqqIIIIIIIIII")  # 88 bytes (times signed: before 1970 too)
ENTRY_HEAD = struct.Struct("<QQQQII")  # nodeid generation entry_valid attr_valid (+nsec)
ATTR_HEAD = struct.Struct("<QII")  # attr_valid attr_valid_nsec dummy
WRITE_HEAD_SIZE = 40 + 40  # fuse_in_header + fuse_write_in: what precedes the data
KERNEL_VERSION = 7
KERNEL_MINOR = 31
NAME_MAX = 255  # longer names are ENAMETOOLONG (fs.py), not malformed


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
INIT_CACHE_SYMLINKS = 1 << 23

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


class InHeader(NamedTuple):
    length: int
    opcode: int
    unique: int
    nodeid: int
    uid: int
    gid: int
    pid: int


class Request(NamedTuple):
    header: InHeader
    args: Any  # one of the *In dataclasses below, or None


class NameIn(NamedTuple):  # LOOKUP, UNLINK, RMDIR
    name: bytes


class ForgetIn(NamedTuple):
    nlookup: int


class BatchForgetIn(NamedTuple):
    forgets: tuple[tuple[int, int], ...]  # (nodeid, nlookup)


class GetattrIn(NamedTuple):
    flags: int
    fh: int


class SetattrIn(NamedTuple):
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


class MknodIn(NamedTuple):
    mode: int
    rdev: int
    umask: int
    name: bytes


class MkdirIn(NamedTuple):
    mode: int
    umask: int
    name: bytes


class SymlinkIn(NamedTuple):
    name: bytes
    target: bytes


class RenameIn(NamedTuple):
    newdir: int
    flags: int
    old: bytes
    new: bytes


class LinkIn(NamedTuple):
    oldnodeid: int
    name: bytes


class OpenIn(NamedTuple):
    flags: int


class CreateIn(NamedTuple):
    flags: int
    mode: int
    umask: int
    name: bytes


class ReadIn(NamedTuple):
    fh: int
    offset: int
    size: int


class WriteIn(NamedTuple):
    fh: int
    offset: int
    size: int
    data: Sequence[bytes | memoryview]  # the data in pieces (for pwritev)


class FhIn(NamedTuple):  # RELEASE, FLUSH, FSYNC, RELEASEDIR, FSYNCDIR
    fh: int
    flags: int


class InitIn(NamedTuple):
    major: int
    minor: int
    max_readahead: int
    flags: int


class AccessIn(NamedTuple):
    mask: int


class FallocateIn(NamedTuple):
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
    """Refuses a name no guest kernel sends: empty, or with a NUL or ``/`` in it. Its
    length is the file system's to refuse (ENAMETOOLONG past ``NAME_MAX``)."""
    if not name or b"\0" in name or b"/" in name:
        raise FuseProtocolError(f"bad file name {name[:64]!r}")


def _two_names(data: bytes) -> tuple[bytes, bytes]:
    parts = data.split(b"\0")
    if len(parts) != 3 or parts[2] != b"":
        raise FuseProtocolError("expected two NUL-terminated names")
    return parts[0], parts[1]


def _need(data: bytes, size: int, what: str) -> None:
    if len(data) < size:
        raise FuseProtocolError(f"{what}: {len(data)} bytes, {size} needed")


def decode_header(data: bytes, size: int | None = None) -> InHeader:
    """The request header at the start of ``data``, a request of ``size`` bytes (all of
    ``data`` unless given)."""
    _need(data, IN_HEADER.size, "request header")
    length, opcode, unique, nodeid, uid, gid, pid, _extlen, _pad = IN_HEADER.unpack_from(data)
    size = len(data) if size is None else size
    if length != size:
        raise FuseProtocolError(f"request says {length} bytes, carries {size}")
    return InHeader(length, opcode, unique, nodeid, uid, gid, pid)


def decode_request(data: bytes) -> Request:
    """Decode one request; unknown opcodes decode with ``args=None``."""
    header = decode_header(data)
    decoder = _DECODERS.get(header.opcode)
    return Request(header, decoder(data[IN_HEADER.size :]) if decoder else None)


def decode_write_head(head: bytes, length: int, data: Sequence[memoryview]) -> Request:
    """A WRITE whose data stays where it is: ``head`` is its first ``WRITE_HEAD_SIZE``
    bytes, ``length`` the request's whole size and ``data`` views of the rest."""
    _need(head, WRITE_HEAD_SIZE, "write")
    header = decode_header(head, length)
    if header.opcode != Opcode.WRITE:
        raise FuseProtocolError(f"opcode {header.opcode} is not WRITE")
    fh, offset, size = struct.unpack_from("<QQI", head, IN_HEADER.size)
    if length - WRITE_HEAD_SIZE != size or sum(len(v) for v in data) != size:
        raise FuseProtocolError(f"write of {size} bytes carries {length - WRITE_HEAD_SIZE}")
    return Request(header, WriteIn(fh, offset, size, data))


def _lookup_args(body: bytes) -> NameIn:  # LOOKUP, UNLINK, RMDIR
    return NameIn(_name(body))


def _forget(body: bytes) -> ForgetIn:
    _need(body, 8, "forget")
    return ForgetIn(struct.unpack_from("<Q", body)[0])


def _batch_forget(body: bytes) -> BatchForgetIn:
    _need(body, 8, "batch forget")
    (count,) = struct.unpack_from("<I", body)
    _need(body, 8 + 16 * count, "batch forget")
    return BatchForgetIn(tuple(struct.iter_unpack("<QQ", body[8 : 8 + 16 * count])))


def _getattr(body: bytes) -> GetattrIn:
    _need(body, 16, "getattr")
    return GetattrIn(*struct.unpack_from("<IxxxxQ", body))


def _setattr(body: bytes) -> SetattrIn:
    _need(body, 88, "setattr")
    v = struct.unpack_from("<IxxxxQQQQQQIIIIxxxxIIxxxx", body)
    return SetattrIn(v[0], v[1], v[2], v[4], v[5], v[7], v[8], v[10], v[11], v[12])


def _mknod(body: bytes) -> MknodIn:
    _need(body, 16, "mknod")
    mode, rdev, umask = struct.unpack_from("<III", body)
    return MknodIn(mode, rdev, umask, _name(body[16:]))


def _mkdir(body: bytes) -> MkdirIn:
    _need(body, 8, "mkdir")
    mode, umask = struct.unpack_from("<II", body)
    return MkdirIn(mode, umask, _name(body[8:]))


def _symlink(body: bytes) -> SymlinkIn:
    name, target = _two_names(body)
    _check_name(name)
    if not target or len(target) > 4095:
        raise FuseProtocolError("bad symlink target")
    return SymlinkIn(name, target)


def _rename(body: bytes, size: int = 8) -> RenameIn:
    _need(body, size, "rename")
    newdir = struct.unpack_from("<Q", body)[0]
    flags = struct.unpack_from("<I", body, 8)[0] if size == 16 else 0
    old, new = _two_names(body[size:])
    _check_name(old)
    _check_name(new)
    return RenameIn(newdir, flags, old, new)


def _link(body: bytes) -> LinkIn:
    _need(body, 8, "link")
    return LinkIn(struct.unpack_from("<Q", body)[0], _name(body[8:]))


def _open(body: bytes) -> OpenIn:  # OPEN, OPENDIR
    _need(body, 8, "open")
    return OpenIn(struct.unpack_from("<I", body)[0])


def _create(body: bytes) -> CreateIn:
    _need(body, 16, "create")
    flags, mode, umask = struct.unpack_from("<III", body)
    return CreateIn(flags, mode, umask, _name(body[16:]))


def _read(body: bytes) -> ReadIn:  # READ, READDIR, READDIRPLUS
    _need(body, 40, "read")
    fh, offset, size = struct.unpack_from("<QQI", body)
    return ReadIn(fh, offset, size)


def _write(body: bytes) -> WriteIn:
    _need(body, 40, "write")
    fh, offset, size = struct.unpack_from("<QQI", body)
    if len(body) - 40 != size:
        raise FuseProtocolError(f"write of {size} bytes carries {len(body) - 40}")
    return WriteIn(fh, offset, size, (body[40:],))


def _fh(body: bytes) -> FhIn:  # RELEASE, FLUSH, FSYNC, RELEASEDIR, FSYNCDIR
    _need(body, 16, "file handle")
    fh, flags = struct.unpack_from("<QI", body)
    return FhIn(fh, flags)


def _init(body: bytes) -> InitIn:
    _need(body, 16, "init")
    return InitIn(*struct.unpack_from("<IIII", body))


def _access(body: bytes) -> AccessIn:
    _need(body, 8, "access")
    return AccessIn(struct.unpack_from("<I", body)[0])


def _fallocate(body: bytes) -> FallocateIn:
    _need(body, 32, "fallocate")
    fh, offset, length, mode = struct.unpack_from("<QQQI", body)
    return FallocateIn(fh, offset, length, mode)


_DECODERS: dict[int, Callable[[bytes], Any]] = {
    Opcode.LOOKUP: _lookup_args, Opcode.UNLINK: _lookup_args, Opcode.RMDIR: _lookup_args,
    Opcode.FORGET: _forget, Opcode.BATCH_FORGET: _batch_forget, Opcode.GETATTR: _getattr,
    Opcode.SETATTR: _setattr, Opcode.MKNOD: _mknod, Opcode.MKDIR: _mkdir,
    Opcode.SYMLINK: _symlink, Opcode.RENAME: _rename,
    Opcode.RENAME2: lambda body: _rename(body, 16), Opcode.LINK: _link,
    Opcode.OPEN: _open, Opcode.OPENDIR: _open, Opcode.CREATE: _create,
    Opcode.READ: _read, Opcode.READDIR: _read, Opcode.READDIRPLUS: _read, Opcode.WRITE: _write,
    Opcode.RELEASE: _fh, Opcode.RELEASEDIR: _fh, Opcode.FLUSH: _fh, Opcode.FSYNC: _fh,
    Opcode.FSYNCDIR: _fh, Opcode.INIT: _init, Opcode.ACCESS: _access,
    Opcode.FALLOCATE: _fallocate,
}  # fmt: skip


# -- replies --------------------------------------------------------------


def encode_out_header(unique: int, error: int, body_len: int) -> bytes:
    """``error`` is 0 or a positive errno (sent negated, as FUSE wants)."""
    return OUT_HEADER.pack(OUT_HEADER.size + body_len, -error, unique)


def encode_reply(unique: int, body: bytes = b"") -> bytes:
    return encode_out_header(unique, 0, len(body)) + body


def encode_error(unique: int, errno_: int) -> bytes:
    return encode_out_header(unique, errno_, 0)


class Attr(NamedTuple):
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
    """A fuse_attr (``encode_entry`` and ``encode_attr_out`` take its bytes)."""
    return ATTR.pack(
        a.ino, a.size, a.blocks, a.atime, a.mtime, a.ctime, a.atimensec, a.mtimensec,
        a.ctimensec, a.mode, a.nlink, a.uid, a.gid, a.rdev, a.blksize, 0,
    )  # fmt: skip


def encode_stat(st: Any, mode: int, uid: int, gid: int, rdev: int) -> bytes:
    """A fuse_attr from an ``os.stat_result``, with the owner and mode the guest sees."""
    asec, ansec = divmod(st.st_atime_ns, 1_000_000_000)
    msec, mnsec = divmod(st.st_mtime_ns, 1_000_000_000)
    csec, cnsec = divmod(st.st_ctime_ns, 1_000_000_000)
    return ATTR.pack(
        st.st_ino, st.st_size, st.st_blocks, asec, msec, csec, ansec, mnsec, cnsec,
        mode, st.st_nlink, uid, gid, rdev, st.st_blksize, 0,
    )  # fmt: skip


NO_ATTR = bytes(ATTR.size)


def encode_entry(nodeid: int, attr: bytes, timeout: float) -> bytes:
    """A fuse_entry_out; ``attr`` is an encoded fuse_attr."""
    sec, nsec = _split(timeout)
    return ENTRY_HEAD.pack(nodeid, 0, sec, sec, nsec, nsec) + attr


ENTRY_OUT_SIZE = ENTRY_HEAD.size + ATTR.size


def entry_mode(entry: bytes) -> int:
    """st_mode in an encoded fuse_entry_out."""
    return int(struct.unpack_from("<I", entry, 40 + 60)[0])


def encode_attr_out(attr: bytes, timeout: float) -> bytes:
    """A fuse_attr_out; ``attr`` is an encoded fuse_attr."""
    sec, nsec = _split(timeout)
    return ATTR_HEAD.pack(sec, nsec, 0) + attr


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
