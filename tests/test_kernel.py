"""colinux's own kernel (kernel/): the default for every guest, SMP, seccomp or
ptrace userspace, cofs and ethN in the kernel itself, and Debian's 6.1 still
running when ``kernel=`` names it.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from conftest import BIN, Colinux, write_user_initrd

from colinux.engine.uml import DEBIAN_KERNEL, OWN_KERNEL, default_kernel, kernel_release
from colinux.formats.cpio import CpioArchive

TOP = Path(__file__).resolve().parent.parent


def test_colinux_kernel_is_the_default(colinux: Colinux) -> None:
    assert default_kernel() == str(OWN_KERNEL), "./setup.sh installs colinux's kernel"
    info = json.loads(OWN_KERNEL.with_name("linux.json").read_text())
    assert info["package"] == "linux-source-7.2" and info["version"].startswith("7.2.")
    result = colinux.run("run", "--", "sh", "-c", "uname -r; nproc; ls /sys/class/net")
    assert result.returncode == 0, result.stderr
    release, cpus, *cards = result.stdout.decode().split()
    assert release == info["release"] and release.startswith("7.2.")
    assert release.endswith("-colinux")
    assert cpus == "1"
    # Named by the kernel: the default guest renames nothing on this kernel.
    assert cards == ["eth0", "lo"]
    version = colinux.run("--version").stdout.decode()
    assert f"guest kernel (UML) {release} ({OWN_KERNEL})" in version


def test_two_cpus_run_at_once(colinux: Colinux) -> None:
    # Both CPUs busy at the same time: each of two loops sees the other's CPU in use.
    script = (
        "nproc; grep -c ^processor /proc/cpuinfo; "
        "(i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done) & "
        "(i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done) & "
        "sleep 0.5; cat /proc/stat | grep -c '^cpu[0-9]'; "
        "ps -o psr= 2>/dev/null | sort -u | wc -l; wait"
    )
    result = colinux.run("run", "cpus=2", "--", "sh", "-c", script)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.decode().split()
    assert lines[:3] == ["2", "2", "2"]


def test_ptrace_userspace_runs(colinux: Colinux) -> None:
    result = colinux.run("run", "userspace=ptrace", "--", "sh", "-c", "echo strict; nproc")
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().split() == ["strict", "1"]


BAD_CPUS = [["cpus=0"], ["cpus=-1"], ["cpus=abc"], ["cpus=2.5"], ["cpus=9"],
            ["cpus=2", "userspace=ptrace"]]  # fmt: skip


@pytest.mark.parametrize("words", BAD_CPUS)
def test_bad_cpus_start_nothing(colinux: Colinux, words: list[str]) -> None:
    result = colinux.run("run", *words, "--", "true")
    assert result.returncode == 2
    message = result.stderr.decode()
    assert message.count("\n") == 1 and "cpus=" in message, message
    assert not colinux.run_dir.exists() or not any(colinux.run_dir.iterdir())


@functools.cache
def debian_kernel_fails() -> str | None:
    """Why Debian's 6.1 cannot boot on this host, or None when it can.

    6.1's ptrace userspace cannot restore the registers of a host CPU with AMX
    (a large XSAVE area): its init dies with "ptrace set fp regs failed, errno = 14".
    """
    if not os.access(DEBIAN_KERNEL, os.X_OK):
        return f"{DEBIAN_KERNEL} is not installed"
    with tempfile.TemporaryDirectory() as tmp:
        initrd = Path(tmp) / "poweroff.cpio"
        archive = CpioArchive()
        archive.add_dir("dev")
        archive.add_char_device("dev/console", 5, 1)
        archive.add_file("busybox", Path("/bin/busybox").read_bytes(), 0o755)
        archive.add_file("init", b"#!/busybox sh\n/busybox poweroff -f\n", 0o755)
        initrd.write_bytes(archive.to_bytes())
        boot = subprocess.run(
            [DEBIAN_KERNEL, "mem=64M", f"initrd={initrd}", "con=null", "con0=fd:0,fd:1",
             f"uml_dir={tmp}", "umid=probe"],
            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    if "Kernel panic" in boot.stdout or boot.returncode != 0:
        lines = boot.stdout.splitlines()
        why = [line for line in lines if "errno" in line or line.startswith("Kernel panic")]
        return f"Debian's {DEBIAN_KERNEL} does not boot on this host: {'; '.join(why[:2])}"
    return None


def test_debian_kernel_still_runs_commands_shares_and_slirp(colinux: Colinux) -> None:
    if why := debian_kernel_fails():
        pytest.skip(why)
    # Debian's 6.1 (ptrace only, one CPU, vecN renamed by the guest, cofs through
    # the guest's helper) with the default guest: a command, the share, the network.
    (colinux.cwd / "here.txt").write_text("shared\n")
    result = colinux.run(
        "run", f"kernel={DEBIAN_KERNEL}", "--", "sh", "-c",
        "uname -r; cat here.txt; ls /sys/class/net | tr '\\n' ' '; echo; "
        "ip -o -4 addr show eth0 | grep -o 'inet [0-9./]*'; "
        "mkdir /mnt/c && mount -t cofs 0 /mnt/c && cat /mnt/c/here.txt",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stdout.decode().splitlines()
    assert lines[0] == kernel_release(DEBIAN_KERNEL) and lines[0].startswith("6.1.")
    assert lines[1:] == ["shared", "eth0 lo ", "inet 10.0.2.15/24", "shared"]


def test_smp_needs_a_kernel_that_has_it(colinux: Colinux) -> None:
    # Refused before anything starts, whether or not 6.1 boots on this host.
    result = colinux.run("run", f"kernel={DEBIAN_KERNEL}", "cpus=2", "--", "true")
    assert result.returncode == 2
    assert result.stderr.decode().count("\n") == 1
    assert b"cpus=2" in result.stderr and b"no SMP" in result.stderr


# A root that knows nothing of colinux: busybox and a few lines of sh.
PLAIN_ROOT_INIT = """#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -o remount,rw /
/bin/busybox --install -s /bin
mount -t sysfs sys /sys
mount -t tmpfs tmp /mnt
echo "cards: $(ls /sys/class/net | tr '\\n' ' ')"
ip link set eth0 up && echo eth0-up
mkdir -p /mnt/windows /mnt/w1 /mnt/w2 /mnt/w3
mount -t cofs 0 /mnt/w1 && stat -c '%u %g %a' /mnt/w1/top.txt
mount -t cofs cofs0 -o uid=1000,gid=1000 /mnt/w2 && stat -c '%u %g %a' /mnt/w2/top.txt
mount -t cofs cofs0:Share -o uid=1000,gid=1000,dmask=0700,fmask=0700 /mnt/w3 &&
    stat -c '%u %g %a' /mnt/w3 /mnt/w3/inside.txt
mount -t cofs cofs0:Share /mnt/windows && cat /mnt/windows/inside.txt
echo written-by-the-guest > /mnt/w3/new.txt
umount /mnt/w1 /mnt/w2 /mnt/w3 /mnt/windows
mount -o remount,ro /
poweroff -f
"""


def test_plain_root_has_eth0_and_mounts_cofs_with_the_seeds_forms(colinux: Colinux) -> None:
    write_user_initrd(colinux.cwd / "plain-initrd.gz")
    tree = colinux.cwd / "tree"
    for d in ("bin", "sbin", "proc", "sys", "dev", "mnt"):
        (tree / d).mkdir(parents=True)
    shutil.copy("/bin/busybox", tree / "bin" / "busybox")
    (tree / "sbin" / "init").write_text(PLAIN_ROOT_INIT)
    (tree / "sbin" / "init").chmod(0o755)
    subprocess.run(["mke2fs", "-q", "-t", "ext4", "-d", str(tree), "root.img", "32M"],
                   cwd=colinux.cwd, check=True)  # fmt: skip
    share = colinux.cwd / "c"
    (share / "Share").mkdir(parents=True)
    (share / "Share" / "inside.txt").write_text("from the host\n")
    (share / "top.txt").write_text("top\n")
    result = colinux.run(
        "-k", "--name", "plain", "cobd0=root.img", "root=/dev/cobd0", "initrd=plain-initrd.gz",
        f"cofs0={share}", "eth0=slirp", program="colinux-daemon",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = result.stdout.decode()
    expected = [
        "cards: eth0 lo ", "eth0-up", "0 0 755", "1000 1000 755",
        "1000 1000 700", "1000 1000 700", "from the host",
    ]  # fmt: skip
    lines = [line.strip("\r") for line in out.splitlines()]
    positions = [lines.index(e) if e in lines else -1 for e in expected]
    assert -1 not in positions and positions == sorted(positions), out
    assert (share / "Share" / "new.txt").read_text() == "written-by-the-guest\n"


def test_kernel_errors_in_cofs_mounts(colinux: Colinux) -> None:
    # The kernel's own cofs (mount -i: no helper) refuses what coLinux refused.
    script = (
        "mkdir /mnt/x; "
        "mount -i -t cofs 7 /mnt/x 2>/dev/null || echo no-share; "
        "mount -i -t cofs cofs40 /mnt/x 2>/dev/null || echo bad-index; "
        "mount -i -t cofs cofs0:absent /mnt/x 2>/dev/null || echo no-dir; "
        "mount -i -t cofs -o dmask=0800 0 /mnt/x 2>/dev/null || echo bad-mode; "
        "mount -i -t cofs cofs0:sub/../.. /mnt/x 2>/dev/null || echo dotdot; "
        "mount -i -t cofs -o uid=5,ro 0 /mnt/x && stat -c %u /mnt/x && "
        "{ touch /mnt/x/y 2>/dev/null || echo read-only; }"
    )
    result = colinux.run("run", "--", "sh", "-c", script)
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().split() == [
        "no-share", "bad-index", "no-dir", "bad-mode", "dotdot", "5", "read-only",
    ]  # fmt: skip


def test_image_kernel_writes_colinux_kernel(colinux: Colinux) -> None:
    result = colinux.run("image", "kernel", "vmlinux")
    assert result.returncode == 0, result.stderr
    written = colinux.cwd / "vmlinux"
    assert written.read_bytes() == Path(default_kernel()).read_bytes()
    assert os.access(written, os.X_OK)
    again = colinux.run("image", "kernel", "vmlinux")
    assert again.returncode == 2 and b"already exists" in again.stderr
    run = colinux.run("run", "kernel=vmlinux", "--", "uname", "-r")
    assert run.returncode == 0, run.stderr
    assert run.stdout.decode().strip() == kernel_release(default_kernel())


@pytest.mark.guest  # builds the kernel guests boot
def test_a_second_build_finds_the_cache() -> None:
    # What ./setup.sh does again: the kernel is cached, so nothing is compiled.
    result = subprocess.run(
        [str(BIN / "python"), str(TOP / "kernel" / "build.py")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "cached" in result.stdout and "compiling" not in result.stdout, result.stdout


@pytest.mark.guest  # builds the kernel guests boot
def test_a_failed_build_step_is_named_with_its_log(tmp_path: Path) -> None:
    # A patch that does not apply: the build stops at that step, in one line with its log.
    kernel_dir = tmp_path / "kernel"
    shutil.copytree(TOP / "kernel", kernel_dir)
    (kernel_dir / "patches" / "9999-broken.patch").write_text(
        "--- a/Makefile\n+++ b/Makefile\n@@ -1,1 +1,1 @@\n-no such line\n+nothing\n"
    )
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    result = subprocess.run(
        [sys.executable, str(kernel_dir / "build.py")],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert result.returncode == 1
    line = result.stderr.strip()
    assert line.startswith("kernel build: patch failed: 9999-broken.patch does not apply"), line
    assert "\n" not in line
    log = Path(line.rsplit("(log: ", 1)[1].rstrip(")"))
    assert "FAILED" in log.read_text()
