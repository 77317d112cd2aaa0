"""Engine benchmark: Debian's 6.1 UML, colinux's 7.2 UML (ptrace, seccomp, 2 CPUs) and the host.

Prints one table: a row per workload, a column per configuration, each cell
the median time in seconds and its ratio to the host's time for that workload
(the host measured in the same run), then the split job's SMP scaling and the
issue's targets with a yes or no::

    .venv/bin/python bench/engine.py [--runs N] [--dir DIR]
    COLINUX_KERNEL=/path/to/linux .venv/bin/python bench/engine.py   # another 7.2 build

Each configuration runs all its workloads in one ``colinux run --no-network``
guest per repetition (mem=512, the ext4 disk image as cobd0), timed inside the
guest with ``/proc/timer_list``'s nanosecond clock (``/proc/uptime``'s
centiseconds where it cannot be read: busybox's ``date`` has no ``%N``). The
host runs the same script with the same busybox (``/bin/busybox sh``, its
applets first in PATH): the tmpfs rows in a directory on /dev/shm, postmark in
a directory next to the disk image. The repetitions alternate the order of the
configurations, as the machine's load changes from one minute to the next.

The workloads: 300 fork+exec of /bin/true; ``dd bs=1`` of 200000 bytes from
/dev/zero to /dev/null (400k system calls); 1000 files created on tmpfs with
the shell's ``: >`` and one ``rm -rf``; postmark (500 files, 2000
transactions) on the ext4 image, shipped to the guest with its C library on a
read-only cofs share as bench/cofs.py does; two ``sha256sum`` of a 32 MB tmpfs
file in parallel (the SMP row). The last row is the bare kernel booting a
one-line initramfs that powers off at once, as bench/boot.py's baseline, timed
from the host; the host has no such row and its ratios are to 6.1's.

Needs the Debian packages postmark and e2fsprogs. Debian's 6.1 does not boot
on hosts with AMX (see README.md); its column then says so.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from boot import poweroff_initramfs
from cofs import LIBS, postmark_script

from colinux.engine.uml import DEBIAN_KERNEL, default_kernel, kernel_release

BIN = Path(sys.executable).parent
MEM_MB = 512
DISK_MB = 256
PM_FILES, PM_TRANSACTIONS = 500, 2000
HOST = "host"
APPLETS = ("true", "dd", "sha256sum", "rm", "mkdir")

# (key, row label, untimed setup, timed body, untimed cleanup). $TMP is a tmpfs
# directory, $DISK the ext4 file system, $TRUE /bin/true, $PM postmark and its
# configuration file: set by GUEST_PRELUDE or host_prelude().
WORKLOADS = (
    ("fork", "300 fork+exec of /bin/true", "",
     "i=0; while [ $i -lt 300 ]; do $TRUE; i=$((i + 1)); done", ""),
    ("syscall", "dd bs=1 count=200000 (400k syscalls)", "",
     "dd if=/dev/zero of=/dev/null bs=1 count=200000 2>/dev/null", ""),
    ("files", "1000 creates on tmpfs + rm -rf", "mkdir -p $TMP/d",
     "i=0; while [ $i -lt 1000 ]; do : > $TMP/d/f$i; i=$((i + 1)); done; rm -rf $TMP/d", ""),
    ("postmark", f"postmark {PM_FILES} files {PM_TRANSACTIONS} tx, ext4", "mkdir -p $DISK/pm",
     "$PM >/dev/null", "rm -rf $DISK/pm"),
    ("split", "2 sha256sum of 32 MB in parallel",
     "dd if=/dev/zero of=$TMP/big bs=1M count=32 2>/dev/null",
     "sha256sum $TMP/big >/dev/null & a=$!; sha256sum $TMP/big >/dev/null & b=$!; "
     "wait $a; wait $b", "rm -f $TMP/big"),
)  # fmt: skip
BOOT = "boot"
ROWS = (
    *((key, label) for key, label, *_ in WORKLOADS),
    (BOOT, "boot: bare kernel, /init, poweroff"),
)

# stamp sets $now to nanoseconds: /proc/timer_list's "now at N nsecs" (its third
# line, monotonic), else /proc/uptime's centiseconds. Only builtins: no fork is timed.
CLOCK = r"""
if [ -r /proc/timer_list ] && { read -r _; read -r _; read -r w1 w2 now _; } </proc/timer_list \
    && [ "$w1 $w2" = "now at" ]; then
    stamp() { { read -r _; read -r _; read -r _ _ now _; } </proc/timer_list; }
    echo "clock /proc/timer_list"
else
    stamp() { read -r up _ </proc/uptime; now=${up%.*}${up#*.}0000000; }
    echo "clock /proc/uptime"
fi
"""

GUEST_PRELUDE = f"""
set -e
mkdir -p /lib/x86_64-linux-gnu /lib64 /mnt/tools /mnt/disk
mount -t cofs cofs0 /mnt/tools
cp /mnt/tools/libc.so.6 /lib/x86_64-linux-gnu/
cp /mnt/tools/ld-linux-x86-64.so.2 /lib64/
mount /dev/cobd0 /mnt/disk
TMP=/tmp DISK=/mnt/disk TRUE=/bin/true
PM="/mnt/tools/postmark /mnt/tools/pm-guest.cfg"
{CLOCK}"""


def host_prelude(applets: Path, tmp: Path, disk: Path, tools: Path) -> str:
    return f"""
set -e
PATH={applets}:$PATH
TMP={tmp} DISK={disk} TRUE={applets}/true
PM="{tools}/postmark {tools}/pm-host.cfg"
{CLOCK}"""


def workload_script() -> str:
    """The timed workloads, one ``time KEY T0 T1`` line (nanoseconds) each."""
    parts = []
    for key, _, setup, body, cleanup in WORKLOADS:
        parts.append(
            f'{setup}\nstamp; t0=$now\n{body}\nstamp; echo "time {key} $t0 $now"\n{cleanup}'
        )
    return "\n".join(parts) + "\n"


@dataclass
class Config:
    name: str
    kernel: str
    run_args: list[str]
    boot_args: list[str]
    times: dict[str, list[float]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    clock: str = ""


def parse_times(output: str) -> tuple[str, dict[str, float]]:
    clock, times = "", {}
    for line in output.splitlines():
        words = line.split()
        if words[:1] == ["clock"] and len(words) == 2:
            clock = words[1]
        elif words[:1] == ["time"] and len(words) == 4:
            times[words[1]] = (int(words[3]) - int(words[2])) / 1e9
    missing = [key for key, *_ in WORKLOADS if key not in times]
    if missing:
        raise ValueError(f"no time for {', '.join(missing)} in:\n{output[-1500:]}")
    return clock, times


def failure(what: str, result: subprocess.CompletedProcess[str]) -> str:
    tail = (result.stdout[-800:] + "\n" + result.stderr[-800:]).strip()
    return f"{what} exited {result.returncode}: {tail}"


def boot_time(config: Config, initrd: Path, work: Path) -> float:
    argv = [config.kernel, "mem=256M", f"initrd={initrd}", "con=null", "con0=fd:0,fd:1",
            f"uml_dir={work}", "quiet", *config.boot_args]  # fmt: skip
    start = time.perf_counter()
    result = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                            timeout=120)  # fmt: skip
    elapsed = time.perf_counter() - start
    if result.returncode != 0 or "Kernel panic" in result.stdout:
        lines = [line for line in result.stdout.splitlines() if "errno" in line or "panic" in line]
        raise RuntimeError(f"bare boot exited {result.returncode}: {'; '.join(lines[:2])}")
    return elapsed


def run_guest(config: Config, base: Path, tools: Path) -> tuple[str, dict[str, float]]:
    image = base / "disk.img"
    image.unlink(missing_ok=True)
    subprocess.run(
        ["mke2fs", "-q", "-t", "ext4", "-F", str(image), f"{DISK_MB}M"],
        check=True, capture_output=True,
    )  # fmt: skip
    script = GUEST_PRELUDE + workload_script() + "umount /mnt/disk\n"
    argv = [str(BIN / "colinux"), "run", "--no-network", "--no-share", f"mem={MEM_MB}",
            f"cofs0={tools},ro", f"cobd0={image}", *config.run_args,
            "--", "sh", "-c", script]  # fmt: skip
    result = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                            timeout=1800)  # fmt: skip
    image.unlink()
    if result.returncode != 0:
        raise RuntimeError(failure("colinux run", result))
    return parse_times(result.stdout)


def run_host(base: Path, tools: Path, applets: Path) -> tuple[str, dict[str, float]]:
    shm = Path("/dev/shm")
    disk = base / "native"  # where pm-host.cfg's location is
    disk.mkdir()
    try:
        with tempfile.TemporaryDirectory(
            prefix="colinux-bench-engine-", dir=shm if shm.is_dir() else base
        ) as tmp:
            script = host_prelude(applets, Path(tmp), disk, tools) + workload_script()
            result = subprocess.run(
                ["/bin/busybox", "sh", "-c", script], capture_output=True, text=True, cwd=disk,
                stdin=subprocess.DEVNULL,
            )  # fmt: skip
    finally:
        shutil.rmtree(disk)
    if result.returncode != 0:
        raise RuntimeError(failure("the host's busybox sh", result))
    return parse_times(result.stdout)


def measure(config: Config, base: Path, tools: Path, applets: Path, initrd: Path) -> None:
    """One repetition of ``config``; a failure is kept in ``config.errors`` (and ends it)."""
    errors = []
    if config.name != HOST:
        try:
            config.times.setdefault(BOOT, []).append(boot_time(config, initrd, base))
        except (RuntimeError, subprocess.SubprocessError) as e:
            errors.append(str(e))
    try:
        if config.name == HOST:
            clock, times = run_host(base, tools, applets)
        else:
            clock, times = run_guest(config, base, tools)
    except (RuntimeError, ValueError, subprocess.SubprocessError) as e:
        errors.append(str(e))
    else:
        config.clock = clock
        for key, seconds in times.items():
            config.times.setdefault(key, []).append(seconds)
    config.errors += errors


def median(config: Config, key: str) -> float | None:
    if config.errors or not config.times.get(key):
        return None
    return statistics.median(config.times[key])


def yes(ok: bool | None) -> str:
    return "cannot tell" if ok is None else "yes" if ok else "no"


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def fmt_ratio(r: float | None) -> str:
    return "-" if r is None else f"{r:.2f}x"


def report(configs: list[Config], runs: int) -> None:
    by_name = {c.name: c for c in configs}
    old, host = by_name["6.1 ptrace"], by_name[HOST]
    one, two = by_name["7.2 seccomp"], by_name["7.2 seccomp 2 CPUs"]
    kernel72 = by_name["7.2 ptrace"].kernel
    print(f"engine benchmark: medians of {runs} runs in alternating order, on {os.cpu_count()} "
          "cores; seconds and the ratio to the host (the boot row: to 6.1 ptrace)")  # fmt: skip
    print(f"kernels: 6.1 = {DEBIAN_KERNEL} ({kernel_release(DEBIAN_KERNEL)}), "
          f"7.2 = {kernel72} ({kernel_release(kernel72)})")  # fmt: skip
    clocks = sorted({c.clock for c in configs if c.clock})
    print(f"workloads timed in the guest (and the host) with {', '.join(clocks) or '-'}; "
          f"guests: colinux run --no-network mem={MEM_MB}")  # fmt: skip
    print()
    width = max(len(label) for _, label in ROWS)
    cells: list[list[str]] = []
    for key, _ in ROWS:
        row = []
        for c in configs:
            t = median(c, key)
            base = median(old if key == BOOT else host, key)
            if c.errors:
                row.append("failed")
            elif t is None:
                row.append("-")
            elif c is (old if key == BOOT else host):
                row.append(f"{t:.3f}")
            else:
                row.append(f"{t:.3f} {fmt_ratio(ratio(t, base))}")
        cells.append(row)
    widths = [max(len(c.name), *(len(row[i]) for row in cells)) for i, c in enumerate(configs)]
    print(
        f"{'workload':<{width}}  "
        + "  ".join(f"{c.name:>{w}}" for c, w in zip(configs, widths, strict=True))
    )
    for (_, label), row in zip(ROWS, cells, strict=True):
        print(
            f"{label:<{width}}  "
            + "  ".join(f"{cell:>{w}}" for cell, w in zip(row, widths, strict=True))
        )
    print()
    scaling = ratio(median(one, "split"), median(two, "split"))
    print(f"split job, 7.2 seccomp / 7.2 seccomp 2 CPUs: {fmt_ratio(scaling)}")
    print()
    fork_vs_old = ratio(median(old, "fork"), median(one, "fork"))
    fork_vs_host = ratio(median(one, "fork"), median(host, "fork"))
    boot = median(one, BOOT)
    print("targets:")
    print(f"  fork+exec on 7.2 seccomp at least 3x faster than 6.1: {fmt_ratio(fork_vs_old)} "
          f"faster: {yes(None if fork_vs_old is None else fork_vs_old >= 3)}")  # fmt: skip
    print(f"  fork+exec on 7.2 seccomp at most 6x the host: {fmt_ratio(fork_vs_host)}: "
          f"{yes(None if fork_vs_host is None else fork_vs_host <= 6)}")  # fmt: skip
    print(f"  2 CPUs at least 1.7x one CPU on the split job: {fmt_ratio(scaling)}: "
          f"{yes(None if scaling is None else scaling >= 1.7)}")  # fmt: skip
    others = ", ".join(
        f"{c.name} {t:.3f} s" for c in configs[1:4] if c is not one and (t := median(c, BOOT))
    )
    print(f"  bare 7.2 kernel boot (to /init and power off) within 0.2 s: 7.2 seccomp "
          f"{'-' if boot is None else f'{boot:.3f} s'} ({others}): "
          f"{yes(None if boot is None else boot <= 0.2)}")  # fmt: skip
    for c in configs:
        if c.errors:
            print(f"\n{c.name} failed:", *c.errors, sep="\n  ")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="repetitions; the median is kept")
    parser.add_argument(
        "--dir", help="host directory for the disk image and the host's postmark "
        "(default: $TMPDIR or /tmp)",
    )  # fmt: skip
    ns = parser.parse_args()
    postmark = shutil.which("postmark")
    if postmark is None:
        raise SystemExit("bench/engine.py needs postmark: apt-get install postmark")
    kernel = default_kernel()
    configs = [
        Config("6.1 ptrace", DEBIAN_KERNEL, [f"kernel={DEBIAN_KERNEL}"], []),
        Config("7.2 ptrace", kernel, ["userspace=ptrace"], ["seccomp=off"]),
        Config("7.2 seccomp", kernel, ["userspace=seccomp"], ["seccomp=on"]),
        Config("7.2 seccomp 2 CPUs", kernel, ["userspace=seccomp", "cpus=2"],
               ["seccomp=on", "ncpus=2"]),
        Config(HOST, "", [], []),
    ]  # fmt: skip
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="colinux-bench-engine-", dir=ns.dir) as tmp:
        base = Path(tmp)
        tools, applets = base / "tools", base / "applets"
        tools.mkdir()
        applets.mkdir()
        shutil.copy(postmark, tools / "postmark")
        for lib in LIBS:
            shutil.copy(lib, tools / Path(lib).name)
        (tools / "pm-guest.cfg").write_text(
            postmark_script("/mnt/disk/pm", PM_FILES, PM_TRANSACTIONS)
        )
        (tools / "pm-host.cfg").write_text(
            postmark_script(str(base / "native" / "pm"), PM_FILES, PM_TRANSACTIONS)
        )
        for name in APPLETS:
            (applets / name).symlink_to("/bin/busybox")
        initrd = poweroff_initramfs(base)
        for i in range(ns.runs):
            for config in configs[:: -1 if i % 2 else 1]:
                if config.errors:
                    continue
                print(f"run {i + 1}/{ns.runs}: {config.name}", file=sys.stderr, flush=True)
                measure(config, base, tools, applets, initrd)
    report(configs, ns.runs)
    print(f"\n({time.perf_counter() - started:.0f} s)", file=sys.stderr)


if __name__ == "__main__":
    main()
