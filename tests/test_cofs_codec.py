"""Property and fuzz tests of cofs's wire codecs and of its request handling.

A guest controls every byte the cofs server reads: vhost-user messages,
virtqueue descriptors and FUSE requests. These tests feed the decoders and
the file system arbitrary input and check that they only ever refuse with
their own error (never crash) and that no host file outside the share is
read or changed.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import struct
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from colinux.cofs import fuse_proto as fp
from colinux.cofs import meta
from colinux.cofs import vhost_user as vu
from colinux.cofs.fs import ShareFileSystem, View
from colinux.cofs.virtqueue import DescriptorError, GuestMemory, Virtqueue

u32 = st.integers(0, 2**32 - 1)
u64 = st.integers(0, 2**64 - 1)


# -- vhost-user ---------------------------------------------------------------


@given(st.binary(max_size=64))
def test_vhost_header_decoder_only_refuses(data: bytes) -> None:
    try:
        header = vu.decode_header(data)
    except vu.ProtocolError:
        return
    assert vu.encode_header(header.request, header.size, reply=False)[:4] == data[:4]


@given(st.binary(max_size=400))
def test_vhost_payload_decoders_only_refuse(data: bytes) -> None:
    for decode in (
        vu.decode_mem_table, vu.decode_vring_addr, vu.decode_vring_state,
        vu.decode_vring_fd, vu.decode_config_request, vu.decode_u64,
    ):  # fmt: skip
        with contextlib.suppress(vu.ProtocolError):
            decode(data)


regions = st.builds(
    vu.MemRegion,
    guest_addr=u64,
    size=st.integers(1, 2**64 - 1),
    user_addr=u64,
    mmap_offset=st.integers(0, 2**40).map(lambda n: n * 4096),
)


@given(st.lists(regions, min_size=1, max_size=vu.MAX_REGIONS))
def test_mem_table_round_trip(rs: list[vu.MemRegion]) -> None:
    assert vu.decode_mem_table(vu.encode_mem_table(rs)) == rs


@given(st.integers(0, 60), st.integers(0, 60), st.text(min_size=1, max_size=12))
def test_config_reads_byte_by_byte(offset: int, size: int, tag: str) -> None:
    if not 0 < len(tag.encode()) <= 36:
        return
    space = vu.virtio_fs_config(tag)
    request = vu.ConfigRequest(offset, size, 0)
    reply = vu.encode_config_reply(request, space)
    assert vu.decode_config_request(reply) == request
    assert reply[12:] == (space + bytes(100))[offset : offset + size]


# -- FUSE ---------------------------------------------------------------------


def request(opcode: int, body: bytes, nodeid: int = 1, unique: int = 7) -> bytes:
    header = fp.IN_HEADER.pack(fp.IN_HEADER.size + len(body), opcode, unique, nodeid, 0, 0, 0, 0, 0)
    return header + body


@given(st.binary(max_size=200))
def test_fuse_decoder_only_refuses(data: bytes) -> None:
    with contextlib.suppress(fp.FuseProtocolError):
        fp.decode_request(data)


@given(st.sampled_from(list(fp.Opcode)), st.binary(max_size=120), u64)
def test_fuse_decoder_any_body(opcode: fp.Opcode, body: bytes, nodeid: int) -> None:
    try:
        req = fp.decode_request(request(opcode, body, nodeid))
    except fp.FuseProtocolError:
        return
    assert req.header.opcode == opcode and req.header.nodeid == nodeid


names = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="/\0"), min_size=1
).map(lambda s: s.encode()[:255]).filter(lambda b: len(b) > 0 and b"\0" not in b)  # fmt: skip


@given(names, u32, u32)
def test_fuse_names_round_trip(name: bytes, mode: int, umask: int) -> None:
    req = fp.decode_request(
        request(fp.Opcode.MKDIR, struct.pack("<II", mode, umask) + name + b"\0")
    )
    assert req.args == fp.MkdirIn(mode, umask, name)
    old, new = name, name[::-1] or b"x"
    body = struct.pack("<QII", 9, 1, 0) + old + b"\0" + new + b"\0"
    if b"/" not in new and len(new) <= 255:
        try:
            new.decode()
        except UnicodeDecodeError:
            return
        assert fp.decode_request(request(fp.Opcode.RENAME2, body)).args == fp.RenameIn(
            9, 1, old, new
        )


def test_names_longer_than_name_max_decode() -> None:
    """A long name is well formed (FUSE carries up to 1024 bytes): the file system, not the
    decoder, answers it (ENAMETOOLONG); an empty one, or one with a ``/``, stays refused."""
    for name in (b"a" * 255, b"b" * 256, b"c" * 1024):
        assert fp.decode_request(request(fp.Opcode.LOOKUP, name + b"\0")).args.name == name
        body = struct.pack("<QII", 9, 0, 0) + name + b"\0" + name + b"\0"
        assert fp.decode_request(request(fp.Opcode.RENAME2, body)).args == fp.RenameIn(
            9, 0, name, name
        )
    for bad in (b"", b"b" * 300 + b"/x", b"x/" + b"b" * 300):
        with pytest.raises(fp.FuseProtocolError):
            fp.decode_request(request(fp.Opcode.LOOKUP, bad + b"\0"))
        with pytest.raises(fp.FuseProtocolError):
            fp.decode_request(request(fp.Opcode.MKDIR, struct.pack("<II", 0o755, 0) + bad + b"\0"))


def test_fuse_write_length_must_match() -> None:
    body = struct.pack("<QQII", 1, 0, 10, 0) + bytes(16) + b"short"
    with pytest.raises(fp.FuseProtocolError):
        fp.decode_request(request(fp.Opcode.WRITE, body))


@given(u64, u64, st.binary(max_size=300), st.lists(st.integers(1, 64), max_size=8), u64)
def test_write_head_decodes_as_the_whole_request(
    fh: int, offset: int, data: bytes, cuts: list[int], nodeid: int
) -> None:
    """A WRITE decoded from its head, its data left in pieces, says what decode_request says."""
    body = struct.pack("<QQII", fh, offset, len(data), 0) + bytes(16) + data
    raw = request(fp.Opcode.WRITE, body, nodeid)
    pieces, rest = [], raw[fp.WRITE_HEAD_SIZE :]
    for n in cuts:
        pieces.append(memoryview(rest[:n]))
        rest = rest[n:]
    pieces.append(memoryview(rest))
    whole = fp.decode_request(raw)
    head = fp.decode_write_head(raw[: fp.WRITE_HEAD_SIZE], len(raw), pieces)
    assert head.header == whole.header
    assert head.args[:3] == whole.args[:3] == (fh, offset, len(data))
    assert b"".join(head.args.data) == b"".join(whole.args.data) == data
    with pytest.raises(fp.FuseProtocolError):  # the length must match, both ways
        fp.decode_write_head(raw[: fp.WRITE_HEAD_SIZE], len(raw) + 1, pieces)
    with pytest.raises(fp.FuseProtocolError):
        fp.decode_write_head(raw[: fp.WRITE_HEAD_SIZE], len(raw), [*pieces, memoryview(b"x")])


def test_times_before_1970_encode() -> None:
    st_ = SimpleNamespace(st_ino=5, st_size=10, st_blocks=0, st_nlink=1, st_blksize=4096,
                          st_atime_ns=-1_500_000_000, st_mtime_ns=-2 * 10**9,
                          st_ctime_ns=-3 * 10**9)  # fmt: skip
    attr = fp.encode_stat(st_, 0o100644, 0, 0, 0)
    assert fp.ATTR.unpack(attr)[3:9] == (-2, -2, -3, 500_000_000, 0, 0)


def test_dirent_is_padded() -> None:
    entry = fp.encode_dirent(5, 1, 8, "𠮷".encode())
    assert len(entry) % 8 == 0 and entry[24:28] == "𠮷".encode()


def test_view_options_are_octal_modes() -> None:
    assert View.parse(b"uid=1000,gid=100,dmode=0700,fmode=775") == View(1000, 100, 0o700, 0o775)
    for bad in (b"uid=x", b"dmode=9", b"other=1", b"uid=1,uid=2", b"fmode=77777"):
        with pytest.raises(ValueError):
            View.parse(bad)


# -- the file system under fuzzing ------------------------------------------------

evil_names = st.sampled_from(
    [b"..", b".", b"../outside", b"x/../../outside", b"abs", b"rel", b"a", b"b", b"\xff\xfe",
     b".cofs-view:uid=1,gid=1,dmode=777,fmode=777", b"secret", "日本語".encode()]
)  # fmt: skip
ops = st.tuples(
    st.sampled_from(list(fp.Opcode)),
    st.integers(0, 12),  # node id: small, so lookups make real nodes to reuse
    evil_names,
    evil_names,
    st.integers(0, 8),  # file handle
    st.integers(0, 2**20),  # offset
)


def _body(op: fp.Opcode, name: bytes, name2: bytes, fh: int, offset: int) -> bytes:
    if op in (fp.Opcode.LOOKUP, fp.Opcode.UNLINK, fp.Opcode.RMDIR):
        return name + b"\0"
    if op == fp.Opcode.MKDIR:
        return struct.pack("<II", 0o755, 0) + name + b"\0"
    if op == fp.Opcode.MKNOD:
        return struct.pack("<IIII", 0o10644, 0, 0, 0) + name + b"\0"
    if op == fp.Opcode.CREATE:
        return struct.pack("<IIII", os.O_RDWR, 0o644, 0, 0) + name + b"\0"
    if op in (fp.Opcode.RENAME, fp.Opcode.RENAME2):
        flags = struct.pack("<II", 0, 0) if op == fp.Opcode.RENAME2 else b""
        return struct.pack("<Q", 1) + flags + name + b"\0" + name2 + b"\0"
    if op == fp.Opcode.SYMLINK:
        return name + b"\0" + b"/etc/passwd\0"
    if op == fp.Opcode.LINK:
        return struct.pack("<Q", 2) + name + b"\0"
    if op in (fp.Opcode.OPEN, fp.Opcode.OPENDIR):
        return struct.pack("<II", os.O_RDWR if fh % 2 else os.O_RDONLY, 0)
    if op in (fp.Opcode.READ, fp.Opcode.READDIR):
        return struct.pack("<QQIIQII", fh, offset % 64, 4096, 0, 0, 0, 0)
    if op == fp.Opcode.WRITE:
        return struct.pack("<QQIIQII", fh, offset, 3, 0, 0, 0, 0) + b"pwn"
    if op == fp.Opcode.SETATTR:
        return struct.pack("<IIQQQQQQIIIIIIII", 0x7F, 0, fh, offset, 0, 0, 0, 0, 0, 0, 0, 0o777,
                           0, 0, 0, 0)  # fmt: skip
    if op == fp.Opcode.INIT:
        return struct.pack("<IIII", 7, 31, 65536, 0xFFFFFFFF)
    return struct.pack("<QII", fh, 0, 0) + bytes(24)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(ops, max_size=40))
def test_fuzzed_requests_stay_in_the_share(tmp_path: Path, sequence: list[tuple]) -> None:  # type: ignore[type-arg]
    base = tmp_path / f"case{os.urandom(4).hex()}"
    share = base / "share"
    share.mkdir(parents=True)
    secret = base / "secret"
    secret.write_bytes(b"top secret")
    os.symlink(str(secret), share / "abs")
    os.symlink("../secret", share / "rel")
    (share / "a").write_bytes(b"in the share")
    before = sorted(p.name for p in base.iterdir())
    fs = ShareFileSystem(str(share))
    try:
        for op, nodeid, name, name2, fh, offset in sequence:
            data = request(op, _body(op, name, name2, fh, offset), nodeid)
            try:
                req = fp.decode_request(data)
            except fp.FuseProtocolError:
                continue
            if op == fp.Opcode.READ:
                buf = bytearray(4096)
                try:
                    n = fs.read_into(
                        req.header.nodeid, req.args.fh, req.args.offset, [memoryview(buf)]
                    )
                except OSError:
                    continue
                assert b"top secret" not in bytes(buf[:n])
                continue
            reply = fs.handle(req)
            if reply is not None:
                length, error, unique = fp.OUT_HEADER.unpack_from(reply)
                assert length == len(reply) and unique == 7 and error <= 0
                assert b"top secret" not in reply
    finally:
        fs.close()
    assert secret.read_bytes() == b"top secret"
    assert sorted(p.name for p in base.iterdir()) == before


def test_symlinks_are_not_followed_on_the_host(tmp_path: Path) -> None:
    (tmp_path / "secret").write_bytes(b"top secret")
    share = tmp_path / "share"
    share.mkdir()
    os.symlink(str(tmp_path / "secret"), share / "abs")
    fs = ShareFileSystem(str(share))
    try:
        entry = fs.handle(fp.decode_request(request(fp.Opcode.LOOKUP, b"abs\0")))
        assert entry is not None
        nodeid = struct.unpack_from("<Q", entry, fp.OUT_HEADER.size)[0]
        with pytest.raises(OSError):  # reads name the node: a symlink is never opened
            fs.read_into(nodeid, 0, 0, [memoryview(bytearray(64))])
        dotdot = fs.handle(fp.decode_request(request(fp.Opcode.LOOKUP, b"..\0")))
        assert dotdot is not None and fp.OUT_HEADER.unpack_from(dotdot)[1] == -errno.EINVAL
    finally:
        fs.close()


def _error(fs: ShareFileSystem, opcode: int, body: bytes, nodeid: int = 1) -> int:
    """The errno of the file system's reply to one request (0: it succeeded)."""
    reply = fs.handle(fp.decode_request(request(opcode, body, nodeid)))
    assert reply is not None
    return -int(fp.OUT_HEADER.unpack_from(reply)[1])


@pytest.mark.parametrize("meta_mode", [False, True], ids=["flat", "meta"])
def test_names_longer_than_name_max_are_enametoolong(tmp_path: Path, meta_mode: bool) -> None:
    """A name of 255 bytes (NAME_MAX) is made, found, renamed and removed; one of 256 is
    ENAMETOOLONG in every request that takes a name, as on every Linux file system (it was
    EINVAL, which says the request was malformed); '.', '..' stay EINVAL."""
    share = tmp_path / "share"
    share.mkdir()
    (share / "src").write_bytes(b"x")
    (share / "sub").mkdir()
    fs = ShareFileSystem(str(share), meta=meta_mode)
    op = fp.Opcode

    def create(name: bytes) -> bytes:
        return struct.pack("<IIII", os.O_RDWR | os.O_CREAT, 0o644, 0, 0) + name + b"\0"

    def mkdir(name: bytes) -> bytes:
        return struct.pack("<II", 0o755, 0) + name + b"\0"

    def mknod(name: bytes, kind: int = stat.S_IFREG) -> bytes:
        return struct.pack("<IIII", kind | 0o644, 0, 0, 0) + name + b"\0"

    def rename(old: bytes, new: bytes) -> bytes:
        return struct.pack("<Q", 1) + old + b"\0" + new + b"\0"

    def rename2(old: bytes, new: bytes) -> bytes:
        return struct.pack("<QII", 1, 0, 0) + old + b"\0" + new + b"\0"

    def symlink(name: bytes) -> bytes:
        return name + b"\0" + b"src\0"

    try:
        src = _lookup(fs, 1, b"src")
        sub = _lookup(fs, 1, b"sub")

        def link(name: bytes) -> bytes:
            return struct.pack("<Q", src) + name + b"\0"

        a, b, c, d = (ch * 255 for ch in (b"a", b"b", b"c", b"d"))
        assert _error(fs, op.CREATE, create(a)) == 0
        assert _error(fs, op.LOOKUP, a + b"\0") == 0
        assert _error(fs, op.RENAME, rename(a, b)) == 0
        assert _error(fs, op.RENAME2, rename2(b, a)) == 0
        assert _error(fs, op.MKNOD, mknod(b)) == 0
        assert _error(fs, op.UNLINK, b + b"\0") == 0
        assert _error(fs, op.MKDIR, mkdir(c)) == 0
        assert _error(fs, op.CREATE, create(d), sub) == 0
        assert _error(fs, op.LOOKUP, _view_name(255) + b"\0") == 0
        if meta_mode:
            assert _error(fs, op.SYMLINK, symlink(b"s" * 255)) == 0
            assert _error(fs, op.LINK, link(b"l" * 255)) == 0
            assert _error(fs, op.MKNOD, mknod(b"f" * 255, stat.S_IFIFO)) == 0

        long = b"z" * 256
        too_long = [
            (op.LOOKUP, long + b"\0", 1), (op.LOOKUP, long + b"\0", sub),
            (op.LOOKUP, _view_name(256) + b"\0", 1),
            (op.CREATE, create(long), 1), (op.CREATE, create(long), sub),
            (op.MKNOD, mknod(long), 1), (op.MKDIR, mkdir(long), 1), (op.MKDIR, mkdir(long), sub),
            (op.UNLINK, long + b"\0", 1), (op.RMDIR, long + b"\0", 1),
            (op.RENAME, rename(a, long), 1), (op.RENAME, rename(long, a), 1),
            (op.RENAME2, rename2(a, long), 1), (op.RENAME2, rename2(long, a), 1),
            (op.LOOKUP, b"y" * 1024 + b"\0", 1), (op.CREATE, create(b"y" * 4000), 1),
        ]  # fmt: skip
        if meta_mode:
            too_long += [(op.SYMLINK, symlink(long), 1), (op.LINK, link(long), 1),
                         (op.MKNOD, mknod(long, stat.S_IFIFO), 1)]  # fmt: skip
        for opcode, body, parent in too_long:
            assert _error(fs, opcode, body, parent) == errno.ENAMETOOLONG, (opcode, parent)
        if not meta_mode:  # refused whatever the name (the guest looks the name up first)
            assert _error(fs, op.SYMLINK, symlink(long)) == errno.EPERM
            assert _error(fs, op.LINK, link(long)) == errno.EPERM
        for bad in (b".", b".."):  # still EINVAL: they leave the directory
            assert _error(fs, op.LOOKUP, bad + b"\0") == errno.EINVAL
            assert _error(fs, op.MKDIR, mkdir(bad)) == errno.EINVAL
            assert _error(fs, op.RENAME, rename(a, bad)) == errno.EINVAL
        assert _error(fs, op.RMDIR, c + b"\0") == 0
        assert _error(fs, op.UNLINK, a + b"\0") == 0
    finally:
        fs.close()
    left = {"src", "sub"} | ({"s" * 255, "l" * 255, "f" * 255} if meta_mode else set())
    assert set(os.listdir(share)) == left
    assert os.listdir(share / "sub") == ["d" * 255]


def _view_name(size: int) -> bytes:
    """A view name (see fs.py) of ``size`` bytes, padded with leading zeros in the uid."""
    tail = b",gid=0,dmode=755,fmode=755"
    head = b".cofs-view:uid="
    return head + b"0" * (size - len(head) - len(tail) - 1) + b"1" + tail


# -- virtqueues -------------------------------------------------------------------

QSIZE = 8
DESC, AVAIL, USED = 0x1000, 0x2000, 0x3000
MEM = 0x10000


@given(
    st.lists(st.tuples(u64, u32, st.integers(0, 7), st.integers(0, 2**16 - 1)),
             min_size=QSIZE, max_size=QSIZE),
    st.lists(st.integers(0, 2**16 - 1), min_size=QSIZE, max_size=QSIZE),
    st.integers(0, 2**16 - 1),
)  # fmt: skip
def test_virtqueue_walks_only_guest_memory(
    descs: list[tuple[int, int, int, int]], ring: list[int], avail_idx: int
) -> None:
    fd = os.memfd_create("guest")
    try:
        os.ftruncate(fd, MEM)
        region = vu.MemRegion(guest_addr=0, size=MEM, user_addr=0, mmap_offset=0)
        memory = GuestMemory.map([region], [fd])
    finally:
        os.close(fd)
    view = memory.view(0, MEM)
    for i, d in enumerate(descs):
        struct.pack_into("<QIHH", view, DESC + 16 * i, *d)
    struct.pack_into("<HH", view, AVAIL, 0, avail_idx)
    for i, head in enumerate(ring):
        struct.pack_into("<H", view, AVAIL + 4 + 2 * i, head)
    addr = vu.VringAddr(0, 0, DESC, USED, AVAIL, 0)
    queue = Virtqueue(memory, size=QSIZE, addr=addr, base=0)
    try:
        for _ in range(QSIZE + 1):
            head = queue.pop()
            if head is None:
                break
            try:
                chain = queue.chain(head)
            except DescriptorError:
                continue
            for v in chain.readable + chain.writable:
                assert len(v) <= MEM
            chain.write(b"x" * 64)
            for v in chain.readable + chain.writable:
                v.release()
            queue.push(head, 0)
    except DescriptorError:
        pass
    finally:
        queue.release()
        view.release()
        memory.close()


def _lookup(fs: ShareFileSystem, parent: int, name: bytes) -> int:
    reply = fs.handle(fp.decode_request(request(fp.Opcode.LOOKUP, name + b"\0", parent)))
    assert reply is not None and fp.OUT_HEADER.unpack_from(reply)[1] == 0, reply
    return int(struct.unpack_from("<Q", reply, fp.OUT_HEADER.size)[0])


def _getattr_error(fs: ShareFileSystem, nodeid: int) -> int:
    reply = fs.handle(fp.decode_request(request(fp.Opcode.GETATTR, bytes(16), nodeid)))
    assert reply is not None
    return -int(fp.OUT_HEADER.unpack_from(reply)[1])


def test_more_files_than_descriptors(tmp_path: Path) -> None:
    """Past its descriptor budget the server closes nodes and reopens them by name."""
    (tmp_path / "d").mkdir()
    for i in range(50):
        (tmp_path / "d" / f"f{i}").write_bytes(b"x" * i)
    fs = ShareFileSystem(str(tmp_path))
    fs.node_budget = 8
    try:
        d = _lookup(fs, 1, b"d")
        nodes = [_lookup(fs, d, f"f{i}".encode()) for i in range(50)]
        assert sum(n.fd is not None for n in fs.nodes.values()) <= 8
        assert all(_getattr_error(fs, n) == 0 for n in nodes)  # reopened by name
        # Renamed by the guest: still found. Replaced on the host: ESTALE, not another file.
        body = struct.pack("<Q", d) + b"f1\0g1\0"
        assert fs.handle(fp.decode_request(request(fp.Opcode.RENAME, body, d))) is not None
        for n in nodes[2:20]:
            _getattr_error(fs, n)  # push f1 out of the open set
        assert _getattr_error(fs, nodes[1]) == 0
        os.rename(tmp_path / "d" / "f3", tmp_path / "d" / "moved")
        (tmp_path / "d" / "f3").write_bytes(b"impostor")
        for n in nodes[20:40]:
            _getattr_error(fs, n)
        assert _getattr_error(fs, nodes[3]) == errno.ESTALE
    finally:
        fs.close()


def test_meta_create_stamps_only_new_files(tmp_path: Path) -> None:
    """A guest's open(O_CREAT) of a file that is there keeps its metadata; a new file gets
    the guest's owner and mode, and none is written when the host's already say it."""
    (tmp_path / "old").write_bytes(b"host file")
    fs = ShareFileSystem(str(tmp_path), meta=True)
    umask = os.umask(0o022)
    os.umask(umask)

    def create(name: bytes, uid: int, mode: int) -> None:
        body = struct.pack("<IIII", os.O_RDWR | os.O_CREAT, mode, 0, 0) + name + b"\0"
        data = fp.IN_HEADER.pack(40 + len(body), fp.Opcode.CREATE, 7, 1, uid, uid, 0, 0, 0)
        reply = fs.handle(fp.decode_request(data + body))
        assert reply is not None and fp.OUT_HEADER.unpack_from(reply)[1] == 0

    try:
        create(b"old", 1000, 0o600)
        create(b"mine", 1000, 0o600)
        create(b"roots", 0, 0o666 & ~umask)
    finally:
        fs.close()
    assert meta.read(str(tmp_path / "old")) is None
    assert meta.read(str(tmp_path / "mine")) == meta.Meta(0o100600, 1000, 1000)
    assert meta.read(str(tmp_path / "roots")) is None  # shows the host's mode, owned by root
    assert (tmp_path / "old").read_bytes() == b"host file"


def test_forgets_wait_for_an_idle_moment_and_add_up(tmp_path: Path) -> None:
    """FORGET is carried out later; a lookup meanwhile keeps the node, as the counts say."""
    (tmp_path / "f").write_bytes(b"x")
    fs = ShareFileSystem(str(tmp_path))
    try:
        node = _lookup(fs, 1, b"f")
        forget = request(fp.Opcode.FORGET, struct.pack("<Q", 1), node)
        assert fs.handle(fp.decode_request(forget)) is None
        assert node in fs.nodes  # not yet
        assert _lookup(fs, 1, b"f") == node  # the same node, looked up again
        fs.forget_now()
        assert fs.nodes[node].nlookup == 1
        fs.handle(fp.decode_request(forget))
        fs.forget_now()
        assert node not in fs.nodes
    finally:
        fs.close()


def _create(fs: ShareFileSystem, name: bytes, flags: int, uid: int = 0) -> int:
    body = struct.pack("<IIII", flags | os.O_CREAT, 0o644, 0o022, 0) + name + b"\0"
    data = fp.IN_HEADER.pack(40 + len(body), fp.Opcode.CREATE, 7, 1, uid, uid, 0, 0, 0)
    reply = fs.handle(fp.decode_request(data + body))
    assert reply is not None and fp.OUT_HEADER.unpack_from(reply)[1] == 0, reply
    return int(struct.unpack_from("<Q", reply, fp.OUT_HEADER.size)[0])


def _write(fs: ShareFileSystem, node: int, offset: int, data: bytes) -> int:
    body = struct.pack("<QQIIQII", 0, offset, len(data), 0, 0, 0, 0) + data
    reply = fs.handle(fp.decode_request(request(fp.Opcode.WRITE, body, node)))
    assert reply is not None
    return -int(fp.OUT_HEADER.unpack_from(reply)[1])


@pytest.mark.parametrize("meta_mode", [False, True], ids=["flat", "meta"])
def test_a_create_keeps_its_descriptor_for_the_writes(tmp_path: Path, meta_mode: bool) -> None:
    """The descriptor a CREATE opened serves the node's writes (no reopen), at the
    guest's offsets whatever its flags said (O_WRONLY, O_APPEND, O_TRUNC)."""
    (tmp_path / "old").write_bytes(b"old contents")
    fs = ShareFileSystem(str(tmp_path), meta=meta_mode)
    try:
        new = _create(fs, b"new", os.O_WRONLY | os.O_APPEND, uid=1000)
        assert new in fs._io
        assert _write(fs, new, 4, b"tail") == 0 and _write(fs, new, 0, b"head") == 0
        old = _create(fs, b"old", os.O_WRONLY | os.O_TRUNC)
        assert _write(fs, old, 0, b"anew") == 0
        # The name replaced on the host before the next create: the new inode is served.
        os.rename(tmp_path / "new", tmp_path / "gone")
        (tmp_path / "new").write_bytes(b"")
        again = _create(fs, b"new", os.O_RDWR)
        assert again != new and _write(fs, again, 0, b"third") == 0
    finally:
        fs.close()
    assert (tmp_path / "gone").read_bytes() == b"headtail"
    assert (tmp_path / "old").read_bytes() == b"anew"
    assert (tmp_path / "new").read_bytes() == b"third"
    if meta_mode:
        assert meta.read(str(tmp_path / "gone")) == meta.Meta(0o100644, 1000, 1000)


def _mode(fs: ShareFileSystem, nodeid: int) -> int:
    reply = fs.handle(fp.decode_request(request(fp.Opcode.GETATTR, bytes(16), nodeid)))
    assert reply is not None and fp.OUT_HEADER.unpack_from(reply)[1] == 0
    return fp.entry_mode(bytes(40) + reply[fp.OUT_HEADER.size + 16 :])


def test_meta_seen_again_only_while_the_ctime_stands(tmp_path: Path) -> None:
    """Meta mode remembers what a file's attribute said for as long as its ctime is
    the same (any change moves it), so a change made on the host shows at once."""
    (tmp_path / "f").write_bytes(b"x")
    meta.write(str(tmp_path / "f"), meta.Meta(0o100600, 5, 5))
    fs = ShareFileSystem(str(tmp_path), meta=True)
    try:
        node = _lookup(fs, 1, b"f")
        assert _mode(fs, node) == 0o100600  # a fresh ctime: read each time
        time.sleep(0.06)
        assert _mode(fs, node) == 0o100600 and fs.nodes[node].meta_seen is not None
        meta.write(str(tmp_path / "f"), meta.Meta(0o100640, 5, 5))  # on the host
        assert _mode(fs, node) == 0o100640
        time.sleep(0.06)
        assert _mode(fs, node) == 0o100640
        meta.write(str(tmp_path / "f"), meta.Meta(0o120777, 5, 5))  # now a symlink
        assert _mode(fs, node) == 0o120777
        time.sleep(0.06)
        os.removexattr(tmp_path / "f", meta.XATTR)
        os.chmod(tmp_path / "f", 0o604)
        assert _mode(fs, node) == 0o100604
    finally:
        fs.close()
