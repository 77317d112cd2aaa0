"""`colinux run`: boot the default guest, run a command, exit with its status."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time

import pytest
from conftest import MEMORY_PROBE, Colinux, memory_given, wait_until, write_user_initrd


def test_exit_status_is_the_commands(colinux: Colinux) -> None:
    result = colinux.run("run", "--", "sh", "-c", "exit 7")
    assert result.returncode == 7, result.stderr
    assert colinux.run("run", "--", "true").returncode == 0
    assert colinux.run("run", "--", "false").returncode == 1


def test_output_is_byte_exact_and_stderr_separate(colinux: Colinux) -> None:
    result = colinux.run(
        "run", "--", "sh", "-c", r"printf 'a\nb\tc\001\n'; echo oops >&2; printf end"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"a\nb\tc\x01\nend"
    assert result.stderr == b"oops\n"


def test_bulk_output_is_exact_and_fast(colinux: Colinux) -> None:
    # 16 MB each way, from a disk so no share is involved. Through the console's
    # pty, stdout crawled at 20-200 KB/s (a minute for 4 MB); now it has a line of its own.
    data = os.urandom(16 << 20)
    (colinux.cwd / "data.img").write_bytes(data)
    for target in ("", " >&2"):
        began = time.monotonic()
        result = colinux.run(
            "run", "--no-share", "--no-network", "cobd0=data.img,ro", "--",
            "sh", "-c", f"cat /dev/cobd0{target}",
        )  # fmt: skip
        took = time.monotonic() - began
        assert result.returncode == 0, result.stderr[-500:]
        assert (result.stderr if target else result.stdout) == data
        assert took < 20, took


def test_a_command_whose_reader_is_gone_ends(colinux: Colinux) -> None:
    # As `yes | head -1` on the host: the reader went away, so the command ends (SIGPIPE).
    run = colinux.popen("run", "--", "yes", stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
    assert run.stdout is not None
    assert run.stdout.read(2) == b"y\n"
    run.stdout.close()
    assert run.wait(30) == 128 + signal.SIGPIPE


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_stops_the_command(colinux: Colinux, signum: int, status: int) -> None:
    # The guest shuts down cleanly; the status is the shell's for that signal, and
    # nothing of the console (the guest's halt message) gets into the command's stdout.
    run = colinux.popen(
        "run", "--name", "sig", "--", "sleep", "100",
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert wait_until(lambda: b" running " in colinux.run("list").stdout)
    run.send_signal(signum)
    out, err = run.communicate(timeout=30)
    assert run.returncode == status, err
    assert out == b""


def test_verbose_kernel_messages_stay_out_of_stdout(colinux: Colinux) -> None:
    result = colinux.run("run", "--verbose", "--", "echo", "only-this")
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"only-this\n"
    assert b"Linux version" in result.stderr


def test_arguments_keep_their_words(colinux: Colinux) -> None:
    result = colinux.run("run", "--", "printf", "[%s]", "two words", "it's", "$HOME", "*")
    assert result.stdout == b"[two words][it's][$HOME][*]"


def test_missing_command_is_127(colinux: Colinux) -> None:
    result = colinux.run("run", "--", "no-such-command")
    assert result.returncode == 127
    assert b"no-such-command" in result.stderr


def test_memory_setting_reaches_the_guest(colinux: Colinux) -> None:
    # The kernel keeps a varying share of small memories for itself, so compare
    # two sizes: the difference the guest sees is the difference configured.
    def mem_total(mb: int) -> int:
        result = colinux.run("run", f"mem={mb}", "--", "grep", "MemTotal", "/proc/meminfo")
        assert result.returncode == 0, result.stderr
        kb = int(re.search(rb"(\d+) kB", result.stdout).group(1))  # type: ignore[union-attr]
        assert kb <= mb * 1024
        return kb

    grown = mem_total(288) - mem_total(96)
    assert 0.85 * 192 * 1024 < grown < 1.15 * 192 * 1024


def test_configuration_without_memory_boots(colinux: Colinux) -> None:
    # No <memory>: colinux's default, which the guest kernel starts in
    # (coLinux 0.6's 32 MB made it run out of memory while it started).
    xml = colinux.cwd / "m.xml"
    xml.write_text("<colinux>\n</colinux>\n")
    for _ in range(3):
        result = colinux.run("run", "-c", "m.xml", "--", "sh", "-c", MEMORY_PROBE)
        assert result.returncode == 0, result.stderr
        assert memory_given(int(result.stdout), 64), result.stdout


def test_guest_is_named_and_has_its_tools(colinux: Colinux) -> None:
    result = colinux.run(
        "run", "--name", "alpha", "--", "sh", "-c", "hostname; cat /etc/colinux/version"
    )
    assert result.returncode == 0, result.stderr
    version = colinux.run("--version").stdout.decode()
    assert result.stdout.decode().split() == ["alpha", version.split()[1]]


def test_version_shows_every_part(colinux: Colinux) -> None:
    result = colinux.run("--version")
    assert result.returncode == 0
    text = result.stdout.decode()
    parts = ("colinux ", "colinux-daemon ", "guest tools ", "guest kernel (UML) 7.2.", "BusyBox")
    for part in parts:
        assert part in text
    daemon = colinux.run("--version", program="colinux-daemon")
    assert daemon.stdout == result.stdout


def test_block_device_and_alias_name_the_same_disk(colinux: Colinux) -> None:
    disk = colinux.cwd / "data.img"
    with open(disk, "wb") as f:
        f.truncate(4 << 20)
        f.seek(1 << 20)
        f.write(b"colinux-disk-marker")
    result = colinux.run(
        "run",
        "cobd3=data.img",
        "hdb1=:cobd3",
        "--",
        "sh",
        "-c",
        "ls -l /dev/cobd3 /dev/hdb1; dd if=/dev/hdb1 bs=1M skip=1 count=1 2>/dev/null | head -c 19",
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.decode().splitlines()
    majmin = [re.search(r"(\d+),\s+(\d+)", line).groups() for line in lines[:2]]  # type: ignore[union-attr]
    assert majmin[0] == majmin[1]
    assert lines[2] == "colinux-disk-marker"


def test_writes_to_a_disk_survive_the_guest(colinux: Colinux) -> None:
    disk = colinux.cwd / "disk.img"
    with open(disk, "wb") as f:
        f.truncate(16 << 20)
    assert colinux.run("run", f"cobd0={disk}", "--", "mke2fs", "-q", "/dev/cobd0").returncode == 0
    write = "mount /dev/cobd0 /mnt && echo kept > /mnt/file"
    assert colinux.run("run", f"cobd0={disk}", "--", "sh", "-c", write).returncode == 0
    read = colinux.run(
        "run", f"cobd0={disk}", "--", "sh", "-c", "mount /dev/cobd0 /mnt && cat /mnt/file"
    )
    assert read.stdout == b"kept\n", read.stderr


def test_disabled_devices_are_skipped(colinux: Colinux) -> None:
    # A missing image is fine when its device is disabled (XML enabled="false").
    xml = colinux.cwd / "m.xml"
    xml.write_text(
        '<?xml version="1.0"?>\n<colinux>\n'
        '  <block_device index="0" path="absent.img" enabled="false"/>\n'
        '  <memory size="64"/>\n</colinux>\n'
    )
    result = colinux.run("run", "-c", str(xml), "--", "sh", "-c", "ls /dev/cobd0 || echo none")
    assert result.returncode == 0, result.stderr
    assert b"none" in result.stdout


USER_ROOT_INIT = """#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
/bin/busybox echo "user-root $(/bin/busybox cat /marker) $(/bin/busybox grep -c ' / ' /proc/mounts)"
/bin/busybox poweroff -f
"""


@pytest.mark.parametrize("root", ["cobd0", "hda1"])
def test_root_disk_through_an_initrd_of_the_users_own(colinux: Colinux, root: str) -> None:
    # An initrd that knows nothing of colinux: it mounts whatever root= names and
    # switches to it. root=/dev/cobd0 (or its alias) must reach it as a disk it can open.
    write_user_initrd(colinux.cwd / "own-initrd.gz")
    tree = colinux.cwd / "tree"
    for d in ("bin", "sbin", "proc", "dev"):
        (tree / d).mkdir(parents=True)
    shutil.copy("/bin/busybox", tree / "bin" / "busybox")
    (tree / "sbin" / "init").write_text(USER_ROOT_INIT)
    (tree / "sbin" / "init").chmod(0o755)
    (tree / "marker").write_text("from-the-disk\n")
    subprocess.run(["mke2fs", "-q", "-t", "ext2", "-d", str(tree), "root.img", "16M"],
                   cwd=colinux.cwd, check=True)  # fmt: skip
    disk = ["cobd0=root.img"] if root == "cobd0" else ["hda1=root.img"]
    result = colinux.run(
        "-k", "--name", "own-initrd", *disk, f"root=/dev/{root}", "initrd=own-initrd.gz",
        program="colinux-daemon",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert b"user-root from-the-disk 1" in result.stdout, result.stdout
