"""The User-Mode Linux engine: argv, sandbox, process and mconsole.

``linux.uml`` runs as an ordinary host process inside bubblewrap: a private
mount namespace that shows it only its kernel and libraries, the initrd, the
disk images and a private state directory (mconsole lives there), with
``--die-with-parent`` so that no guest outlives its daemon. The guest's
channels are file descriptors inherited through the sandbox:

    con0   (/dev/console)  a pty, so window sizes reach the guest
    con12  (/dev/tty12)    job stdout (a socket: bulk output through con0's pty
                           crawled at 20-200 KB/s)
    con13  (/dev/tty13)    guest kernel messages (/dev/kmsg) for the debug collector
    con14  (/dev/tty14)    job stderr
    con15  (/dev/tty15)    the guest agent's line
    sslN   (/dev/ttySN)    serial lines: a pty the daemon serves, or a host tty
    ssl4.. (/dev/ttyS4..)  exec slots, two lines each (a socket each): colinux exec

Everything UML-specific lives in this module; ``engine.base`` is the
interface the daemon sees.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import mmap
import os
import pty
import shutil
import signal
import socket
import subprocess
import sys
import tty
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from colinux.cache import file_key, load_json, store_json
from colinux.config.model import MAX_SERIAL_INDEX, BlockDevice, Machine, Userspace
from colinux.engine.base import BootSpec, Engine, ExecLines, GuestChannels
from colinux.engine.mconsole import MconsoleClient, MconsoleError
from colinux.engine.serial import open_device
from colinux.errors import ColinuxError, UserError
from colinux.formats.cow import read_header
from colinux.process import spawn

DEBIAN_KERNEL = "/usr/bin/linux.uml"  # Debian's user-mode-linux package: Linux 6.1
# colinux's own kernel, which ./setup.sh builds (kernel/build.py) into the
# environment colinux is installed in; COLINUX_KERNEL names another.
OWN_KERNEL = Path(sys.prefix) / "lib" / "colinux" / "linux"
KERNEL_ENV = "COLINUX_KERNEL"
engine_log = logging.getLogger("colinux.engine")
MAX_UBD = 16  # UML's ubd driver has 16 slots (MAX_DEV)
OUTPUT_LINE = 12
KMSG_LINE = 13
ERRORS_LINE = 14
AGENT_LINE = 15
# colinux exec: this many sessions at once, each on two serial lines after the
# PC's four (UML has 64); a socket each, as tty12 and tty14 are.
EXEC_SLOTS = 8
FIRST_EXEC_SERIAL = MAX_SERIAL_INDEX + 1
SANDBOX_DISKS = "/colinux/disks"
SANDBOX_INITRD = "/colinux/initrd"
_UML_MARKER = b"uml_dir="  # every UML kernel parses this switch; no other ELF has it
# Switches a kernel knows, found by their help text in its binary.
_SMP_MARKER = b"ncpus=<"
_SECCOMP_MARKER = b"seccomp=<on/auto/off>"
_SECCOMP_SWITCH = {Userspace.AUTO: "auto", Userspace.SECCOMP: "on", Userspace.PTRACE: "off"}
# Boot-time savers (0.6 s of 1.3 s here): no legacy BSD ptys to register, no
# delay-loop calibration (UML does not busy-wait on hardware).
FAST_BOOT_ARGS = ("pty.legacy_count=0", "lpj=10000000")
# The default guest also skips the RAID-6 algorithm benchmark (0.85 s), which
# only btrfs RAID-5/6 would need; guests on the user's own disks keep it.
DEFAULT_GUEST_ARGS = ("initcall_blacklist=raid6_select_algo",)


HALT_FLUSH_TIMEOUT = 10.0
_PSEUDO_FS = {"devtmpfs", "devpts"}


def guest_is_flushed(meminfo: str, mounts: str) -> bool:
    """Whether the guest's /proc/meminfo and /proc/mounts show nothing left to write."""
    pending = 0
    for line in meminfo.splitlines():
        key, _, value = line.partition(":")
        if key in ("Dirty", "Writeback"):
            pending += int(value.split()[0])
    for line in mounts.splitlines():
        fields = line.split()
        block = len(fields) >= 4 and fields[0].startswith("/dev/") and fields[2] not in _PSEUDO_FS
        if block and "rw" in fields[3].split(","):
            return False
    return pending == 0


@dataclass(frozen=True)
class DiskSlot:
    device: BlockDevice
    slot: int

    @property
    def ubd(self) -> str:
        return "ubd" + chr(ord("a") + self.slot)

    @property
    def sandbox_path(self) -> str:
        return f"{SANDBOX_DISKS}/cobd{self.device.index}"

    @property
    def base_path(self) -> str:
        """Where a COW disk's base appears in the sandbox: the path its header names."""
        assert self.device.cow is not None and self.device.cow.host is not None
        return read_header(self.device.cow.host, label=f"cobd{self.device.index}").backing_file

    @property
    def ubd_arg(self) -> str:
        """``ubdN=FILE``, ``ubdNr=FILE`` (read-only) or ``ubdN=COW,BASE``."""
        if self.device.cow is not None:
            return f"ubd{self.slot}={self.sandbox_path},{self.base_path}"
        return f"ubd{self.slot}{'r' if self.device.readonly else ''}={self.sandbox_path}"


def disk_slots(machine: Machine) -> list[DiskSlot]:
    """Enabled cobd devices, by index, in UML's ubd slots 0..15."""
    devices = machine.enabled_block_devices()
    if len(devices) > MAX_UBD:
        raise UserError(
            f"{len(devices)} block devices enabled; the UML engine supports at most {MAX_UBD}"
        )
    return [DiskSlot(d, slot) for slot, d in enumerate(devices)]


def guest_disk_names(slots: list[DiskSlot]) -> dict[str, str]:
    """Guest device names (cobdN and aliases) to the ubd device holding them."""
    names: dict[str, str] = {}
    for s in slots:
        names[f"cobd{s.device.index}"] = s.ubd
        if s.device.alias:
            names[s.device.alias] = s.ubd
    return names


def translate_bootparams(words: tuple[str, ...], names: dict[str, str]) -> list[str]:
    """``root=/dev/cobd0`` (or an alias) becomes the ubd device the kernel knows."""
    out = []
    for word in words:
        key, eq, value = word.partition("=")
        if eq and key in ("root", "resume") and value.startswith("/dev/"):
            ubd = names.get(value[len("/dev/") :])
            if ubd:
                word = f"{key}=/dev/{ubd}"
        out.append(word)
    return out


@dataclass(frozen=True)
class KernelFeatures:
    smp: bool  # ncpus=: more than one CPU
    seccomp: bool  # seccomp=: the seccomp userspace (Linux 6.16 and later)


@dataclass(frozen=True)
class _KernelScan:
    elf: bool
    uml: bool
    features: KernelFeatures
    libraries: tuple[str, ...]  # what the dynamic loader maps for it (ldd's view)


_KERNEL_CACHE = "kernels.json"


@cache
def _kernel_scan(path: str) -> _KernelScan:
    """What colinux needs to know of a kernel binary, kept in the user's cache by the
    file's identity: scanning 12 MB and asking ldd cost every boot 40 ms."""
    key = file_key(path)
    known = load_json(_KERNEL_CACHE)
    entry = known.get(key)
    if isinstance(entry, dict):
        try:
            scan = _KernelScan(
                elf=bool(entry["elf"]),
                uml=bool(entry["uml"]),
                features=KernelFeatures(smp=bool(entry["smp"]), seccomp=bool(entry["seccomp"])),
                libraries=tuple(str(lib) for lib in entry["libraries"]),  # type: ignore[attr-defined]
            )
        except (KeyError, TypeError):
            pass
        else:
            if all(os.path.exists(lib) for lib in scan.libraries):  # a host upgrade moves them
                return scan
    with open(path, "rb") as f:
        elf = f.read(4) == b"\x7fELF"
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            uml = elf and m.find(_UML_MARKER) >= 0
            features = KernelFeatures(
                smp=uml and m.find(_SMP_MARKER) >= 0, seccomp=uml and m.find(_SECCOMP_MARKER) >= 0
            )
    scan = _KernelScan(elf, uml, features, _shared_libraries(path) if uml else ())
    known = {k: v for k, v in known.items() if os.path.exists(k.split(":")[0])}
    known[key] = {
        "elf": elf, "uml": uml, "smp": features.smp, "seccomp": features.seccomp,
        "libraries": list(scan.libraries),
    }  # fmt: skip
    store_json(_KERNEL_CACHE, known)
    return scan


def check_kernel(path: str) -> None:
    """Raise a clear UserError unless ``path`` is an executable UML kernel."""
    try:
        scan = _kernel_scan(path)
    except FileNotFoundError:
        raise UserError(f"kernel {path}: no such file") from None
    except IsADirectoryError:
        raise UserError(f"kernel {path}: is a directory") from None
    except PermissionError:
        raise UserError(f"kernel {path}: permission denied") from None
    except ValueError:  # mmap of an empty file
        raise UserError(f"kernel {path}: not a User-Mode Linux executable (empty)") from None
    if not scan.elf:
        raise UserError(f"kernel {path}: not a User-Mode Linux executable (not ELF)")
    if not scan.uml:
        raise UserError(
            f"kernel {path}: not a User-Mode Linux kernel "
            "(an ELF file without UML's switches; colinux runs User-Mode Linux "
            f"kernels such as {DEBIAN_KERNEL}, not kernels for real hardware)"
        )
    if not os.access(path, os.X_OK):
        raise UserError(f"kernel {path}: not executable")


def default_kernel() -> str:
    """The kernel a machine without ``kernel=`` runs: colinux's own when it is
    installed, else Debian's 6.1 (colinux installed without ./setup.sh)."""
    chosen = os.environ.get(KERNEL_ENV)
    if chosen:
        return chosen
    return str(OWN_KERNEL) if OWN_KERNEL.is_file() else DEBIAN_KERNEL


def kernel_features(path: str) -> KernelFeatures:
    return _kernel_scan(path).features


def engine_switches(machine: Machine, kernel: str) -> list[str]:
    """``ncpus=`` and ``seccomp=`` for this kernel, or a UserError if it cannot run the machine."""
    features = kernel_features(kernel)
    args = []
    if machine.cpus > 1:
        if not features.smp:
            raise UserError(
                f"cpus={machine.cpus}: kernel {kernel} has no SMP support "
                "(colinux's own kernel has; leave kernel= out)"
            )
        args.append(f"ncpus={machine.cpus}")
    if features.seccomp:
        args.append(f"seccomp={_SECCOMP_SWITCH[machine.userspace]}")
    elif machine.userspace is Userspace.SECCOMP:
        raise UserError(
            f"userspace=seccomp: kernel {kernel} has no seccomp userspace "
            "(Linux 6.16 or later; colinux's own kernel has it)"
        )
    return args


@cache
def kernel_release(path: str) -> str:
    out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10)
    return out.stdout.strip() or "unknown"


def _shared_libraries(path: str) -> tuple[str, ...]:
    """Files the dynamic loader maps for ``path`` (ldd's view), loader included."""
    try:
        out = subprocess.run(["ldd", path], capture_output=True, text=True, timeout=10)
    except FileNotFoundError:
        return ()
    libs = []
    for line in out.stdout.splitlines():
        for token in line.split():
            if token.startswith("/"):
                libs.append(token)
                break
    if any("/libc.so" in lib for lib in libs):
        # glibc loads libgcc_s itself when a thread is cancelled or unwound,
        # which an SMP kernel's CPU threads are: ldd cannot see it.
        libs += _ldconfig_paths("libgcc_s.so.1")
    return tuple(libs)


def _ldconfig_paths(soname: str) -> list[str]:
    ldconfig = shutil.which("ldconfig") or "/sbin/ldconfig"
    try:
        out = subprocess.run([ldconfig, "-p"], capture_output=True, text=True, timeout=10)
    except FileNotFoundError:
        return []
    for line in out.stdout.splitlines():
        name, _, path = line.strip().partition(" => ")
        if name.split(" ")[0] == soname and path.startswith("/"):
            return [path]
    return []


def _expose(path: str, seen: set[str]) -> list[str]:
    """bwrap arguments that make ``path`` resolve inside the sandbox as on the host:
    each symlink on the way is recreated and the final file bound read-only."""
    args: list[str] = []
    current = "/"
    parts = [p for p in path.split("/") if p]
    for i, part in enumerate(parts):
        candidate = os.path.join(current, part)
        if os.path.islink(candidate):
            target = os.readlink(candidate)
            if candidate not in seen:
                seen.add(candidate)
                args += ["--symlink", target, candidate]
            rest = "/".join(parts[i + 1 :])
            resolved = os.path.normpath(os.path.join(current, target))
            return args + _expose(os.path.join(resolved, rest) if rest else resolved, seen)
        current = candidate
    if current not in seen:
        seen.add(current)
        args += ["--ro-bind", current, current]
    return args


def sandbox_argv(spec: BootSpec, kernel: str) -> list[str]:
    """bwrap's arguments, up to and including the kernel path."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise ColinuxError(
            "bwrap not found: the engine runs in a bubblewrap sandbox",
            hint="install the Debian package bubblewrap",
        )
    seen: set[str] = set()
    caps = spec.wiring.engine_caps
    if caps:
        # No user namespace of bwrap's own: capabilities in a nested one would
        # not reach the network namespace the engine must use.
        namespaces = ["--unshare-ipc", "--unshare-pid", "--unshare-uts", "--unshare-cgroup-try"]
    else:
        namespaces = ["--unshare-all"]
    if spec.wiring.share_net:
        namespaces.append("--share-net")
    elif caps:
        namespaces.append("--unshare-net")
    for cap in caps:
        namespaces += ["--cap-add", cap]
    args = [
        bwrap, "--die-with-parent", "--new-session", "--cap-drop", "ALL", *namespaces,
        "--clearenv", "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "TMPDIR", "/tmp",
        "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp",
    ]  # fmt: skip
    args += _expose(kernel, seen)
    for lib in _kernel_scan(kernel).libraries:
        args += _expose(lib, seen)
    args += ["--bind", spec.state_dir, spec.state_dir]
    for path in spec.wiring.binds:
        args += ["--bind", path, path]
    for device in spec.wiring.devices:
        args += ["--dev-bind", device, device]
    if spec.initrd:
        args += ["--ro-bind", spec.initrd, SANDBOX_INITRD]
    for s in disk_slots(spec.machine):
        assert s.device.path.host is not None
        if s.device.cow is not None:
            # The COW file is the disk; its base is read-only, at the host path
            # the COW header names, so UML finds it there and never rewrites it.
            assert s.device.cow.host is not None
            args += ["--bind", s.device.cow.host, s.sandbox_path]
            args += ["--ro-bind", s.device.path.host, s.base_path]
        else:
            bind = "--ro-bind" if s.device.readonly else "--bind"
            args += [bind, s.device.path.host, s.sandbox_path]
    return [*args, "--", kernel]


def kernel_argv(
    spec: BootSpec,
    *,
    console_fd: int,
    errors_fd: int,
    agent_fd: int,
    serial_fds: dict[int, int] | None = None,
    kmsg_fd: int | None = None,
    output_fd: int | None = None,
    exec_fds: tuple[tuple[int, int], ...] = (),
) -> list[str]:
    """The UML kernel's command line (switches and guest kernel parameters)."""
    m = spec.machine
    slots = disk_slots(m)
    args = [
        f"mem={m.memory_mb}M",
        f"umid={spec.name}",
        f"uml_dir={spec.state_dir}",
        "con=null",
        "ssl=null",
        f"con0=fd:{console_fd},fd:{console_fd}",
        f"con{ERRORS_LINE}=fd:{errors_fd}",
        *([f"con{OUTPUT_LINE}=fd:{output_fd}"] if output_fd is not None else []),
        *([f"con{KMSG_LINE}=fd:{kmsg_fd}"] if kmsg_fd is not None else []),
        f"con{AGENT_LINE}=fd:{agent_fd}",
    ]
    serial_fds = serial_fds or {}
    args += [f"ssl{index}=fd:{fd},fd:{fd}" for index, fd in sorted(serial_fds.items())]
    for slot, (io_fd, err_fd) in enumerate(exec_fds):
        io_line, err_line = exec_serials(slot)
        args += [f"ssl{io_line}=fd:{io_fd}", f"ssl{err_line}=fd:{err_fd}"]
    args += [s.ubd_arg for s in slots]
    # Drivers that would log an error on every boot: ubd0 defaults to ./root_fs,
    # and mmapper looks for an iomem= region that only the user can give.
    if not slots:
        args.append("initcall_blacklist=ubd0_init")
    if not any(word.startswith("iomem=") for word in m.bootparams):
        args.append("initcall_blacklist=mmapper_init")
    if spec.initrd:
        args.append(f"initrd={SANDBOX_INITRD}")
    args += FAST_BOOT_ARGS
    if spec.default_guest:
        args += ["rdinit=/init", *DEFAULT_GUEST_ARGS]
    names = guest_disk_names(slots)
    args.append(f"colinux.name={spec.name}")
    if names:
        args.append("colinux.disks=" + ",".join(f"{k}:{v}" for k, v in names.items()))
    if serial_fds:  # the default guest runs a getty on each
        args.append("colinux.serials=" + ",".join(str(i) for i in sorted(serial_fds)))
    if spec.quiet:
        args += ["quiet", "loglevel=1"]
    args += translate_bootparams(m.bootparams, names)
    args += spec.wiring.kernel_args
    if spec.default_guest and not any(word.startswith("ip=") for word in m.bootparams):
        args += spec.wiring.default_guest_args
    args += spec.extra_kernel_args
    if spec.default_guest:
        args += init_environment(args)
    return args


def init_environment(args: Sequence[str]) -> list[str]:
    """The default guest's settings again, as words the kernel hands its init as
    environment variables (undotted KEY=VALUE): ``colinux.cofs=0:/mnt`` as
    ``colinux_cofs=0:/mnt``, ``root=``, ``ro``/``rw``, ``init=`` and ``ip=`` as
    ``colinux_root=``... A shell reads /proc/cmdline a byte per system call,
    20 ms of every boot here; its environment costs it nothing."""
    env = {"colinux_env": "1"}
    for word in args:
        key, eq, value = word.partition("=")
        if key.startswith("colinux."):
            env["colinux_" + key.removeprefix("colinux.")] = value if eq else "1"
        elif key in ("root", "init", "ip") and eq:
            env[f"colinux_{key}"] = value
        elif word in ("ro", "rw"):
            env["colinux_root_mode"] = word
    return [f"{key}={value}" for key, value in env.items()]


def exec_serials(slot: int) -> tuple[int, int]:
    """The serial line numbers (ttySN) of exec slot ``slot``'s IO and ERR lines."""
    first = FIRST_EXEC_SERIAL + 2 * slot
    return first, first + 1


class UmlEngine(Engine):
    """A guest in a ``linux.uml`` process tree inside bubblewrap."""

    def __init__(self, spec: BootSpec) -> None:
        self.spec = spec
        kernel = spec.machine.kernel
        self.kernel = kernel.host if kernel is not None and kernel.host else default_kernel()
        self._process: asyncio.subprocess.Process | None = None
        # Beside the state directory, not in it: the guest can see that one.
        self.log_path = os.path.join(os.path.dirname(spec.state_dir), "engine.log")
        self.mconsole = MconsoleClient(
            os.path.join(spec.state_dir, spec.name, "mconsole"), spec.state_dir, timeout=2.0
        )

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def argv(
        self,
        *,
        console_fd: int,
        errors_fd: int,
        agent_fd: int,
        serial_fds: dict[int, int] | None = None,
        kmsg_fd: int | None = None,
        output_fd: int | None = None,
        exec_fds: tuple[tuple[int, int], ...] = (),
    ) -> list[str]:
        check_kernel(self.kernel)
        guest = kernel_argv(
            self.spec,
            console_fd=console_fd,
            errors_fd=errors_fd,
            agent_fd=agent_fd,
            serial_fds=serial_fds,
            kmsg_fd=kmsg_fd,
            output_fd=output_fd,
            exec_fds=exec_fds,
        )
        switches = engine_switches(self.spec.machine, self.kernel)
        return [*self.spec.wiring.wrapper, *sandbox_argv(self.spec, self.kernel), *switches, *guest]

    async def start(self) -> GuestChannels:
        console_master, console_slave = pty.openpty()
        tty.setraw(console_slave)
        errors_host, errors_guest = socket.socketpair()
        agent_host, agent_guest = socket.socketpair()
        kmsg_host, kmsg_guest = socket.socketpair()
        output_host, output_guest = socket.socketpair()
        # Each exec slot's two lines: (host, guest) socket pairs.
        exec_pairs = [(socket.socketpair(), socket.socketpair()) for _ in range(EXEC_SLOTS)]
        exec_remote = tuple((io[1].fileno(), err[1].fileno()) for io, err in exec_pairs)
        remote = (
            console_slave,
            errors_guest.fileno(),
            agent_guest.fileno(),
            kmsg_guest.fileno(),
            output_guest.fileno(),
        )
        serial_masters: dict[int, int] = {}  # lines the daemon serves
        serial_fds: dict[int, int] = {}  # what the engine inherits for each line
        try:
            for line in self.spec.machine.serials:
                if line.device is None:
                    master, slave = pty.openpty()
                    tty.setraw(slave)
                    serial_masters[line.index] = master
                    serial_fds[line.index] = slave
                else:
                    serial_fds[line.index] = open_device(
                        str(line.device), line.mode, label=f"ttys{line.index}"
                    )
            argv = self.argv(
                console_fd=remote[0],
                errors_fd=remote[1],
                agent_fd=remote[2],
                serial_fds=serial_fds,
                kmsg_fd=remote[3],
                output_fd=remote[4],
                exec_fds=exec_remote,
            )
            with open(self.log_path, "ab") as log:
                self._process = await spawn(
                    argv,
                    log=engine_log,
                    stdout=log.fileno(),
                    stderr=log.fileno(),
                    pass_fds=remote
                    + tuple(serial_fds.values())
                    + tuple(fd for pair in exec_remote for fd in pair)
                    + self.spec.wiring.fds,
                    start_new_session=True,
                    umask=0o077,  # its umid directory and mconsole socket: the user's only
                )
            engine_log.info("engine process started", extra={"fields": {"pid": self._process.pid}})
        except BaseException:
            for fd in (console_master, errors_host.detach(), agent_host.detach()):
                os.close(fd)
            kmsg_host.close()
            output_host.close()
            for io, err in exec_pairs:
                io[0].close()
                err[0].close()
            for fd in serial_masters.values():
                os.close(fd)
            raise
        finally:
            os.close(console_slave)
            errors_guest.close()
            agent_guest.close()
            kmsg_guest.close()
            output_guest.close()
            for io, err in exec_pairs:
                io[1].close()
                err[1].close()
            for fd in serial_fds.values():
                os.close(fd)
        slots = []
        for slot, (io, err) in enumerate(exec_pairs):
            io_line, err_line = exec_serials(slot)
            slots.append(
                ExecLines(f"ttyS{io_line}", io[0].detach(), f"ttyS{err_line}", err[0].detach())
            )
        return GuestChannels(
            console_master,
            errors_host.detach(),
            agent_host.detach(),
            serial_masters,
            kmsg=kmsg_host.detach(),
            output=output_host.detach(),
            exec_slots=tuple(slots),
        )

    async def wait(self) -> int:
        assert self._process is not None
        return await self._process.wait()

    async def _mconsole(self, command: str) -> str:
        engine_log.info("mconsole request", extra={"fields": {"command": command}})
        return await asyncio.to_thread(self.mconsole.command, command)

    async def halt(self) -> None:
        # Flush and remount read-only first (sysrq s, u), so that a guest that
        # does not cooperate still loses no data written before the halt.
        # Both sysrq actions only queue work in the guest, so wait until its
        # page cache is clean and its block mounts read-only before halting.
        with contextlib.suppress(MconsoleError):
            await self._mconsole("sysrq s")
            await self._mconsole("sysrq u")
            loop = asyncio.get_running_loop()
            deadline = loop.time() + HALT_FLUSH_TIMEOUT
            while loop.time() < deadline:
                meminfo = await asyncio.to_thread(self.mconsole.command, "proc meminfo")
                mounts = await asyncio.to_thread(self.mconsole.command, "proc mounts")
                if guest_is_flushed(meminfo, mounts):
                    break
                await asyncio.sleep(0.05)
        with contextlib.suppress(MconsoleError):
            await self._mconsole("halt")

    async def ctrl_alt_del(self) -> None:
        await self._mconsole("cad")

    def kill(self) -> None:
        if self._process is None or self._process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            # bwrap is the group leader; --die-with-parent takes the sandbox with it.
            os.killpg(self._process.pid, signal.SIGKILL)

    def kernel_version(self) -> str:
        return kernel_release(self.kernel)

    def log_tail(self, limit: int = 2000) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - limit))
                return f.read().decode(errors="replace")
        except OSError:
            return ""
