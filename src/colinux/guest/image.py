"""The embedded default guest: an initramfs built on the fly.

It holds Debian's static busybox, with a link for each of its applets, and
our guest tools from ``guest/files`` (init, the agent that talks to the
daemon, shutdown). Nothing is downloaded: ``default_initramfs()`` builds the
image once from what is installed and keeps it in the user's cache,
rebuilding when busybox, the tools or the colinux version change::

    path = default_initramfs()        # ~/.cache/colinux/guest-<hash>.cpio
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from importlib import resources
from pathlib import Path

from colinux.cache import writable_cache_dir
from colinux.errors import ColinuxError
from colinux.formats.cpio import CpioArchive
from colinux.version import __version__

BUSYBOX = "/bin/busybox"

# (path in the guest, file in guest/files, mode)
GUEST_FILES = (
    ("init", "init", 0o755),
    ("sbin/init", "init", 0o755),  # the same init when this tree is a disk's root
    ("usr/lib/colinux/agent", "agent", 0o755),
    ("usr/lib/colinux/exec-sessions", "exec-sessions", 0o644),  # colinux exec: agent, init
    ("etc/colinux/fstab.boot", "fstab.boot", 0o644),
    ("etc/colinux/fstab.dev", "fstab.dev", 0o644),
    ("sbin/shutdown", "shutdown", 0o755),
    ("etc/profile", "profile", 0o644),
    ("etc/passwd", "passwd", 0o644),
    ("etc/group", "group", 0o644),
    ("sbin/mount.cofs", "mount.cofs", 0o755),  # `mount -t cofs` (busybox runs mount.TYPE)
    # Boot hooks, sourced by init in the order of their names.
    ("usr/lib/colinux/boot.d/20-cofs.sh", "cofs-boot", 0o644),
    ("usr/lib/colinux/boot.d/30-serial.sh", "serial-getty", 0o644),
    ("usr/lib/colinux/boot.d/10-network.sh", "network-boot", 0o644),
    ("usr/lib/colinux/udhcpc-script", "udhcpc-script", 0o755),
    # For a udev-run root it hands over to (init puts them in /run): /dev/cobdN names.
    ("usr/lib/colinux/cobd-names", "cobd-names", 0o755),
    ("usr/lib/colinux/udev.rules", "debian-udev.rules", 0o644),
)
# Kernel modules of the UML kernel the default guest carries, relative to
# /usr/lib/uml/modules/RELEASE/ (features add theirs here, e.g. fuse, virtiofs).
UML_MODULES_DIR = Path("/usr/lib/uml/modules")
GUEST_MODULES: tuple[str, ...] = ("kernel/fs/fuse/fuse.ko", "kernel/fs/fuse/virtiofs.ko")
DIRS = (
    "bin", "sbin", "usr", "usr/bin", "usr/sbin", "usr/lib", "usr/lib/colinux",
    "usr/lib/colinux/boot.d", "etc",
    "etc/colinux", "dev", "proc", "sys", "tmp", "run", "mnt", "var", "lib", "lib/modules",
)  # fmt: skip


def guest_file(name: str) -> bytes:
    """A guest tool's bytes, from guest/files (the default guest and root images)."""
    return resources.files("colinux.guest").joinpath("files", name).read_bytes()


def _busybox_applets(busybox: str) -> list[str]:
    out = subprocess.run([busybox, "--list-full"], capture_output=True, text=True, check=True)
    return [line.strip() for line in out.stdout.splitlines() if line.strip()]


def build_initramfs(*, busybox: str = BUSYBOX, version: str = __version__) -> bytes:
    """The default guest as newc cpio bytes; ``version`` is what its tools announce."""
    if not os.access(busybox, os.X_OK):
        raise ColinuxError(
            f"{busybox} not found: the default guest is built from a static busybox",
            hint="install the Debian package busybox-static",
        )
    archive = CpioArchive()
    for d in DIRS:
        archive.add_dir(d)
    archive.add_dir("root", 0o700)
    archive.add_char_device("dev/console", 5, 1)
    archive.add_char_device("dev/null", 1, 3, 0o666)
    archive.add_char_device("dev/tty13", 4, 13, 0o600)  # init's first marks (colinux.trace)
    archive.add_file("bin/busybox", Path(busybox).read_bytes(), 0o755)
    have = {"bin/busybox"}
    for guest_path, source, mode in GUEST_FILES:
        archive.add_file(guest_path, guest_file(source), mode)
        have.add(guest_path)
    for applet in _busybox_applets(busybox):
        if applet not in have and os.path.dirname(applet) in DIRS:
            archive.add_symlink(applet, "/bin/busybox")
            have.add(applet)
    _add_modules(archive)
    archive.add_file("etc/colinux/version", f"{version}\n".encode())
    archive.add_file("etc/hostname", b"colinux\n")
    archive.add_file("etc/fstab", b"")
    archive.add_symlink("etc/mtab", "/proc/mounts")
    return archive.to_bytes()


def _module_files() -> list[tuple[str, Path]]:
    """(path in the guest, host file) of each module, for every installed UML release."""
    files = []
    base = UML_MODULES_DIR
    for release in sorted(base.iterdir()) if base.is_dir() else []:
        for module in GUEST_MODULES:
            host = release / module
            if host.is_file():
                files.append((f"lib/modules/{release.name}/{module}", host))
    return files


def _add_modules(archive: CpioArchive) -> None:
    made = {"lib", "lib/modules"}
    for guest_path, host in _module_files():
        parts = guest_path.split("/")
        for i in range(2, len(parts)):
            directory = "/".join(parts[:i])
            if directory not in made:
                archive.add_dir(directory)
                made.add(directory)
        archive.add_file(guest_path, host.read_bytes())


def _cache_key(busybox: str, version: str) -> str:
    h = hashlib.sha256(version.encode())
    st = os.stat(busybox)
    h.update(f"{os.path.realpath(busybox)}:{st.st_size}:{st.st_mtime_ns}".encode())
    for guest_path, host in _module_files():
        st = host.stat()
        h.update(f"{guest_path}:{st.st_size}:{st.st_mtime_ns}".encode())
    for _, source, mode in GUEST_FILES:
        h.update(f"{source}:{mode}".encode())
        h.update(guest_file(source))
    return h.hexdigest()[:16]


def default_initramfs(*, busybox: str = BUSYBOX, version: str = __version__) -> Path:
    """Path of the cached default guest image, building it if needed."""
    if not os.path.exists(busybox):
        build_initramfs(busybox=busybox)  # raises the clear error
    directory = writable_cache_dir()
    path = directory / f"guest-{_cache_key(busybox, version)}.cpio"
    if path.exists():
        return path
    data = build_initramfs(busybox=busybox, version=version)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".guest-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    for old in directory.glob("guest-*.cpio"):
        if old != path and old.stat().st_mtime < path.stat().st_mtime - 86400:
            old.unlink(missing_ok=True)
    return path


def busybox_version(busybox: str = BUSYBOX) -> str | None:
    if not shutil.which(busybox):
        return None
    out = subprocess.run([busybox], capture_output=True, text=True)
    first = (out.stdout or out.stderr).splitlines()[:1]
    return first[0].split(" multi-call")[0] if first else None
