"""Boot-time benchmark: `colinux run -- true` against bare User-Mode Linux.

Prints a table of wall times (median, min, max over N runs) and each row's
ratio to the baseline, a bare ``linux.uml`` booting a one-line initramfs that
powers off at once, measured in the same run. ``--breakdown`` adds where the
time of one ``colinux run -- true`` goes: each phase as colinux's own marks
time it (``colinux/trace.py``: the client, the daemon, each backend, the
engine, the guest's init and agent), median over the runs, with its share of
the whole:

    .venv/bin/python bench/boot.py [--runs N] [--breakdown]

The rows are measured in turn, one run of each per round, so that a slow
spell of this shared machine falls on all of them alike.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from colinux.engine.uml import DEFAULT_GUEST_ARGS, FAST_BOOT_ARGS, default_kernel
from colinux.formats.cpio import CpioArchive
from colinux.trace import TRACE_ENV

BIN = Path(sys.executable).parent


def poweroff_initramfs(directory: Path) -> Path:
    archive = CpioArchive()
    for d in ("bin", "dev"):
        archive.add_dir(d)
    archive.add_char_device("dev/console", 5, 1)
    archive.add_file("bin/busybox", Path("/bin/busybox").read_bytes(), 0o755)
    archive.add_file("init", b"#!/bin/busybox sh\n/bin/busybox poweroff -f\n", 0o755)
    path = directory / "poweroff.cpio"
    path.write_bytes(archive.to_bytes())
    return path


@dataclass
class Marks:
    phases: list[tuple[float, str]]  # (seconds since the client started, phase reached)
    kernel_to_init: float  # the guest kernel's uptime when it ran init


def timed_once(argv: Sequence[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    result = subprocess.run(argv, capture_output=True, env=env, stdin=subprocess.DEVNULL)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {result.stderr.decode()[-500:]}")
    return elapsed


def traced_run(argv: Sequence[str], env: dict[str, str], trace_file: Path) -> Marks:
    """One traced run: its marks, (seconds since the client was started, phase), in order,
    and the kernel's own boot to init (its uptime then)."""
    trace_file.unlink(missing_ok=True)
    start = time.monotonic()  # the clock the marks use (time.monotonic in every process)
    traced = {**env, TRACE_ENV: str(trace_file)}
    result = subprocess.run(argv, capture_output=True, env=traced, stdin=subprocess.DEVNULL)
    end = time.monotonic()
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {result.stderr.decode()[-500:]}")
    marks: list[tuple[float, str]] = []
    kernel = math.nan
    for line in trace_file.read_text().splitlines():
        where, seconds, phase = line.split(" ", 2)
        if where == "host":
            marks.append((float(seconds) - start, phase))
        else:
            kernel = float(seconds)
    marks.append((end - start, "client: exited"))
    return Marks(sorted(marks), kernel)


def print_breakdown(runs: list[Marks], bare: float) -> None:
    """Each phase (from the mark before it to its own), median over the runs."""
    steps: dict[str, list[float]] = {}
    order: list[str] = []
    for marks in runs:
        previous = 0.0
        for at, phase in marks.phases:
            if phase not in steps:
                steps[phase] = []
                order.append(phase)
            steps[phase].append(at - previous)
            previous = at
    total = statistics.median(marks.phases[-1][0] for marks in runs)
    width = max(len(p) for p in order)
    print()
    print(f"where one `colinux run -- true` goes: median of {len(runs)} traced runs, seconds")
    print(f"{'phase (ends at)':<{width}}  {'takes':>7}  {'share':>6}")
    for phase in order:
        took = statistics.median(steps[phase])
        print(f"{phase:<{width}}  {took:7.3f}  {took / total:6.1%}")
    print(f"{'whole run':<{width}}  {total:7.3f}  {1:6.1%}")
    print(
        f"{'bare kernel, boot + power off (same run)':<{width}}  {bare:7.3f}  {bare / total:6.1%}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--breakdown", action="store_true", help="where one run's time goes")
    options = parser.parse_args()
    runs = options.runs
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        initrd = poweroff_initramfs(work)
        env = {**os.environ, "COLINUX_RUN_DIR": str(work / "run")}
        uml = [default_kernel(), "mem=256M", f"initrd={initrd}", "con=null", "con0=fd:0,fd:1",
               f"uml_dir={work}", "quiet"]  # fmt: skip
        colinux = str(BIN / "colinux")
        subprocess.run([colinux, "run", "--", "true"], env=env, check=True)  # warm the cache
        commands = {
            "bare linux.uml, boot + power off (baseline)": uml,
            "bare linux.uml + colinux boot arguments": [*uml, *FAST_BOOT_ARGS, *DEFAULT_GUEST_ARGS],
            "colinux run -- true": [colinux, "run", "--", "true"],
            "colinux run --no-share --no-network -- true":
                [colinux, "run", "--no-share", "--no-network", "--", "true"],
            "colinux run -- sh -c 'echo hello'": [colinux, "run", "--", "sh", "-c", "echo hello"],
        }  # fmt: skip
        # A guest in the background: `start` returns once it runs (its agent
        # answered), `stop` once it has shut down cleanly and its daemon is gone.
        start, stop = "colinux start NAME (until running)", "colinux stop NAME (clean)"
        lifecycle = {start: [colinux, "start", "bench"], stop: [colinux, "stop", "bench"]}
        times: dict[str, list[float]] = {name: [] for name in [*commands, *lifecycle]}
        traces = []
        for round_ in range(runs):
            names = [*commands, start, stop]
            if round_ % 2:
                names = [start, stop, *reversed(commands)]
            for name in names:
                times[name].append(timed_once({**commands, **lifecycle}[name], env))
            if options.breakdown:
                traces.append(traced_run(commands["colinux run -- true"], env, work / "trace"))
        rows = list(times.items())
        shutil.rmtree(work / "run", ignore_errors=True)
    baseline = statistics.median(rows[0][1])
    width = max(len(r[0]) for r in rows)
    print(
        f"boot benchmark: {runs} runs each, in turn, wall time in seconds, "
        f"on {os.cpu_count()} cores, kernel {default_kernel()}"
    )
    print(f"{'what':<{width}}  {'median':>7}  {'min':>7}  {'max':>7}  {'ratio':>6}")
    for name, times in rows:
        median = statistics.median(times)
        print(
            f"{name:<{width}}  {median:7.3f}  {min(times):7.3f}  {max(times):7.3f}"
            f"  {median / baseline:6.2f}"
        )
    if traces:
        print_breakdown(traces, baseline)


if __name__ == "__main__":
    main()
