"""UML's copy-on-write disk format: a small codec, and the file operations on it.

A COW file (``ubdN=COW,BASE``) holds the sectors a guest wrote; the base
image stays untouched, so many guests share one base. Layout (version 3,
the one UML writes; all numbers big-endian)::

    0     magic 0x4f4f4f4d ("OOOM"), version 3
    8     mtime of the base (u32 seconds), size of the base (u64 bytes)
    20    sector size (512), alignment (4096), format 0 (bitmap)
    32    base path, NUL-padded to 4096 bytes          (header: 4128 bytes)
    ...   bitmap at the header rounded up to the alignment: bit i set
          (byte i // 8, bit i % 8, least significant first) = sector i is here
    ...   data at bitmap end rounded up to the alignment: sector i at data + 512 i

UML refuses a COW file whose base has another size or mtime ("backing file
mismatch"); ``check_cow`` says so before boot, in one line. ``create_cow``
makes an empty COW file (UML would create one itself, but the sandbox binds
only files that exist), ``commit_cow`` writes a COW file's sectors into its
base and starts the COW file over, empty, on the updated base::

    header = create_cow("guest.cow", "/srv/root.img")
    check_cow("guest.cow", "/srv/root.img")       # UserError on a mismatch
    sectors = commit_cow("guest.cow")             # how many sectors went in
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

from colinux.errors import UserError

MAGIC = 0x4F4F4F4D
VERSION = 3
PATH_LEN = 4096
_HEADER = struct.Struct(">IIIQIII")  # magic, version, mtime, size, sectorsize, alignment, format
HEADER_SIZE = _HEADER.size + PATH_LEN  # 4128
SECTOR_SIZE = 512
ALIGNMENT = 4096  # UML's PAGE_SIZE: data stays page aligned for mmap
BITMAP_FORMAT = 0


class CowFormatError(ValueError):
    """Bytes that are not a COW header colinux understands."""


def _round_up(value: int, align: int) -> int:
    return (value + align - 1) // align * align


@dataclass(frozen=True)
class CowHeader:
    backing_file: str
    mtime: int  # the base's st_mtime, whole seconds, as UML keeps it (32 bits)
    size: int  # the base's size in bytes
    sector_size: int = SECTOR_SIZE
    alignment: int = ALIGNMENT

    @property
    def bitmap_offset(self) -> int:
        return _round_up(HEADER_SIZE, self.alignment)

    @property
    def sectors(self) -> int:
        return (self.size + self.sector_size - 1) // self.sector_size

    @property
    def bitmap_len(self) -> int:
        return (self.sectors + 7) // 8

    @property
    def data_offset(self) -> int:
        return _round_up(self.bitmap_offset + self.bitmap_len, self.alignment)

    @property
    def file_size(self) -> int:
        """The size UML gives a new COW file (sparse: data only where written)."""
        return self.data_offset + self.size

    def sector_offset(self, sector: int) -> int:
        return self.data_offset + sector * self.sector_size


def encode_header(header: CowHeader) -> bytes:
    path = header.backing_file.encode()
    if b"\0" in path or len(path) >= PATH_LEN:
        raise CowFormatError(f"base path must be under {PATH_LEN} bytes, without NUL")
    fixed = _HEADER.pack(
        MAGIC,
        VERSION,
        header.mtime & 0xFFFFFFFF,
        header.size,
        header.sector_size,
        header.alignment,
        BITMAP_FORMAT,
    )
    return fixed + path.ljust(PATH_LEN, b"\0")


def decode_header(data: bytes) -> CowHeader:
    """The header at the start of ``data`` (at least ``HEADER_SIZE`` bytes)."""
    if len(data) < HEADER_SIZE:
        raise CowFormatError("too short for a COW header")
    magic, version, mtime, size, sector_size, alignment, fmt = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise CowFormatError("not a UML COW file (no MOOO magic)")
    if version != VERSION:
        raise CowFormatError(f"COW version {version}; colinux reads version {VERSION}")
    if data[_HEADER.size : _HEADER.size + 4] == b"\0\0\0\0":
        # The pre-2006 64-bit layout (mtime padded to 8 bytes): its path starts 4 bytes later.
        raise CowFormatError("an old 64-bit layout COW file (convert it with uml_moo)")
    if fmt != BITMAP_FORMAT:
        raise CowFormatError(f"COW format {fmt}; only the bitmap format (0) exists")
    if sector_size <= 0 or sector_size & (sector_size - 1) or alignment <= 0:
        raise CowFormatError(f"bad sector size {sector_size} or alignment {alignment}")
    path = data[_HEADER.size : _HEADER.size + PATH_LEN].split(b"\0", 1)[0]
    return CowHeader(path.decode(errors="surrogateescape"), mtime, size, sector_size, alignment)


def set_sectors(bitmap: bytearray, sectors: list[int] | range) -> None:
    for sector in sectors:
        bitmap[sector // 8] |= 1 << (sector % 8)


def written_sectors(bitmap: bytes) -> list[int]:
    """Sectors whose bit is set, in order."""
    out: list[int] = []
    for i, byte in enumerate(bitmap):
        if byte:
            out.extend(i * 8 + bit for bit in range(8) if byte & (1 << bit))
    return out


# --- files ----------------------------------------------------------------------------


def read_header(path: str, *, label: str) -> CowHeader:
    try:
        with open(path, "rb") as f:
            data = f.read(HEADER_SIZE)
    except OSError as error:
        raise UserError(f"{label}: COW file '{path}': {error.strerror}") from None
    try:
        return decode_header(data)
    except CowFormatError as error:
        raise UserError(f"{label}: '{path}' is not a usable COW file: {error}") from None


def header_for(base: str) -> CowHeader:
    st = os.stat(base)
    return CowHeader(os.path.realpath(base), int(st.st_mtime), st.st_size)


def create_cow(cow: str, base: str) -> CowHeader:
    """A new, empty COW file on ``base`` (made exclusively: never over a file)."""
    header = header_for(base)
    fd = os.open(cow, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.write(fd, encode_header(header))
        os.ftruncate(fd, header.file_size)  # sparse: the bitmap reads as zeros
    except BaseException:
        os.close(fd)
        os.unlink(cow)
        raise
    os.close(fd)
    return header


def check_cow(cow: str, base: str, *, label: str) -> CowHeader:
    """The COW file's header, once it is known to belong to ``base`` as it is now.

    A base changed since the COW file was made (other size or mtime) would
    mix old and new sectors: that is an error here, not corruption later.
    """
    header = read_header(cow, label=label)
    st = os.stat(base)
    same_file = os.path.exists(header.backing_file) and os.path.samefile(header.backing_file, base)
    if not same_file and os.path.exists(header.backing_file):
        raise UserError(
            f"{label}: COW file '{cow}' belongs to base '{header.backing_file}', not '{base}'"
        )
    if st.st_size != header.size or int(st.st_mtime) & 0xFFFFFFFF != header.mtime:
        raise UserError(
            f"{label}: base '{base}' changed after COW file '{cow}' was made "
            f"(size {st.st_size} vs {header.size}, mtime {int(st.st_mtime)} vs "
            f"{header.mtime}); its sectors no longer fit the base: commit or remove it"
        )
    if not same_file:
        # The base was moved (same size and mtime): point the COW file at it,
        # as UML itself does when given a new base path.
        header = CowHeader(
            os.path.realpath(base), header.mtime, header.size, header.sector_size, header.alignment
        )
        with open(cow, "r+b") as f:
            f.write(encode_header(header))
    return header


def commit_cow(cow: str, *, label: str = "commit") -> int:
    """Write the COW file's sectors into its base; the COW file starts over, empty.

    Returns the number of sectors written. The base's mtime changes, so other
    COW files on the same base are refused from then on (check_cow).
    """
    header = read_header(cow, label=label)
    base = header.backing_file
    if not os.path.exists(base):
        raise UserError(f"{label}: base '{base}' of COW file '{cow}' does not exist")
    check_cow(cow, base, label=label)
    count = 0
    with open(cow, "rb") as src, open(base, "r+b") as dst:
        src.seek(header.bitmap_offset)
        bitmap = src.read(header.bitmap_len)
        if len(bitmap) < header.bitmap_len:
            raise UserError(f"{label}: COW file '{cow}' is truncated (short bitmap)")
        for sector in written_sectors(bitmap):
            offset = sector * header.sector_size
            length = min(header.sector_size, header.size - offset)
            if length <= 0:
                continue
            data = os.pread(src.fileno(), length, header.sector_offset(sector))
            os.pwrite(dst.fileno(), data.ljust(length, b"\0"), offset)
            count += 1
        dst.flush()
        os.fsync(dst.fileno())
    # Start over: a fresh header for the base as it is now, an all-clear bitmap.
    fresh = header_for(base)
    with open(cow, "r+b") as f:
        f.write(encode_header(fresh))
        f.truncate(fresh.bitmap_offset)
        f.truncate(fresh.file_size)
        os.fsync(f.fileno())
    return count
