"""CofsServer against a hostile vhost-user front end (this test plays UML's part).

The test connects to a real server's socket, shares a memfd as guest memory,
sets up the request queue, and sends well-formed and malformed messages and
FUSE requests, then checks the server answered the good ones, refused the
bad ones and kept serving, and never touched a file outside the share.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import select
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from colinux.cofs import fuse_proto as fp
from colinux.cofs import vhost_user as vu
from colinux.cofs.server import CofsServer

MEM = 1 << 20
QSIZE = 16
DESC, AVAIL, USED, BUF = 0x1000, 0x2000, 0x3000, 0x10000


class FrontEnd:
    """Just enough of a vhost-user front end to drive one request queue."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.sock.settimeout(5)
        self.memfd = os.memfd_create("guest")
        os.ftruncate(self.memfd, MEM)
        self.kick = os.eventfd(0, os.EFD_NONBLOCK)
        self.call = os.eventfd(0, os.EFD_NONBLOCK)
        self.avail_idx = 0
        self.next_buf = BUF

    def send(self, request: int, payload: bytes = b"", fds: list[int] | None = None) -> None:
        message = struct.pack("<III", request, vu.VERSION, len(payload)) + payload
        socket.send_fds(self.sock, [message], fds or [])

    def ask(self, request: int, payload: bytes = b"") -> bytes:
        self.send(request, payload)
        header = self.sock.recv(12)
        size = struct.unpack("<III", header)[2]
        return self.sock.recv(size)

    def poke(self, offset: int, data: bytes) -> None:
        os.pwrite(self.memfd, data, offset)

    def peek(self, offset: int, size: int) -> bytes:
        return os.pread(self.memfd, size, offset)

    def setup_queue(self, index: int = 1) -> None:
        """A fresh, empty queue; returns once the server has taken all of it."""
        self.poke(AVAIL, bytes(4))
        self.poke(USED, bytes(4))
        self.avail_idx = 0
        region = vu.MemRegion(guest_addr=0, size=MEM, user_addr=0, mmap_offset=0)
        self.send(vu.Request.SET_MEM_TABLE, vu.encode_mem_table([region]), [self.memfd])
        self.send(vu.Request.SET_VRING_NUM, vu.encode_vring_state(index, QSIZE))
        self.send(vu.Request.SET_VRING_BASE, vu.encode_vring_state(index, 0))
        addr = struct.pack("<IIQQQQ", index, 0, DESC, USED, AVAIL, 0)
        self.send(vu.Request.SET_VRING_ADDR, addr)
        self.send(vu.Request.SET_VRING_CALL, vu.encode_u64(index), [self.call])
        self.send(vu.Request.SET_VRING_KICK, vu.encode_u64(index), [self.kick])
        self.ask(vu.Request.GET_FEATURES)  # a reply: every message before it was handled
        with contextlib.suppress(BlockingIOError):
            os.eventfd_read(self.call)  # no signal left over from before

    def submit(self, descs: list[tuple[int, int, int]]) -> None:
        """Post one chain of (address, length, flags) descriptors and kick."""
        for i, (addr, length, flags) in enumerate(descs):
            more = 1 if i + 1 < len(descs) else 0
            self.poke(DESC + 16 * i, struct.pack("<QIHH", addr, length, flags | more, i + 1))
        self.poke(AVAIL + 4 + 2 * (self.avail_idx % QSIZE), struct.pack("<H", 0))
        self.avail_idx += 1
        self.poke(AVAIL, struct.pack("<HH", 0, self.avail_idx))
        os.eventfd_write(self.kick, 1)

    def fuse(self, opcode: int, body: bytes, nodeid: int = 1, reply_size: int = 4096) -> bytes:
        """One FUSE request through the queue; the reply the server wrote."""
        data = fp.IN_HEADER.pack(fp.IN_HEADER.size + len(body), opcode, 99, nodeid, 0, 0, 0, 0, 0)
        data += body
        self.poke(BUF, data)
        out = BUF + 0x8000
        used_before = struct.unpack("<H", self.peek(USED + 2, 2))[0]
        self.submit([(BUF, len(data), 0), (out, reply_size, 2)])
        self.wait_used(used_before)
        written = struct.unpack("<I", self.peek(USED + 4 + 8 * (used_before % QSIZE) + 4, 4))[0]
        return self.peek(out, written)

    def wait_used(self, before: int) -> None:
        ready, _, _ = select.select([self.call], [], [], 5)
        assert ready, "the server did not signal"
        os.eventfd_read(self.call)
        assert struct.unpack("<H", self.peek(USED + 2, 2))[0] == (before + 1) & 0xFFFF

    def close(self) -> None:
        self.sock.close()
        for fd in (self.memfd, self.kick, self.call):
            os.close(fd)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[FrontEnd, Path]]:
    share = tmp_path / "share"
    share.mkdir()
    (share / "hello").write_bytes(b"hello from the share\n")
    (tmp_path / "secret").write_bytes(b"secret")
    server = CofsServer(str(tmp_path / "cofs.sock"), str(share), tag="cofs0")
    server.start()
    front = FrontEnd(str(tmp_path / "cofs.sock"))
    try:
        yield front, tmp_path
    finally:
        front.close()
        server.stop()
    assert (tmp_path / "secret").read_bytes() == b"secret"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["secret", "share"]


def test_handshake_and_requests(served: tuple[FrontEnd, Path]) -> None:
    front, _ = served
    features = vu.decode_u64(front.ask(vu.Request.GET_FEATURES))
    assert features & vu.VIRTIO_F_VERSION_1 and features & vu.VHOST_USER_F_PROTOCOL_FEATURES
    protocol = vu.decode_u64(front.ask(vu.Request.GET_PROTOCOL_FEATURES))
    assert protocol & vu.PROTOCOL_F_SLAVE_REQ and protocol & vu.PROTOCOL_F_CONFIG
    config = front.ask(vu.Request.GET_CONFIG, struct.pack("<III", 0, 40, 0))
    assert config[12:16] == b"cofs" and config[12 + 36 : 12 + 40] == struct.pack("<I", 1)
    front.setup_queue()
    init = front.fuse(fp.Opcode.INIT, struct.pack("<IIII", 7, 31, 65536, 0))
    assert fp.OUT_HEADER.unpack_from(init)[1:] == (0, 99)
    entry = front.fuse(fp.Opcode.LOOKUP, b"hello\0")
    nodeid = struct.unpack_from("<Q", entry, 16)[0]
    # OPEN is ENOSYS on purpose (FUSE no_open): reads name the node, with file handle 0.
    opened = front.fuse(fp.Opcode.OPEN, struct.pack("<II", os.O_RDONLY, 0), nodeid)
    assert fp.OUT_HEADER.unpack_from(opened)[1] == -errno.ENOSYS
    read = front.fuse(fp.Opcode.READ, struct.pack("<QQIIQII", 0, 0, 100, 0, 0, 0, 0), nodeid)
    assert read[16:] == b"hello from the share\n"


def test_write_data_in_pieces_and_lying_writes(served: tuple[FrontEnd, Path]) -> None:
    """A WRITE's data goes from its descriptors to the file; one whose sizes disagree is refused."""
    front, tmp_path = served
    front.setup_queue()
    front.fuse(fp.Opcode.INIT, struct.pack("<IIII", 7, 31, 65536, 0))
    nodeid = struct.unpack_from("<Q", front.fuse(fp.Opcode.LOOKUP, b"hello\0"), 16)[0]

    def write(size: int, data: bytes) -> int:
        """Header, write_in and data as three readable descriptors, as virtio-fs sends them."""
        head = fp.IN_HEADER.pack(80 + len(data), fp.Opcode.WRITE, 99, nodeid, 0, 0, 0, 0, 0)
        front.poke(BUF, head)
        front.poke(BUF + 0x100, struct.pack("<QQIIQII", 0, 6, size, 0, 0, 0, 0))
        front.poke(BUF + 0x200, data)
        used = struct.unpack("<H", front.peek(USED + 2, 2))[0]
        front.submit([(BUF, 40, 0), (BUF + 0x100, 40, 0), (BUF + 0x200, len(data), 0),
                      (BUF + 0x8000, 64, 2)])  # fmt: skip
        front.wait_used(used)
        error = fp.OUT_HEADER.unpack_from(front.peek(BUF + 0x8000, 16))[1]
        return error or struct.unpack_from("<I", front.peek(BUF + 0x8000 + 16, 4))[0]

    assert write(5, b"WORLD") == 5
    assert write(9, b"short") == -errno.EINVAL  # the size says more than came
    assert (tmp_path / "share" / "hello").read_bytes() == b"hello WORLDthe share\n"


def test_a_slow_fsync_holds_no_other_request(
    served: tuple[FrontEnd, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """fsync runs on a worker: requests behind it are answered before it ends."""
    front, _ = served
    front.setup_queue()
    front.fuse(fp.Opcode.INIT, struct.pack("<IIII", 7, 31, 65536, 0))
    nodeid = struct.unpack_from("<Q", front.fuse(fp.Opcode.LOOKUP, b"hello\0"), 16)[0]
    release, synced = threading.Event(), []
    real_fsync = os.fsync

    def slow_fsync(fd: int) -> None:
        release.wait(10)
        real_fsync(fd)
        synced.append(fd)

    monkeypatch.setattr(os, "fsync", slow_fsync)
    head = fp.IN_HEADER.pack(56, fp.Opcode.FSYNC, 7, nodeid, 0, 0, 0, 0, 0)
    front.poke(BUF + 0x1000, head + struct.pack("<QII", 0, 0, 0))
    used = struct.unpack("<H", front.peek(USED + 2, 2))[0]
    # Its chain in descriptors 4 and 5, which the GETATTR below leaves alone.
    front.poke(DESC + 16 * 4, struct.pack("<QIHH", BUF + 0x1000, 56, 1, 5))
    front.poke(DESC + 16 * 5, struct.pack("<QIHH", BUF + 0x2000, 64, 2, 0))
    front.poke(AVAIL + 4 + 2 * (front.avail_idx % QSIZE), struct.pack("<H", 4))
    front.avail_idx += 1
    front.poke(AVAIL, struct.pack("<HH", 0, front.avail_idx))
    os.eventfd_write(front.kick, 1)
    # The GETATTR behind it is answered while the fsync waits.
    attr = front.fuse(fp.Opcode.GETATTR, bytes(16), nodeid)
    assert fp.OUT_HEADER.unpack_from(attr)[1] == 0 and not synced
    release.set()
    front.wait_used(used + 1)
    assert fp.OUT_HEADER.unpack_from(front.peek(BUF + 0x2000, 16)) == (16, 0, 7)
    assert synced


def test_hostile_messages_and_requests_are_refused(served: tuple[FrontEnd, Path]) -> None:
    front, _ = served
    # Garbage, wrong sizes, a memory table without its descriptor, bad queue indices.
    front.send(vu.Request.SET_MEM_TABLE, vu.encode_mem_table([vu.MemRegion(0, MEM, 0, 0)]))
    front.send(vu.Request.SET_VRING_NUM, vu.encode_vring_state(7, 16))
    front.send(vu.Request.SET_VRING_ADDR, b"short")
    front.send(999, b"")
    front.send(vu.Request.GET_CONFIG, struct.pack("<III", 0, 100000, 0))
    # Rings outside guest memory: the queue is refused, the server goes on.
    front.setup_queue()
    bad = struct.pack("<IIQQQQ", 1, 0, MEM * 4, USED, AVAIL, 0)
    front.send(vu.Request.SET_VRING_ADDR, bad)
    front.ask(vu.Request.GET_FEATURES)  # the bad address is in place before the kick
    front.submit([(BUF, 64, 0)])
    assert vu.decode_u64(front.ask(vu.Request.GET_FEATURES))  # still answering
    front.setup_queue()
    # A descriptor pointing outside guest memory, then a looping chain.
    before = struct.unpack("<H", front.peek(USED + 2, 2))[0]
    front.submit([(MEM - 8, 64, 0), (BUF, 64, 2)])
    front.wait_used(before)
    front.poke(DESC, struct.pack("<QIHH", BUF, 64, 1, 0))  # next = itself
    front.poke(AVAIL + 4 + 2 * (front.avail_idx % QSIZE), struct.pack("<H", 0))
    front.avail_idx += 1
    front.poke(AVAIL, struct.pack("<HH", 0, front.avail_idx))
    os.eventfd_write(front.kick, 1)
    front.wait_used(before + 1)
    # A request claiming more bytes than any FUSE request has (the same memory, thrice).
    front.submit([(0, MEM, 0), (0, MEM, 0), (0, MEM, 0), (BUF, 64, 2)])
    front.wait_used(before + 2)
    # Malformed FUSE: a header that lies about its length, an unknown opcode, escapes.
    front.poke(BUF, fp.IN_HEADER.pack(9999, fp.Opcode.LOOKUP, 5, 1, 0, 0, 0, 0, 0))
    used = struct.unpack("<H", front.peek(USED + 2, 2))[0]
    front.submit([(BUF, fp.IN_HEADER.size, 0), (BUF + 0x8000, 64, 2)])
    front.wait_used(used)
    assert fp.OUT_HEADER.unpack_from(front.peek(BUF + 0x8000, 16))[1] == -errno.EINVAL
    assert fp.OUT_HEADER.unpack_from(front.fuse(4242, b""))[1] == -errno.ENOSYS
    for name in (b"..", b"../secret"):
        reply = front.fuse(fp.Opcode.LOOKUP, name + b"\0")
        assert fp.OUT_HEADER.unpack_from(reply)[1] == -errno.EINVAL
    create = struct.pack("<IIII", os.O_RDWR, 0o644, 0, 0) + b"../escape\0"
    assert fp.OUT_HEADER.unpack_from(front.fuse(fp.Opcode.CREATE, create))[1] == -errno.EINVAL
    # And a good request still works.
    entry = front.fuse(fp.Opcode.LOOKUP, b"hello\0")
    assert fp.OUT_HEADER.unpack_from(entry)[1] == 0


def test_a_name_too_long_is_enametoolong_without_a_warning(
    served: tuple[FrontEnd, Path], caplog: pytest.LogCaptureFixture
) -> None:
    """A name of more than 255 bytes is a user's mistake, not a malformed request: the
    guest gets ENAMETOOLONG and the terminal no warning (a bad name still warns)."""
    front, tmp_path = served
    front.setup_queue()
    long = b"n" * 256
    create = struct.pack("<IIII", os.O_RDWR | os.O_CREAT, 0o644, 0, 0)
    with caplog.at_level(logging.DEBUG, logger="colinux.cofs"):
        for opcode, body in (
            (fp.Opcode.LOOKUP, long + b"\0"),
            (fp.Opcode.CREATE, create + long + b"\0"),
            (fp.Opcode.MKDIR, struct.pack("<II", 0o755, 0) + long + b"\0"),
            (fp.Opcode.UNLINK, long + b"\0"),
            (fp.Opcode.RENAME, struct.pack("<Q", 1) + b"hello\0" + long + b"\0"),
        ):
            assert fp.OUT_HEADER.unpack_from(front.fuse(opcode, body))[1] == -errno.ENAMETOOLONG
        assert not [r for r in caplog.records if r.levelno > logging.DEBUG]
        made = front.fuse(fp.Opcode.CREATE, create + b"n" * 255 + b"\0")
        assert fp.OUT_HEADER.unpack_from(made)[1] == 0
        bad = front.fuse(fp.Opcode.LOOKUP, b"n" * 256 + b"/x\0")
        assert fp.OUT_HEADER.unpack_from(bad)[1] == -errno.EINVAL
    assert [r.levelno for r in caplog.records if "refused" in r.getMessage()] == [logging.WARNING]
    assert sorted(os.listdir(tmp_path / "share")) == ["hello", "n" * 255]
    (tmp_path / "share" / ("n" * 255)).unlink()


def test_a_new_front_end_after_the_old_one_went(served: tuple[FrontEnd, Path]) -> None:
    """A rebooted guest is a new UML process: it connects again and is served again."""
    front, tmp_path = served
    front.setup_queue()
    front.sock.close()
    again = FrontEnd(str(tmp_path / "cofs.sock"))
    try:
        again.setup_queue()
        init = again.fuse(fp.Opcode.INIT, struct.pack("<IIII", 7, 31, 65536, 0))
        assert fp.OUT_HEADER.unpack_from(init)[1] == 0
    finally:
        again.close()
    front.sock = socket.socket()  # closed above; let the fixture close something


def test_request_statistics_for_the_benchmark(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """COLINUX_COFS_STATS (bench/cofs.py): each connection's requests and
    the server's time per opcode, appended when the front end goes."""
    share = tmp_path / "share"
    share.mkdir()
    (share / "hello").write_bytes(b"hi\n")
    stats = tmp_path / "stats.jsonl"
    monkeypatch.setenv("COLINUX_COFS_STATS", str(stats))
    server = CofsServer(str(tmp_path / "cofs.sock"), str(share), tag="cofs3")
    server.start()
    try:
        front = FrontEnd(str(tmp_path / "cofs.sock"))
        front.setup_queue()
        front.fuse(fp.Opcode.INIT, struct.pack("<IIII", 7, 31, 65536, 0))
        for _ in range(3):
            entry = front.fuse(fp.Opcode.LOOKUP, b"hello\0")
        front.fuse(fp.Opcode.GETATTR, bytes(16), struct.unpack_from("<Q", entry, 16)[0])
        front.close()
        deadline = time.monotonic() + 5
        while not stats.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        server.stop()
    (record,) = [json.loads(line) for line in stats.read_text().splitlines()]
    assert record["tag"] == "cofs3" and record["kicks"] == 5 and record["busy_ns"] > 0
    counts = {name: count for name, (count, ns) in record["ops"].items() if ns > 0}
    assert counts == {"INIT": 1, "LOOKUP": 3, "GETATTR": 1}
