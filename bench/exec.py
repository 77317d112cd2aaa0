"""colinux exec benchmark: a command in a running guest, against `colinux run -- CMD`.

Starts a default guest, then times, in the same run and in alternating order,
`colinux run -- true` (the baseline: a guest booted for the command and
powered off) and `colinux exec NAME -- ...` on the running guest. Prints the
median, min and max wall times of each and the ratio of its median to the
baseline's, then how fast stdout and stdin move through exec:

    .venv/bin/python bench/exec.py [--runs N] [--megabytes M]

The issue's target: `colinux exec NAME -- true` at most 100 ms (median).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

BIN = Path(sys.executable).parent
TARGET_MS = 100.0
GUEST = "bench-exec"


def timed(argv: Sequence[str], env: dict[str, str], data: bytes | None = None) -> float:
    start = time.perf_counter()
    result = subprocess.run(
        argv, input=data, stdin=None if data is not None else subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
    )  # fmt: skip
    took = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {result.stderr.decode()[-500:]}")
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="runs of each (default 10)")
    parser.add_argument(
        "--megabytes", type=int, default=4, help="MB moved by the throughput rows (default 4)"
    )
    ns = parser.parse_args()
    colinux = str(BIN / "colinux")
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "COLINUX_RUN_DIR": str(Path(tmp) / "run")}
        env.pop("TERM", None)
        subprocess.run([colinux, "run", "--no-share", "--", "true"], env=env, check=True)  # warm
        subprocess.run([colinux, "start", GUEST], env=env, check=True, stdout=subprocess.DEVNULL)
        try:
            exec_ = [colinux, "exec", GUEST, "--"]
            timed([*exec_, "true"], env)  # its slot's worker starts
            rows = [
                ("colinux run -- true (baseline)", [colinux, "run", "--no-share", "--", "true"]),
                ("colinux exec NAME -- true", [*exec_, "true"]),
                ("colinux exec NAME -- sh -c 'echo hello'", [*exec_, "sh", "-c", "echo hello"]),
                ("colinux exec -t NAME -- true (no terminal here)", [colinux, "exec", "-t",
                                                                     GUEST, "--", "true"]),
            ]  # fmt: skip
            times: dict[str, list[float]] = {name: [] for name, _ in rows}
            for run in range(ns.runs):
                for name, argv in rows if run % 2 == 0 else reversed(rows):
                    times[name].append(timed(argv, env))
            size = ns.megabytes << 20
            data = os.urandom(size)
            moved = {
                "stdout (head -c N /dev/zero)": [
                    timed([*exec_, "head", "-c", str(size), "/dev/zero"], env) for _ in range(3)
                ],
                "stdin (cat >/dev/null)": [
                    timed([*exec_, "sh", "-c", "cat >/dev/null"], env, data) for _ in range(3)
                ],
            }
        finally:
            subprocess.run([colinux, "stop", GUEST], env=env)
    baseline = statistics.median(times[rows[0][0]])
    width = max(len(name) for name in times)
    print(f"exec benchmark: {ns.runs} runs each, alternating order, on {os.cpu_count()} cores")
    print(f"{'what':<{width}}  {'median':>8}  {'min':>8}  {'max':>8}  {'ratio':>6}")
    for name, values in times.items():
        median = statistics.median(values)
        print(
            f"{name:<{width}}  {median * 1000:6.1f}ms  {min(values) * 1000:6.1f}ms"
            f"  {max(values) * 1000:6.1f}ms  {median / baseline:6.3f}"
        )
    exec_median = statistics.median(times[rows[1][0]]) * 1000
    verdict = "met" if exec_median <= TARGET_MS else "NOT met"
    print(f"target: colinux exec NAME -- true at most {TARGET_MS:.0f} ms: {verdict} "
          f"({exec_median:.1f} ms)")  # fmt: skip
    print(f"throughput, {ns.megabytes} MB, median of 3 (including the exec itself):")
    for name, values in moved.items():
        median = statistics.median(values)
        print(f"  {name:<30} {ns.megabytes / median:7.2f} MB/s  ({median:.2f} s)")


if __name__ == "__main__":
    main()
