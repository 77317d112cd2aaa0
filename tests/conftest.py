"""Fixtures for tests that boot real UML guests.

Each test gets its own private run directory (COLINUX_RUN_DIR), so guest
names never collide, and after each test we check that no engine process
of that directory is left and that the directory is empty.

A test that runs colinux's own commands (the ``colinux`` and ``ordinary_user``
fixtures) is marked ``guest`` here, so none is forgotten; one that boots or
builds by other means carries ``@pytest.mark.guest`` itself. ``pytest -m "not
guest"`` runs the pure, in-process tests alone, in seconds.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from colinux.engine.uml import default_kernel

# A run started in the background of a non-interactive shell has SIGINT ignored,
# and the clients the tests end with Ctrl-C would inherit that.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

BIN = Path(sys.executable).parent
GUEST_FIXTURES = frozenset({"colinux", "ordinary_user"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if GUEST_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.guest)


def processes_mentioning(text: str) -> list[int]:
    """Pids of processes whose command line contains ``text``."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if text.encode() in cmdline and int(entry) != os.getpid():
            pids.append(int(entry))
    return pids


def wait_until(predicate, timeout: float = 20.0, interval: float = 0.05) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


# The guest's memory in MB as its kernel reports it (the kernel's own image and
# reservations come off what mem= gave; 7.2 keeps mem= off /proc/cmdline).
MEMORY_PROBE = "awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo"


def memory_given(reported_mb: int, mem: int) -> bool:
    """Whether a guest reporting ``reported_mb`` was given ``mem=`` MB."""
    return 0.6 * mem <= reported_mb <= mem


# An initrd that knows nothing of colinux: it mounts whatever root= names and
# switches to it, as any distribution's would.
USER_INITRD_INIT = """#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t devtmpfs dev /dev
for w in $(cat /proc/cmdline); do case $w in root=*) root=${w#root=};; esac; done
mount -o ro "$root" /newroot
exec switch_root /newroot /sbin/init
"""


def write_user_initrd(path: Path) -> None:
    """USER_INITRD_INIT with Debian's static busybox, as a gzip'd newc archive at ``path``."""
    import gzip

    from colinux.formats.cpio import CpioArchive

    archive = CpioArchive()
    for d in ("bin", "proc", "dev", "newroot"):
        archive.add_dir(d)
    archive.add_file("bin/busybox", Path("/bin/busybox").read_bytes(), 0o755)
    archive.add_file("init", USER_INITRD_INIT.encode(), 0o755)
    path.write_bytes(gzip.compress(archive.to_bytes(), 1))


@contextlib.contextmanager
def reaped(process: subprocess.Popen[bytes]) -> Iterator[subprocess.Popen[bytes]]:
    """``process``, killed and waited for if the block leaves it running (a failed test)."""
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


class Colinux:
    """Runs the installed ``colinux`` and ``colinux-daemon`` commands in one run directory."""

    def __init__(self, run_dir: Path, cwd: Path) -> None:
        self.run_dir = run_dir
        self.cwd = cwd
        self.env = {**os.environ, "COLINUX_RUN_DIR": str(run_dir)}
        self.env.pop("TERM", None)

    def run(
        self, *args: str, program: str = "colinux", timeout: float = 60, **kw: object
    ) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [str(BIN / program), *args],
            capture_output=True,
            timeout=timeout,
            env=self.env,
            cwd=kw.pop("cwd", self.cwd),
            stdin=kw.pop("stdin", subprocess.DEVNULL),
            **kw,  # type: ignore[arg-type]
        )

    def popen(self, *args: str, program: str = "colinux", **kw: object) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [str(BIN / program), *args],
            env=self.env,
            cwd=kw.pop("cwd", self.cwd),
            **kw,  # type: ignore[arg-type]
        )


def host_network() -> tuple[set[str], set[str]]:
    """The host's network devices and named network namespaces."""
    netns = Path("/run/netns")
    return set(os.listdir("/sys/class/net")), set(os.listdir(netns) if netns.exists() else ())


@pytest.fixture
def colinux(tmp_path: Path) -> Iterator[Colinux]:
    run_dir = tmp_path / "run"
    work = tmp_path / "work"
    work.mkdir()
    cx = Colinux(run_dir, work)
    links, namespaces = host_network()
    yield cx
    # Nor any network device or namespace (the tests' own namespaces included).
    assert wait_until(lambda: host_network() == (links, namespaces), 15), (
        f"network left behind: {host_network()} (before: {links}, {namespaces})"
    )
    # Nothing of the guest may outlive the test: no process, no run directory.
    clean = wait_until(lambda: not processes_mentioning(str(run_dir)), 15)
    leftovers = processes_mentioning(str(run_dir))
    for pid in leftovers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 9)
    assert clean, f"processes left behind: {leftovers}"
    if run_dir.exists():
        left = [p.name for p in run_dir.iterdir() if p.suffix != ".log"]
        assert left == [], f"run directory entries left behind: {left}"


TEST_USER = "colinux-test"


class OrdinaryUser:
    """colinux run by a user without privileges, from a copy of the package.

    As root, that is TEST_USER (made when missing) through runuser; anyone
    else runs it as themselves. The copy sits where any user can read it,
    since the checkout and pytest's temporary directories may not be.
    """

    def __init__(self, top: Path) -> None:
        import defusedxml

        import colinux

        if os.getuid() == 0:
            try:
                pwd.getpwnam(TEST_USER)
            except KeyError:
                subprocess.run(["useradd", "--system", "--no-create-home", TEST_USER], check=True)
            self.name = TEST_USER
        else:
            self.name = pwd.getpwuid(os.getuid()).pw_name
        self.uid = pwd.getpwnam(self.name).pw_uid
        self.top = top
        self.lib = top / "lib"
        shutil.copytree(Path(colinux.__file__).parent, self.lib / "colinux")
        shutil.copytree(Path(defusedxml.__file__).parent, self.lib / "defusedxml")
        # colinux's kernel lives in the environment colinux is installed in,
        # which this copy is not: the user names it, as COLINUX_KERNEL allows.
        self.kernel = top / "kernel" / "linux"
        self.kernel.parent.mkdir()
        shutil.copyfile(default_kernel(), self.kernel)
        for path in [top, *top.rglob("*")]:
            path.chmod(0o755 if path.is_dir() or path == self.kernel else 0o644)
        self.work = top / "work"  # the user's own: home and current directory
        self.work.mkdir()
        shutil.chown(self.work, self.name)

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
        """``colinux ARGS…`` as this user, in ``work``."""
        env = {
            "PATH": "/usr/bin:/bin:/usr/sbin:/sbin",
            "PYTHONPATH": str(self.lib),
            "HOME": str(self.work),
            "COLINUX_KERNEL": str(self.kernel),
        }
        argv = ["/usr/bin/python3", "-m", "colinux.cli", *args]
        if os.getuid() == 0:
            argv = ["/usr/sbin/runuser", "-u", self.name, "--", *argv]
        return subprocess.run(
            argv, capture_output=True, env=env, cwd=self.work, timeout=timeout,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip


@pytest.fixture
def ordinary_user() -> Iterator[OrdinaryUser]:
    top = Path(tempfile.mkdtemp(prefix="colinux-user-"))
    try:
        yield OrdinaryUser(top)
    finally:
        shutil.rmtree(top)
