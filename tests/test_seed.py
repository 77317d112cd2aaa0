"""The seed's configuration, verbatim: its XML file and its command line, on real images.

A drive map points C: at a temporary directory laid out as the seed's
C:\\coLinux: an ext4 root image made with mke2fs -d from a busybox tree, a
swap image, the kernel as `vmlinux` and an initrd as `initrd.gz`.
"""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest
from conftest import BIN, MEMORY_PROBE, Colinux, memory_given
from seed_config import SEED_WORDS, SEED_XML

from colinux.formats.cpio import decode
from colinux.guest.image import build_initramfs

PROBE = (
    "cat /etc/seed-root; grep ' / ' /proc/mounts | cut -d' ' -f3; "
    "swapon /dev/cobd1 && grep -c cobd1 /proc/swaps; "
    "ls -l /dev/cobd0 | grep -c '98,'; "
    f"{MEMORY_PROBE}"
)


def unpack_tree(cpio: bytes, root: Path) -> None:
    for entry in decode(cpio):
        path = root / entry.name
        kind = stat.S_IFMT(entry.mode)
        if kind == stat.S_IFDIR:
            path.mkdir(exist_ok=True)
            path.chmod(stat.S_IMODE(entry.mode))
        elif kind == stat.S_IFLNK:
            path.symlink_to(entry.data.decode())
        elif kind == stat.S_IFREG:
            path.write_bytes(entry.data)
            path.chmod(stat.S_IMODE(entry.mode))
        # device nodes: the guest's devtmpfs provides them


@pytest.fixture(scope="module")
def drive_c(tmp_path_factory: pytest.TempPathFactory) -> Path:
    c = tmp_path_factory.mktemp("drive-c")
    colinux_dir = c / "coLinux"
    colinux_dir.mkdir()
    tree = c / "tree"
    tree.mkdir()
    initramfs = build_initramfs()
    unpack_tree(initramfs, tree)
    (tree / "etc" / "seed-root").write_text("root-image-from-the-seed\n")
    subprocess.run(
        ["mke2fs", "-q", "-t", "ext4", "-d", str(tree), str(colinux_dir / "root.img"), "32M"],
        check=True,
    )
    swap = colinux_dir / "swap.img"
    with open(swap, "wb") as f:
        f.truncate(16 << 20)
    subprocess.run(["mkswap", "-q", str(swap)], check=True, capture_output=True)
    # The seed's vmlinux and initrd.gz, made as a user makes them.
    for what, name in (("kernel", "vmlinux"), ("initrd", "initrd.gz")):
        subprocess.run([str(BIN / "colinux"), "image", what, str(colinux_dir / name)], check=True)
    (colinux_dir / "my.colinux.xml").write_text(SEED_XML)
    return c


def check_probe(result: subprocess.CompletedProcess[bytes]) -> None:
    assert result.returncode == 0, result.stderr
    *found, memory = result.stdout.decode().split()
    assert found == ["root-image-from-the-seed", "ext4", "1", "1"]
    assert memory_given(int(memory), 128), memory


def test_seed_xml_boots_verbatim(colinux: Colinux, drive_c: Path) -> None:
    xml = drive_c / "coLinux" / "my.colinux.xml"
    result = colinux.run(
        "-c", str(xml), "--drive", f"c={drive_c}", "--", "sh", "-c", PROBE, program="colinux-daemon"
    )
    check_probe(result)


def test_seed_command_line_boots_verbatim(colinux: Colinux, drive_c: Path) -> None:
    result = colinux.run(
        *SEED_WORDS, "--drive", f"c={drive_c}", "--", "sh", "-c", PROBE,
        program="colinux-daemon", cwd=drive_c / "coLinux",
    )  # fmt: skip
    check_probe(result)


def test_drive_map_from_the_environment(colinux: Colinux, drive_c: Path) -> None:
    colinux.env["COLINUX_DRIVE_C"] = str(drive_c)
    xml = drive_c / "coLinux" / "my.colinux.xml"
    result = colinux.run("config", "check", str(xml))
    assert result.returncode == 0, result.stderr


def test_unmapped_drive_is_a_clear_error(colinux: Colinux, drive_c: Path) -> None:
    xml = drive_c / "coLinux" / "my.colinux.xml"
    result = colinux.run("-c", str(xml), program="colinux-daemon")
    assert result.returncode == 2
    message = result.stderr.decode()
    assert message.count("\n") == 1
    assert "drive C:" in message and "--drive c=" in message
    assert not list(colinux.run_dir.glob("*/control.sock"))


def test_alias_names_the_root_disk(colinux: Colinux, drive_c: Path) -> None:
    # Old images whose fstab says /dev/hda1 boot unchanged: hda1 is cobd0.
    result = colinux.run(
        "run", "hda1=root.img", "root=/dev/hda1", "initrd=initrd.gz", "--",
        "sh", "-c", "cat /etc/seed-root; ls /dev/hda1 /dev/cobd0",
        cwd=drive_c / "coLinux",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().split() == ["root-image-from-the-seed", "/dev/cobd0", "/dev/hda1"]


def test_kernel_boots_a_root_disk_without_initrd(colinux: Colinux, drive_c: Path) -> None:
    # root= with no initrd: the kernel mounts the disk itself and runs its init.
    colinux_dir = drive_c / "coLinux"
    daemon = colinux.popen(
        "-d", "--name", "diskroot", "kernel=vmlinux", "cobd0=root.img", "root=/dev/cobd0",
        program="colinux-daemon", cwd=colinux_dir,
    )  # fmt: skip
    from conftest import wait_until

    assert wait_until(lambda: b"diskroot" in colinux.run("list").stdout)
    stop = colinux.run("stop", "diskroot")
    assert stop.returncode == 0, stop.stderr
    assert daemon.wait(30) == 0


def test_config_convert_round_trip(colinux: Colinux, drive_c: Path) -> None:
    xml = drive_c / "coLinux" / "my.colinux.xml"
    line = colinux.run("config", "convert", str(xml), "--to", "cmdline")
    assert line.returncode == 0, line.stderr
    text = line.stdout.decode()
    for word in ("kernel=vmlinux", "mem=128", "root=/dev/cobd0", 'eth0=tuntap,"TAP-Win32"'):
        assert word in text
    conf = drive_c / "converted.conf"
    conf.write_text(text)
    back = colinux.run("config", "convert", str(conf), "--to", "xml")
    assert back.returncode == 0, back.stderr
    assert back.stdout.decode() == SEED_XML.replace("></block_device>", "></block_device>")
    os.unlink(conf)
