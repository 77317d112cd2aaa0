"""vhost-user message codec: pure functions over bytes.

UML's ``virtio_uml`` driver is the vhost-user *front end* (master); a cofs
server is the back end. Each message is a 12-byte header (request, flags,
payload size) followed by the payload; file descriptors travel beside it as
SCM_RIGHTS. This module only turns bytes into values and back::

    header = decode_header(data[:HEADER_SIZE])     # -> Header
    addr = decode_vring_addr(payload)              # -> VringAddr
    reply = encode_reply(header.request, encode_u64(features))

Every decoder raises ``ProtocolError`` on malformed input, never anything else.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

from colinux.errors import ColinuxError

HEADER = struct.Struct("<III")
HEADER_SIZE = HEADER.size
MAX_PAYLOAD = 4096  # the largest message UML sends is a config read/memory table
VERSION = 0x1
FLAG_REPLY = 0x4
FLAG_NEED_REPLY = 0x8

# Virtio and vhost-user feature bits the server offers.
VIRTIO_F_VERSION_1 = 1 << 32
VHOST_USER_F_PROTOCOL_FEATURES = 1 << 30
PROTOCOL_F_SLAVE_REQ = 1 << 5  # required by UML 6.1: without it the vring irq is 0 (EINVAL)
PROTOCOL_F_CONFIG = 1 << 9
VRING_FD_INVALID = 1 << 8  # in SET_VRING_KICK/CALL: no descriptor came with the message
MAX_REGIONS = 8


class Request(IntEnum):
    GET_FEATURES = 1
    SET_FEATURES = 2
    SET_OWNER = 3
    RESET_OWNER = 4
    SET_MEM_TABLE = 5
    SET_LOG_BASE = 6
    SET_LOG_FD = 7
    SET_VRING_NUM = 8
    SET_VRING_ADDR = 9
    SET_VRING_BASE = 10
    GET_VRING_BASE = 11
    SET_VRING_KICK = 12
    SET_VRING_CALL = 13
    SET_VRING_ERR = 14
    GET_PROTOCOL_FEATURES = 15
    SET_PROTOCOL_FEATURES = 16
    GET_QUEUE_NUM = 17
    SET_VRING_ENABLE = 18
    SET_SLAVE_REQ_FD = 21
    GET_CONFIG = 24
    SET_CONFIG = 25


class ProtocolError(ColinuxError):
    """A vhost-user message that does not decode; the server logs and ignores it."""


@dataclass(frozen=True)
class Header:
    request: int
    flags: int
    size: int

    @property
    def need_reply(self) -> bool:
        return bool(self.flags & FLAG_NEED_REPLY)


@dataclass(frozen=True)
class MemRegion:
    guest_addr: int
    size: int
    user_addr: int
    mmap_offset: int


@dataclass(frozen=True)
class VringAddr:
    index: int
    flags: int
    desc: int  # in the front end's user address space
    used: int
    avail: int
    log: int


@dataclass(frozen=True)
class ConfigRequest:
    offset: int
    size: int
    flags: int


def decode_header(data: bytes) -> Header:
    if len(data) != HEADER_SIZE:
        raise ProtocolError(f"vhost-user header of {len(data)} bytes")
    request, flags, size = HEADER.unpack(data)
    if flags & 0x3 != VERSION:
        raise ProtocolError(f"vhost-user version {flags & 0x3}")
    if size > MAX_PAYLOAD:
        raise ProtocolError(f"vhost-user payload of {size} bytes")
    return Header(request, flags, size)


def encode_header(request: int, size: int, *, reply: bool = True) -> bytes:
    return HEADER.pack(request, VERSION | (FLAG_REPLY if reply else 0), size)


def encode_reply(request: int, payload: bytes) -> bytes:
    return encode_header(request, len(payload)) + payload


def encode_u64(value: int) -> bytes:
    return struct.pack("<Q", value)


def decode_u64(payload: bytes) -> int:
    if len(payload) < 8:
        raise ProtocolError(f"u64 payload of {len(payload)} bytes")
    return int(struct.unpack_from("<Q", payload)[0])


def decode_vring_state(payload: bytes) -> tuple[int, int]:
    """SET_VRING_NUM/BASE/ENABLE, GET_VRING_BASE: (queue index, number)."""
    if len(payload) < 8:
        raise ProtocolError(f"vring state of {len(payload)} bytes")
    index, num = struct.unpack_from("<II", payload)
    return index, num


def encode_vring_state(index: int, num: int) -> bytes:
    return struct.pack("<II", index, num)


def decode_vring_addr(payload: bytes) -> VringAddr:
    if len(payload) < 40:
        raise ProtocolError(f"vring address of {len(payload)} bytes")
    return VringAddr(*struct.unpack_from("<IIQQQQ", payload))


def decode_vring_fd(payload: bytes) -> tuple[int, bool]:
    """SET_VRING_KICK/CALL/ERR: (queue index, whether a descriptor came along)."""
    value = decode_u64(payload)
    return value & 0xFF, not value & VRING_FD_INVALID


def decode_mem_table(payload: bytes) -> list[MemRegion]:
    if len(payload) < 8:
        raise ProtocolError(f"memory table of {len(payload)} bytes")
    (count,) = struct.unpack_from("<I", payload)
    if not 0 < count <= MAX_REGIONS or len(payload) < 8 + 32 * count:
        raise ProtocolError(f"memory table of {count} regions in {len(payload)} bytes")
    regions = []
    for i in range(count):
        region = MemRegion(*struct.unpack_from("<QQQQ", payload, 8 + 32 * i))
        if region.size == 0 or region.mmap_offset % 4096:
            raise ProtocolError(f"memory region {region}")
        regions.append(region)
    return regions


def encode_mem_table(regions: list[MemRegion]) -> bytes:
    out = struct.pack("<II", len(regions), 0)
    for r in regions:
        out += struct.pack("<QQQQ", r.guest_addr, r.size, r.user_addr, r.mmap_offset)
    return out


def decode_config_request(payload: bytes) -> ConfigRequest:
    if len(payload) < 12:
        raise ProtocolError(f"config request of {len(payload)} bytes")
    request = ConfigRequest(*struct.unpack_from("<III", payload))
    if request.size > 256:
        raise ProtocolError(f"config request of {request.size} bytes")
    return request


def encode_config_reply(request: ConfigRequest, space: bytes) -> bytes:
    """GET_CONFIG's answer: the request echoed with the bytes of config space it asked for."""
    data = space[request.offset : request.offset + request.size]
    data += bytes(request.size - len(data))
    return struct.pack("<III", request.offset, request.size, request.flags) + data


def virtio_fs_config(tag: str, request_queues: int = 1) -> bytes:
    """The virtio-fs config space: tag[36] (NUL padded), num_request_queues."""
    raw = tag.encode()
    if not 0 < len(raw) <= 36:
        raise ValueError(f"virtio-fs tag {tag!r}")
    return raw.ljust(36, b"\0") + struct.pack("<I", request_queues)
