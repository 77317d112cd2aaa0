"""Serial lines (coserial): ttyS0..3 served by the daemon or on a host tty, a getty on each."""

from __future__ import annotations

import os
import pty
import select
import shlex
import signal
import subprocess
import time

import pytest
from conftest import Colinux, reaped
from test_daemon import Terminal, start


def read_until(fd: int, text: bytes, timeout: float = 20.0) -> bytes:
    out = b""
    deadline = time.monotonic() + timeout
    while text not in out:
        assert time.monotonic() < deadline, f"{text!r} not seen; got {out[-500:]!r}"
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            out += os.read(fd, 65536)
    return out


def test_serial_line_served_by_the_daemon_gives_a_login(colinux: Colinux) -> None:
    start(colinux, "tty", "ttys0=daemon", "ttys2=", "--debug-collector")
    line = Terminal(colinux, "serial", "tty", "0")
    line.read_until(b"tty login: ")  # the getty's prompt, replayed on attach
    line.type(b"root\r")
    line.read_until(b"tty:/root# ")
    line.type(b"echo on-$(tty)\r")
    line.read_until(b"on-/dev/ttyS0")
    line.type(b"\x1d")
    assert line.close() == 0
    assert b"detached from tty" in line.output
    events = colinux.run("debug", "tty", "--no-follow", "--component", "hub").stdout
    assert b"client attached line=ttyS0 clients=1" in events  # which hub, in debug events

    # A host pty for screen or minicom: the same line, the same shell.
    client = colinux.popen(
        "serial", "tty", "0", "--pty", "--no-replay",
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    with reaped(client):
        assert client.stdout is not None
        announced = client.stdout.readline().decode()
        path = announced.split(" is on ")[1].split()[0]
        assert announced.startswith("tty ttyS0 is on /dev/pts/"), announced
        fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
        try:
            os.write(fd, b"echo via-pty-$((2+3))\r")
            read_until(fd, b"via-pty-5")
        finally:
            os.close(fd)
        client.send_signal(signal.SIGINT)
        assert client.wait(10) == 0

    for line in ("4", "-1"):
        beyond = colinux.run("serial", "tty", line)
        assert beyond.returncode == 2
        assert beyond.stderr.strip().splitlines() == [
            f"colinux serial: line {line}: expected 0..3 (ttyS0..ttyS3)".encode()
        ]
    missing = colinux.run("serial", "tty", "1")
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines() == [
        b"colinux: guest tty has no serial line ttyS1 served by its daemon "
        b"(served: ttyS0, ttyS2; start it with ttys1=daemon)"
    ]
    assert colinux.run("stop", "tty").returncode == 0


def test_serial_line_on_a_host_terminal_device(colinux: Colinux) -> None:
    """The original's ttysX=DEVICE,"MODE": here a pty standing in for a serial port."""
    master, slave = pty.openpty()
    try:
        path = os.ttyname(slave)
        start(colinux, "dev", f'ttys1={path},"BAUD=115200 PARITY=N DATA=8 STOP=1"')
        read_until(master, b"dev login: ")
        os.write(master, b"root\r")
        read_until(master, b"dev:/root# ")
        os.write(master, b"stty -F /dev/ttyS1 >/dev/null && echo line-$(tty)\r")
        read_until(master, b"line-/dev/ttyS1")
    finally:
        colinux.run("stop", "dev")
        os.close(master)
        os.close(slave)


def test_serial_settings_convert_between_xml_and_command_line(colinux: Colinux) -> None:
    (colinux.cwd / "s.xml").write_text(
        "<colinux>\n"
        '    <serial index="0"/>\n'
        '    <serial index="1" device="/dev/ttyUSB0" mode="baud=9600 parity=e"/>\n'
        "</colinux>\n"
    )
    result = colinux.run("config", "convert", "s.xml", "--to", "cmdline")
    assert result.returncode == 0, result.stderr
    assert shlex.split(result.stdout.decode())[1:] == [
        "ttys0=daemon",
        'ttys1=/dev/ttyUSB0,"baud=9600 parity=e"',
    ]


@pytest.mark.parametrize(
    ("word", "message"),
    [
        ("ttys4=daemon", b"ttys4=daemon: index 4 is out of range (0..3)"),
        ("ttys0=/nonexistent/tty", b"device '/nonexistent/tty' does not exist"),
        ("ttys0=/etc/hostname", b"is not a terminal device"),
        ('ttys0=/dev/null,"baud=12"', b"baud is 50..4000000"),
        ('ttys0=/dev/null,"speed=9600"', b"expected KEY=VALUE with KEY one of baud"),
        ("ttys0=daemon,baud=9600", b"the daemon's line takes no MODE"),
        ("ttyS0=daemon", b"ttyS0=daemon: did you mean ttys0=? (lower case, with an index)"),
        ("ttys=daemon", b"ttys=daemon: did you mean ttysN=?"),
    ],
)
def test_bad_serial_settings(colinux: Colinux, word: str, message: bytes) -> None:
    result = colinux.run("run", word, "--", "true")
    assert result.returncode == 2, result
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("element", "message"),
    [
        ('<serial index="9"/>', b's.xml:2: <serial> index="9": index 9 is out of range (0..3)'),
        ("<serial/>", b"s.xml:2: <serial> is missing the attribute index"),
        ('<serial index="0" device=""/>', b's.xml:2: <serial> device="": expected a path'),
        ('<serial index="0" device="/nonexistent"/>', b"device '/nonexistent' does not exist"),
        ('<serial index="0" device="/dev/null" mode="baud=7"/>', b"baud is 50..4000000"),
        ('<serial index="0" mode="baud=9600"/>', b"a line the daemon serves (no device) has no"),
        ('<serial index="1"/><serial index="1"/>', b"ttyS1 is already defined on line 2"),
    ],
)
def test_bad_serial_elements(colinux: Colinux, element: str, message: bytes) -> None:
    (colinux.cwd / "s.xml").write_text(f"<colinux>\n{element}\n</colinux>\n")
    for argv, program in (
        (("config", "check", "s.xml"), "colinux"),
        (("-c", "s.xml"), "colinux-daemon"),
    ):
        result = colinux.run(*argv, program=program)
        assert result.returncode == 2, result
        assert message in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    assert colinux.run("list").stdout.count(b"\n") == 1  # the header: nothing started
