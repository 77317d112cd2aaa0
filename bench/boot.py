"""Boot-time benchmark: `colinux run -- true` against bare User-Mode Linux.

Prints a table of wall times (median, min, max over N runs) and each row's
ratio to the baseline, a bare ``linux.uml`` booting a one-line initramfs that
powers off at once, measured in the same run:

    .venv/bin/python bench/boot.py [--runs N]
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
from collections.abc import Sequence
from pathlib import Path

from colinux.engine.uml import DEFAULT_GUEST_ARGS, FAST_BOOT_ARGS, default_kernel
from colinux.guest.cpio import CpioArchive

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


def timed(argv: Sequence[str], runs: int, env: dict[str, str]) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        result = subprocess.run(argv, capture_output=True, env=env, stdin=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
        if result.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} failed: {result.stderr.decode()[-500:]}")
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    runs = parser.parse_args().runs
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        initrd = poweroff_initramfs(work)
        env = {**os.environ, "COLINUX_RUN_DIR": str(work / "run")}
        uml = [default_kernel(), "mem=256M", f"initrd={initrd}", "con=null", "con0=fd:0,fd:1",
               f"uml_dir={work}", "quiet"]  # fmt: skip
        colinux = str(BIN / "colinux")
        subprocess.run([colinux, "run", "--", "true"], env=env, check=True)  # warm the cache
        rows = [
            ("bare linux.uml, boot + power off (baseline)", timed(uml, runs, env)),
            ("bare linux.uml + colinux boot arguments",
             timed([*uml, *FAST_BOOT_ARGS, *DEFAULT_GUEST_ARGS], runs, env)),
            ("colinux run -- true", timed([colinux, "run", "--", "true"], runs, env)),
            ("colinux run -- sh -c 'echo hello'",
             timed([colinux, "run", "--", "sh", "-c", "echo hello"], runs, env)),
        ]  # fmt: skip
        shutil.rmtree(work / "run", ignore_errors=True)
    baseline = statistics.median(rows[0][1])
    width = max(len(r[0]) for r in rows)
    print(f"boot benchmark: {runs} runs each, wall time in seconds, on {os.cpu_count()} cores")
    print(f"{'what':<{width}}  {'median':>7}  {'min':>7}  {'max':>7}  {'ratio':>6}")
    for name, times in rows:
        median = statistics.median(times)
        print(
            f"{name:<{width}}  {median:7.3f}  {min(times):7.3f}  {max(times):7.3f}"
            f"  {median / baseline:6.2f}"
        )


if __name__ == "__main__":
    main()
