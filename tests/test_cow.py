"""UML's COW format: the codec, and create / check / commit on real files.

The files written here are read by UML itself in tests/test_image.py (a
guest boots on a COW file this code made, and its writes commit back).
"""

from __future__ import annotations

import contextlib
import os
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from colinux.errors import UserError
from colinux.formats.cow import (
    HEADER_SIZE,
    MAGIC,
    CowFormatError,
    CowHeader,
    check_cow,
    commit_cow,
    create_cow,
    decode_header,
    encode_header,
    read_header,
    set_sectors,
    written_sectors,
)

paths = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"),
    min_size=1,
    max_size=200,
).map(lambda p: "/" + p)


@given(paths, st.integers(0, 2**32 - 1), st.integers(0, 2**63 - 1))
def test_header_round_trip(path: str, mtime: int, size: int) -> None:
    header = CowHeader(path, mtime, size)
    data = encode_header(header)
    assert len(data) == HEADER_SIZE == 4128
    assert decode_header(data) == header


def test_layout_is_umls() -> None:
    # 1 GiB base: 2097152 sectors, a 262144-byte bitmap after the 8 KiB header block.
    header = CowHeader("/srv/root.img", 1234, 1 << 30)
    data = encode_header(header)
    assert struct.unpack(">IIIQIII", data[:32]) == (MAGIC, 3, 1234, 1 << 30, 512, 4096, 0)
    assert data[32:45] == b"/srv/root.img"
    assert header.bitmap_offset == 8192
    assert header.bitmap_len == 262144
    assert header.data_offset == 8192 + 262144
    assert header.sector_offset(3) == header.data_offset + 1536


@given(st.binary(max_size=HEADER_SIZE + 10))
def test_decoder_refuses_garbage_cleanly(data: bytes) -> None:
    with contextlib.suppress(CowFormatError):
        decode_header(data)


def test_decoder_refuses_old_64_bit_layout() -> None:
    data = bytearray(encode_header(CowHeader("/x", 1, 512)))
    data[32:36] = b"\0\0\0\0"
    with pytest.raises(CowFormatError, match="64-bit"):
        decode_header(bytes(data))


@given(st.sets(st.integers(0, 4095)))
def test_bitmap_round_trip(sectors: set[int]) -> None:
    bitmap = bytearray(512)
    set_sectors(bitmap, sorted(sectors))
    assert written_sectors(bytes(bitmap)) == sorted(sectors)


def _uml_write(cow: Path, header: CowHeader, sector: int, data: bytes) -> None:
    """Write one sector as UML does: data in place, then its bit."""
    with open(cow, "r+b") as f:
        f.seek(header.sector_offset(sector))
        f.write(data)
        f.seek(header.bitmap_offset + sector // 8)
        byte = f.read(1)[0]
        f.seek(header.bitmap_offset + sector // 8)
        f.write(bytes([byte | 1 << (sector % 8)]))


@settings(max_examples=30, deadline=None)
@given(
    st.integers(1, 64 * 512 + 300),
    st.dictionaries(st.integers(0, 64), st.binary(min_size=512, max_size=512), max_size=20),
)
def test_commit_writes_exactly_the_cow_sectors(
    tmp_path_factory: pytest.TempPathFactory, size: int, writes: dict[int, bytes]
) -> None:
    tmp = tmp_path_factory.mktemp("cow")
    base, cow = tmp / "base.img", tmp / "guest.cow"
    original = os.urandom(size)
    base.write_bytes(original)
    header = create_cow(str(cow), str(base))
    sectors = (size + 511) // 512
    expected = bytearray(original)
    for sector, data in writes.items():
        if sector >= sectors:
            continue
        _uml_write(cow, header, sector, data)
        end = min(size, sector * 512 + 512)
        expected[sector * 512 : end] = data[: end - sector * 512]
    count = commit_cow(str(cow))
    assert count == len([s for s in writes if s < sectors])
    assert base.read_bytes() == bytes(expected)
    # The COW file starts over, empty, on the updated base.
    fresh = check_cow(str(cow), str(base), label="test")
    assert commit_cow(str(cow)) == 0
    assert fresh.size == size


def test_new_cow_file_is_sparse_and_names_its_base(tmp_path: Path) -> None:
    base = tmp_path / "base.img"
    with open(base, "wb") as f:
        f.truncate(256 << 20)
    cow = tmp_path / "guest.cow"
    header = create_cow(str(cow), str(base))
    assert header.backing_file == str(base.resolve())
    assert cow.stat().st_size == header.file_size
    assert cow.stat().st_blocks * 512 < 64 << 10
    with pytest.raises(FileExistsError):
        create_cow(str(cow), str(base))


def test_changed_base_is_refused(tmp_path: Path) -> None:
    base = tmp_path / "base.img"
    base.write_bytes(b"\0" * 4096)
    cow = tmp_path / "guest.cow"
    create_cow(str(cow), str(base))
    os.utime(base, (1, 1))
    with pytest.raises(UserError, match="changed after COW file"):
        check_cow(str(cow), str(base), label="cobd0")
    with pytest.raises(UserError, match="changed after COW file"):
        commit_cow(str(cow))


def test_cow_of_another_base_is_refused(tmp_path: Path) -> None:
    (tmp_path / "a.img").write_bytes(b"\0" * 4096)
    (tmp_path / "b.img").write_bytes(b"\0" * 4096)
    cow = tmp_path / "guest.cow"
    create_cow(str(cow), str(tmp_path / "a.img"))
    with pytest.raises(UserError, match="belongs to base"):
        check_cow(str(cow), str(tmp_path / "b.img"), label="cobd0")


def test_moved_base_is_followed(tmp_path: Path) -> None:
    base = tmp_path / "a.img"
    base.write_bytes(b"\0" * 4096)
    cow = tmp_path / "guest.cow"
    create_cow(str(cow), str(base))
    moved = tmp_path / "moved.img"
    base.rename(moved)
    check_cow(str(cow), str(moved), label="cobd0")
    assert read_header(str(cow), label="t").backing_file == str(moved.resolve())


def test_not_a_cow_file(tmp_path: Path) -> None:
    plain = tmp_path / "plain.img"
    plain.write_bytes(b"\0" * 8192)
    with pytest.raises(UserError, match="not a usable COW file"):
        read_header(str(plain), label="cobd0")
