"""Split virtqueues living in guest memory that the vhost-user front end shares.

UML sends one ``SET_MEM_TABLE`` with a descriptor of the guest's physical
memory; ``GuestMemory`` maps it and turns guest addresses into memoryviews,
refusing anything outside the mapped regions. A ``Virtqueue`` walks the split
ring (descriptor table, available ring, used ring) defensively: a guest can
write anything there, so every index, length and chain is checked, and a bad
chain raises ``DescriptorError`` instead of touching memory it should not::

    memory = GuestMemory.map(regions, fds)
    queue = Virtqueue(memory, size=128, addr=vring_addr)
    while (head := queue.pop()) is not None:
        chain = queue.chain(head)            # readable and writable memoryviews
        ...
        queue.push(head, written)
    queue.notify()
"""

from __future__ import annotations

import contextlib
import mmap
import os
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field

from colinux.cofs.vhost_user import MemRegion, VringAddr
from colinux.errors import ColinuxError

DESC = struct.Struct("<QIHH")
DESC_F_NEXT = 1
DESC_F_WRITE = 2
DESC_F_INDIRECT = 4
AVAIL_F_NO_INTERRUPT = 1
MAX_QUEUE_SIZE = 32768


class DescriptorError(ColinuxError):
    """A descriptor, ring or address the guest gave us that we must not follow."""


@dataclass
class _Mapping:
    region: MemRegion
    view: memoryview
    mm: mmap.mmap


class GuestMemory:
    """The front end's memory regions, mapped into this process."""

    def __init__(self, mappings: list[_Mapping]) -> None:
        self._maps = mappings

    @classmethod
    def map(cls, regions: list[MemRegion], fds: list[int]) -> GuestMemory:
        if len(fds) != len(regions):
            raise DescriptorError(f"{len(regions)} memory regions but {len(fds)} descriptors")
        maps = []
        for region, fd in zip(regions, fds, strict=True):
            mm = mmap.mmap(fd, region.size, mmap.MAP_SHARED, offset=region.mmap_offset)
            maps.append(_Mapping(region, memoryview(mm), mm))
        return cls(maps)

    def close(self) -> None:
        for m in self._maps:
            m.view.release()
            # Views of a chain the guest made us give up on may still exist:
            # then the mapping goes when the last of them is collected.
            with contextlib.suppress(BufferError):
                m.mm.close()
        self._maps = []

    def view(self, addr: int, length: int, *, user: bool = False) -> memoryview:
        """Guest memory [addr, addr+length) (guest physical, or front-end user if ``user``)."""
        for m in self._maps:
            base = m.region.user_addr if user else m.region.guest_addr
            if base <= addr and addr + length <= base + m.region.size and length >= 0:
                start = addr - base
                return m.view[start : start + length]
        raise DescriptorError(f"guest address {addr:#x}+{length:#x} is outside guest memory")


@dataclass
class Chain:
    """One request's descriptor chain: the device-readable then the device-writable buffers."""

    head: int
    readable: list[memoryview] = field(default_factory=list)
    writable: list[memoryview] = field(default_factory=list)

    @property
    def readable_size(self) -> int:
        return sum(len(v) for v in self.readable)

    def read_all(self, limit: int) -> bytes:
        """The request bytes; a chain claiming more than ``limit`` is refused, not copied."""
        if self.readable_size > limit:
            raise DescriptorError(f"a request of more than {limit} bytes")
        return b"".join(self.readable)

    def read_prefix(self, length: int) -> bytes:
        """The first ``length`` request bytes (fewer if the request is shorter)."""
        return b"".join(_cut(self.readable, 0, length))

    def readable_views(self, at: int, length: int) -> list[memoryview]:
        """memoryviews covering ``length`` request bytes from byte ``at`` (for pwritev)."""
        return _cut(self.readable, at, length)

    @property
    def writable_size(self) -> int:
        return sum(len(v) for v in self.writable)

    def write(self, data: bytes, at: int = 0) -> int:
        """Copy ``data`` into the writable buffers from byte ``at``; how many bytes fit."""
        done = 0
        for v in _cut(self.writable, at, len(data)):
            n = len(v)
            v[:] = data[done : done + n]
            done += n
        return done

    def writable_views(self, at: int, length: int) -> list[memoryview]:
        """memoryviews covering ``length`` writable bytes from byte ``at`` (for preadv)."""
        return _cut(self.writable, at, length)


def _cut(views: list[memoryview], at: int, length: int) -> list[memoryview]:
    """The parts of ``views`` (one buffer in pieces) covering [at, at + length)."""
    out = []
    pos = 0
    for v in views:
        if length <= 0:
            break
        end = pos + len(v)
        if end > at:
            start = max(at - pos, 0)
            n = min(len(v) - start, length)
            out.append(v if start == 0 and n == len(v) else v[start : start + n])
            length -= n
            at += n
        pos = end
    return out


class Virtqueue:
    """One split virtqueue, as configured by SET_VRING_NUM/ADDR/BASE."""

    def __init__(self, memory: GuestMemory, *, size: int, addr: VringAddr, base: int) -> None:
        if not 0 < size <= MAX_QUEUE_SIZE or size & (size - 1):
            raise DescriptorError(f"virtqueue size {size}")
        self.size = size
        self.memory = memory
        self.desc = memory.view(addr.desc, 16 * size, user=True)
        self.avail = memory.view(addr.avail, 6 + 2 * size, user=True)
        self.used = memory.view(addr.used, 6 + 8 * size, user=True)
        self.last_avail = base & 0xFFFF
        self.used_idx = int.from_bytes(self.used[2:4], "little")

    def pop(self) -> int | None:
        """The next available descriptor chain's head, or None."""
        avail_idx = int.from_bytes(self.avail[2:4], "little")
        if avail_idx == self.last_avail:
            return None
        if (avail_idx - self.last_avail) & 0xFFFF > self.size:
            raise DescriptorError(f"available index jumped from {self.last_avail} to {avail_idx}")
        slot = 4 + 2 * (self.last_avail % self.size)
        head = int.from_bytes(self.avail[slot : slot + 2], "little")
        self.last_avail = (self.last_avail + 1) & 0xFFFF
        return head

    def chain(self, head: int) -> Chain:
        """Follow the chain from ``head``: readable buffers must all precede writable ones."""
        chain = Chain(head)
        index = head
        for _ in range(self.size):
            if index >= self.size:
                raise DescriptorError(f"descriptor index {index} beyond queue size {self.size}")
            addr, length, flags, nxt = DESC.unpack_from(self.desc, 16 * index)
            if flags & DESC_F_INDIRECT:
                raise DescriptorError("indirect descriptors were not negotiated")
            view = self.memory.view(addr, length)
            if flags & DESC_F_WRITE:
                chain.writable.append(view)
            elif chain.writable:
                raise DescriptorError("a readable descriptor after a writable one")
            else:
                chain.readable.append(view)
            if not flags & DESC_F_NEXT:
                return chain
            index = nxt
        raise DescriptorError(f"descriptor chain from {head} loops")

    def push(self, head: int, written: int) -> None:
        """Return a chain to the guest, saying how many bytes we wrote into it."""
        slot = 4 + 8 * (self.used_idx % self.size)
        struct.pack_into("<II", self.used, slot, head, written)
        self.used_idx = (self.used_idx + 1) & 0xFFFF
        # The entry must be visible before the index: CPython's stores are in
        # program order and x86 does not reorder stores with stores.
        struct.pack_into("<H", self.used, 2, self.used_idx)

    def wants_interrupt(self) -> bool:
        return not int.from_bytes(self.avail[0:2], "little") & AVAIL_F_NO_INTERRUPT

    def release(self) -> None:
        for v in (self.desc, self.avail, self.used):
            v.release()


_ONE = (1).to_bytes(8, "little")


def signal(fd: int | None) -> None:
    """Raise an eventfd (the call fd) so the guest sees the used ring."""
    if fd is not None:
        # BlockingIOError: the counter is saturated, the guest will look anyway.
        with contextlib.suppress(BlockingIOError):
            os.write(fd, _ONE)


def drain(fd: int) -> None:
    """Reset an eventfd (the kick fd) before looking at the ring."""
    with contextlib.suppress(BlockingIOError):
        os.read(fd, 8)


def close_all(fds: Iterable[int | None]) -> None:
    for fd in fds:
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)
