"""Root and swap images: ``colinux image root`` and ``colinux image swap``.

A root image is Debian, installed by ``mmdebstrap`` from Debian's mirror into
a temporary tree, then written into an ext4 file with ``mke2fs -d``: no loop
mounts. As root, mmdebstrap runs in ``--mode=root``; as an ordinary user in
``--mode=unshare`` (a user namespace, which needs subordinate ids in
/etc/subuid and /etc/subgid, and the ``uidmap`` package). mke2fs runs in
mmdebstrap's last hook, where the files still belong to root.

What the image holds besides Debian: the modules of Debian's UML kernels
(colinux's own has none), our guest tools (``mount.cofs``, the udev helper
that names ``/dev/cobdN``), an fstab with ``/dev/cobd0`` as root and
``/dev/cobd1`` as swap, a getty on the console, systemd-networkd with DHCP
on ``eth*`` (slirp answers), a hostname, root's password or SSH key, and a
serve-only agent through which ``colinux stop`` powers the guest off with
systemd::

    build_root_image(RootImageSpec(Path("root.img"), size=2 << 30), BuildProgress(sys.stdout))
    make_swap_image(Path("swap.img"), 256 << 20)
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import shlex
import shutil
import subprocess
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from colinux.errors import ColinuxError, UserError
from colinux.guest.image import UML_MODULES_DIR, guest_file
from colinux.image.progress import BuildProgress, MmdebstrapLog
from colinux.process import environment, popen
from colinux.version import __version__

log = logging.getLogger(__name__)

DEFAULT_SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
# Debian's suites by codename and by role; mmdebstrap only learns of a typo
# after minutes of work, so the name is checked first.
SUITES = (
    "buster", "bullseye", "bookworm", "trixie", "forky", "sid",
    "oldoldstable", "oldstable", "stable", "testing", "unstable",
)  # fmt: skip
# minbase + systemd + kernel modules take about 360 MB; a little room on top.
MIN_ROOT_SIZE = 512 << 20
MIN_SWAP_SIZE = 64 << 10  # mkswap's own minimum is ten pages
BASE_PACKAGES = ("systemd", "systemd-sysv", "udev", "kmod", "iproute2", "procps")
_HOSTNAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_PACKAGE = re.compile(r"[a-z0-9][a-z0-9+.-]+")

# The swap is noauto: colinux's udev rule starts it when cobd1 is there, so
# a guest given no cobd1 boots without waiting 90 s for it.
FSTAB = """\
# colinux: cobd0 is the root, cobd1 the swap (udev names them, see /usr/lib/colinux/cobd-names)
/dev/cobd0  /     ext4  defaults,errors=remount-ro  0  1
/dev/cobd1  none  swap  sw,noauto  0  0
"""


def parse_size(text: str, option: str = "--size") -> int:
    """``2G``, ``256M``, ``512K`` or a number of bytes (binary units)."""
    match = re.fullmatch(r"\s*([0-9]+)\s*([KMGT]?)(i?B)?\s*", text, re.IGNORECASE)
    if match is None:
        raise UserError(f"{option} {text}: expected a size such as 2G, 256M or 512K")
    shift = {"": 0, "K": 10, "M": 20, "G": 30, "T": 40}[match.group(2).upper()]
    return int(match.group(1)) << shift


def format_size(size: int) -> str:
    for unit, shift in (("G", 30), ("M", 20), ("K", 10)):
        if size >= 1 << shift and size % (1 << shift) == 0:
            return f"{size >> shift}{unit}"
    return str(size)


def default_kernel_release() -> str:
    from colinux.engine.uml import default_kernel, kernel_release

    return kernel_release(default_kernel())


@dataclass(frozen=True)
class RootImageSpec:
    path: Path
    size: int
    suite: str = DEFAULT_SUITE
    packages: tuple[str, ...] = ()
    hostname: str = "colinux"
    root_password: str | None = None
    ssh_key: str | None = None  # the public key's text
    mirror: str = DEFAULT_MIRROR
    kernel_release: str = field(default_factory=default_kernel_release)
    cofs: bool = False  # a meta-mode cofs directory (root=cofs0), not an ext4 image

    def check(self) -> None:
        """Every mistake in the request, before anything is downloaded or written."""
        if self.suite not in SUITES:
            raise UserError(
                f"--suite {self.suite}: not a Debian suite (expected one of {', '.join(SUITES)})"
            )
        if not self.cofs and self.size < MIN_ROOT_SIZE:
            raise UserError(
                f"--size {format_size(self.size)}: too small for a Debian root image "
                f"(at least {format_size(MIN_ROOT_SIZE)})"
            )
        for package in self.packages:
            if not _PACKAGE.fullmatch(package):
                raise UserError(f"--packages: {package!r} is not a Debian package name")
        if not _HOSTNAME.fullmatch(self.hostname):
            raise UserError(f"--hostname {self.hostname}: expected letters, digits and -")
        if self.root_password is not None and "\n" in self.root_password:
            raise UserError("--root-password: must be one line")
        _check_target(self.path)

    def cache_key(self) -> str:
        """A hash of everything the image is made from (for caches of built images)."""
        h = hashlib.sha256()
        for part in (
            self.suite,
            ",".join(self.packages),
            self.hostname,
            self.root_password or "",
            self.ssh_key or "",
            self.mirror,
            self.kernel_release,
            str(self.size),
            str(self.cofs),
            __version__,  # the agent's HELLO
        ):
            h.update(part.encode() + b"\0")
        for name in _GUEST_TOOLS:
            h.update(guest_file(name[1]))
        h.update(Path(__file__).read_bytes())
        return h.hexdigest()[:16]


def _check_target(path: Path) -> None:
    if path.exists() or path.is_symlink():
        raise UserError(f"{path}: already exists (colinux does not overwrite images)")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise UserError(f"{path}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"{path}: directory {parent} is not writable")


# --- what colinux adds to Debian -----------------------------------------------------

# (path in the image, file in guest/files, mode)
_GUEST_TOOLS = (
    ("usr/sbin/mount.cofs", "mount.cofs", 0o755),  # `mount -t cofs` runs mount.cofs
    ("usr/lib/colinux/cobd-names", "cobd-names", 0o755),
    ("etc/udev/rules.d/60-colinux.rules", "debian-udev.rules", 0o644),
    ("etc/systemd/network/20-colinux-eth.network", "debian-eth.network", 0o644),
    # A getty on each serial line colinux connects (ttysN=), as on the default guest.
    ("usr/lib/systemd/system-generators/colinux-serial-getty", "debian-serial-getty", 0o755),
    ("etc/systemd/system/colinux-kmsg.service", "debian-kmsg.service", 0o644),
    # `colinux stop` powers the guest off through systemd; `colinux exec` runs commands.
    ("usr/lib/colinux/agent-serve", "debian-agent", 0o755),
    ("usr/lib/colinux/exec-sessions", "exec-sessions", 0o644),  # colinux exec
    ("etc/systemd/system/colinux-agent.service", "debian-agent.service", 0o644),
)


def _add(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), mode, int(time.time())
    tar.addfile(info, io.BytesIO(data))


def _add_dir(tar: tarfile.TarFile, name: str, mode: int = 0o755) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime = tarfile.DIRTYPE, mode, int(time.time())
    tar.addfile(info)


def write_overlay(spec: RootImageSpec, out: Path) -> None:
    """The files colinux puts over Debian, as a tar owned by root (mmdebstrap's tar-in).

    Paths go through /usr (merged /usr): a ``lib`` directory entry would
    replace Debian's ``/lib`` symlink.
    """

    def root_owned(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        return info

    with tarfile.open(out, "w") as tar:
        # colinux's kernel has everything built in; Debian's UML kernels (6.1)
        # need their modules, so an image also boots with kernel=/usr/bin/linux.uml.
        for release in sorted(UML_MODULES_DIR.iterdir()) if UML_MODULES_DIR.is_dir() else []:
            tar.add(release, arcname=f"usr/lib/modules/{release.name}", filter=root_owned)
        _add_dir(tar, "usr/lib/colinux")
        for path, source, mode in _GUEST_TOOLS:
            _add(tar, path, guest_file(source), mode)
        # On cofs, the initrd mounts the root; the fstab keeps only the swap.
        fstab = FSTAB.replace(FSTAB.splitlines()[1] + "\n", "") if spec.cofs else FSTAB
        _add(tar, "etc/fstab", fstab.encode())
        _add(tar, "usr/lib/colinux/version", f"{__version__}\n".encode())  # the agent's HELLO
        _add(tar, "etc/hostname", f"{spec.hostname}\n".encode())
        hosts = f"127.0.0.1\tlocalhost\n127.0.1.1\t{spec.hostname}\n::1\tlocalhost\n"
        _add(tar, "etc/hosts", hosts.encode())
        _add(tar, "etc/resolv.conf", b"nameserver 10.0.2.3\n")  # slirp's DNS
        _add(tar, "etc/machine-id", b"")  # each guest makes its own at first boot
        # UML's other consoles are null lines: no gettys on them, only on con0.
        for unit in ("getty@tty1.service", "getty-static.service"):
            info = tarfile.TarInfo(f"etc/systemd/system/{unit}")
            info.type, info.linkname = tarfile.SYMTYPE, "/dev/null"
            tar.addfile(info)
        if spec.ssh_key is not None:
            _add_dir(tar, "root/.ssh", 0o700)
            _add(tar, "root/.ssh/authorized_keys", spec.ssh_key.strip().encode() + b"\n", 0o600)
        if spec.root_password is not None:
            line = f"root:{spec.root_password}\n".encode()
            _add(tar, "root/.colinux-password", line, 0o600)


def _customize_script(spec: RootImageSpec, image: str) -> str:
    """The last hook, run with the tree as $1 (as root, or as root of the user namespace)."""
    if spec.root_password is not None:
        password = 'chroot "$1" chpasswd <"$1/root/.colinux-password"; '
        password += 'rm -f "$1/root/.colinux-password"'
    elif spec.ssh_key is not None:
        password = 'chroot "$1" passwd -l root >/dev/null'  # key only
    else:
        password = 'chroot "$1" passwd -d root >/dev/null'  # as the default guest: no password
    return "\n".join(
        [
            "set -e",
            password,
            'chroot "$1" systemctl enable -q console-getty.service systemd-networkd.service '
            "colinux-kmsg.service colinux-agent.service",
            'chroot "$1" systemctl mask -q systemd-networkd-wait-online.service',
            # What mmdebstrap's own clean-up would remove, before the image is made.
            'rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin',
            'rm -f "$1"/var/cache/apt/archives/*.deb',
            'mkdir -p "$1/var/lib/apt/lists/partial"',
            # /proc, /sys and /dev are mounted on the tree now: mke2fs reads a
            # plain bind of it instead, in a mount namespace of its own.
            "tree=$(mktemp -d)",
            'unshare --mount --propagation private sh -c \'mount --bind "$1" "$2" && '
            + (
                'tar -C "$2" --numeric-owner -cpf "$3" .\' '
                if spec.cofs
                else f'mke2fs -q -F -t ext4 -L colinux-root -d "$2" "$3" {spec.size // 1024}k\' '
            )
            + f'- "$1" "$tree" {shlex.quote(image)}',
            'rmdir "$tree"',
            f"chmod 0666 {shlex.quote(image)}",
        ]
    )


def build_root_image(spec: RootImageSpec, progress: BuildProgress) -> float:
    """Build the image at ``spec.path``; the seconds it took."""
    spec.check()
    mmdebstrap = shutil.which("mmdebstrap")
    if mmdebstrap is None:
        raise ColinuxError(
            "mmdebstrap not found: root images are built with it",
            hint="install the Debian package mmdebstrap",
        )
    start = progress.start
    mode = "root" if os.getuid() == 0 else "unshare"
    target = spec.path.resolve()
    # The hook writes the image as root (or the namespace's root): into a
    # directory anyone may write, beside the target (same file system).
    work = Path(tempfile.mkdtemp(prefix=".colinux-image-", dir=target.parent))
    try:
        work.chmod(0o777)
        overlay = work / "overlay.tar"
        write_overlay(spec, overlay)
        overlay.chmod(0o644)
        built = work / "root.img"
        packages = ",".join((*BASE_PACKAGES, *spec.packages))
        # --verbose: apt's and dpkg's lines, which the progress display counts.
        argv = [
            mmdebstrap, "--verbose", f"--mode={mode}", "--variant=minbase",
            f"--include={packages}",
            "--format=null", f"--customize-hook=tar-in {overlay} /",
            "--customize-hook=" + _customize_script(spec, str(built)),
            spec.suite, "/dev/null", spec.mirror,
        ]  # fmt: skip
        what = "a meta cofs directory" if spec.cofs else format_size(spec.size)
        progress.line(f"building {spec.path} ({what}, Debian {spec.suite}, {mode})")
        _run_with_progress(argv, progress)
        if not built.exists():
            raise ColinuxError("mmdebstrap ended without making the image")
        if spec.cofs:
            from colinux.cofs.populate import populate_from_tar

            elapsed = time.monotonic() - start
            progress.line(f"  [{elapsed:5.0f} s] writing the tree into {spec.path}")
            target.mkdir()
            populate_from_tar(target, built)
        elif mode == "root":
            os.rename(built, target)
            target.chmod(0o644)
        else:  # the namespace's root owns it: a sparse copy makes it ours
            subprocess.run(["cp", "--sparse=always", str(built), str(target)], check=True)
    except BaseException:
        if target.is_dir() and spec.cofs:
            shutil.rmtree(target, ignore_errors=True)
        elif target.exists() and not spec.path.is_symlink():
            target.unlink()
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    seconds = time.monotonic() - start
    progress.line(f"done in {seconds:.0f} s: {spec.path}")
    return seconds


def _run_with_progress(argv: list[str], progress: BuildProgress) -> None:
    tail: list[str] = []
    parsed = MmdebstrapLog()
    env = environment({"LC_ALL": "C.UTF-8"})
    with popen(argv, log=log, env=env, stdout=subprocess.PIPE) as process:
        assert process.stdout is not None
        for raw in process.stdout:
            line = raw.decode(errors="replace").rstrip()
            tail = [*tail[-59:], line]
            if parsed.feed(line):
                progress.update(parsed.state)
        status = process.wait()
    if status != 0:
        # The line before mmdebstrap's first "E:" is the failing tool's own message.
        first = next((i for i, t in enumerate(tail) if t.startswith("E:")), len(tail) - 1)
        said = " / ".join(t for t in tail[max(0, first - 1) : first + 1] if t)
        if "mke2fs" in "\n".join(tail) and "Could not allocate" in "\n".join(tail):
            raise UserError("--size: the Debian tree does not fit; give a larger size")
        raise ColinuxError(f"mmdebstrap failed (status {status}): {said}")


def make_swap_image(path: Path, size: int) -> None:
    """A swap image of ``size`` bytes (sparse), made by mkswap."""
    if size < MIN_SWAP_SIZE:
        raise UserError(f"--size {format_size(size)}: too small for swap (at least 64K)")
    _check_target(path)
    if shutil.which("mkswap") is None:
        raise ColinuxError("mkswap not found", hint="install the Debian package util-linux")
    try:
        with open(path, "xb") as f:
            f.truncate(size)
        subprocess.run(["mkswap", "-q", str(path)], check=True, capture_output=True)
    except subprocess.CalledProcessError as error:
        path.unlink()
        said = error.stderr.decode(errors="replace").strip()
        raise ColinuxError(f"mkswap {path}: {said}") from None
    except BaseException:
        path.unlink(missing_ok=True)
        raise
