"""Property tests of the wire codecs: cpio newc, the control protocol, mconsole, and
the agent's command word."""

from __future__ import annotations

import contextlib
import stat
import struct
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from colinux.control import protocol
from colinux.daemon.agent_protocol import shell_word
from colinux.engine import mconsole
from colinux.formats.cpio import CpioArchive, CpioEntry, decode, encode_entry

names = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"), min_size=1, max_size=40
).filter(lambda n: n != "TRAILER!!!")


def test_cpio_refuses_the_trailer_name() -> None:
    with pytest.raises(ValueError):
        CpioArchive().add_file("TRAILER!!!", b"")


@given(st.lists(st.tuples(names, st.binary(max_size=300), st.integers(0, 0o7777)), max_size=12))
def test_cpio_round_trip(files: list[tuple[str, bytes, int]]) -> None:
    archive = CpioArchive()
    for name, data, mode in files:
        archive.add_file(name, data, mode)
    image = archive.to_bytes()
    assert len(image) % 4 == 0
    back = decode(image)
    assert [(e.name, e.data, stat.S_IMODE(e.mode)) for e in back] == files
    assert all(stat.S_ISREG(e.mode) for e in back)


def test_cpio_header_layout() -> None:
    raw = encode_entry(
        CpioEntry("dev/console", stat.S_IFCHR | 0o600, rdev_major=5, rdev_minor=1), 7
    )
    assert raw.startswith(b"070701" + b"%08x" % 7 + b"%08x" % (stat.S_IFCHR | 0o600))
    assert raw[6 + 8 * 9 : 6 + 8 * 11] == b"0000000500000001"  # rdevmajor, rdevminor
    assert b"dev/console\0" in raw


@given(st.lists(st.one_of(st.binary(max_size=2000), st.dictionaries(names, st.integers()))))
def test_frames_survive_any_chunking(messages: list[object]) -> None:
    wire = b"".join(
        protocol.encode_data(m) if isinstance(m, bytes) else protocol.encode_json(m)  # type: ignore[arg-type]
        for m in messages
    )
    for chunk in (1, 3, 4096):
        decoder = protocol.FrameDecoder()
        out: list[object] = []
        for i in range(0, len(wire), chunk):
            for kind, payload in decoder.feed(wire[i : i + chunk]):
                out.append(payload if kind == protocol.DATA else protocol.decode_json(payload))
        expected = [m for m in messages if m != b""]
        assert [o for o in out if o != b""] == expected
        assert decoder.pending == 0


@given(st.binary(max_size=64))
def test_decoder_rejects_garbage_cleanly(data: bytes) -> None:
    decoder = protocol.FrameDecoder()
    try:
        for kind, payload in decoder.feed(data):
            if kind == protocol.JSON:
                protocol.decode_json(payload)
    except protocol.ProtocolError:
        pass


def test_oversized_frame_is_refused() -> None:
    with pytest.raises(protocol.ProtocolError):
        list(protocol.FrameDecoder().feed(b"D" + struct.pack(">I", protocol.MAX_PAYLOAD + 1)))


@given(st.text(max_size=100).filter(lambda t: len(t.encode()) < mconsole.MAX_DATA))
def test_mconsole_request_layout(command: str) -> None:
    raw = mconsole.encode_request(command)
    magic, version, length = struct.unpack_from("=III", raw)
    assert (magic, version) == (mconsole.MAGIC, mconsole.VERSION)
    assert raw[12 : 12 + length] == command.encode()


@given(st.integers(0, 5), st.booleans(), st.binary(max_size=mconsole.MAX_DATA))
def test_mconsole_reply_decoding(err: int, more: bool, data: bytes) -> None:
    packet = struct.pack("=III", err, int(more), len(data)) + data
    reply = mconsole.decode_reply(packet)
    assert (reply.err, reply.more) == (err, more)
    assert reply.data == data.split(b"\0", 1)[0].decode(errors="replace")


@given(st.binary(max_size=40))
def test_mconsole_reply_garbage(packet: bytes) -> None:
    with contextlib.suppress(ValueError):
        mconsole.decode_reply(packet)


@settings(max_examples=60, deadline=None)
@given(st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0")))
def test_the_agents_command_word_is_read_back_by_busybox_sh(text: str) -> None:
    # The agent reads the RUN line with `read -r`, defines nl as a newline and evals.
    script = 'read -r payload; nl="\n"; eval "cmd=$payload"; printf %s "$cmd"'
    out = subprocess.run(
        ["/bin/busybox", "sh", "-c", script],
        input=shell_word(text).encode("utf-8", "surrogateescape") + b"\n",
        capture_output=True,
        check=True,
    )
    assert out.stdout == text.encode()
    assert "\n" not in shell_word(text)
