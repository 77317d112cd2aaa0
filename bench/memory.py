"""Memory-on-demand benchmark: host memory that idle and busy guests really hold.

Boots the default guest with several ``mem=`` sizes, lets each settle, and
reads its resident size (PSS of the engine's process tree, what
``colinux list`` shows as RESIDENT). The baseline, measured in the same run,
is the smallest idle guest; a last row fills a tmpfs in a big guest to show
the host paying only for what the guest touches:

    .venv/bin/python bench/memory.py [--sizes 64,256,1024,4096] [--fill 256]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def status(name: str, env: dict[str, str]) -> dict[str, object]:
    from colinux.console.client import request

    os.environ["COLINUX_RUN_DIR"] = env["COLINUX_RUN_DIR"]
    return request(name, {"op": "status"})


def wait_running(name: str, env: dict[str, str]) -> None:
    deadline = time.monotonic() + 60
    while status(name, env)["state"] != "running":
        if time.monotonic() > deadline:
            raise SystemExit(f"guest {name} did not boot")
        time.sleep(0.1)


def idle_resident_mb(mem: int, settle: float, env: dict[str, str]) -> float:
    name = f"mem{mem}"
    colinux = str(BIN / "colinux")
    subprocess.run([colinux, "start", name, f"mem={mem}"], env=env, check=True, capture_output=True)
    try:
        wait_running(name, env)
        time.sleep(settle)
        return int(status(name, env)["resident_kib"]) / 1024  # type: ignore[call-overload]
    finally:
        subprocess.run([colinux, "stop", name], env=env, check=True)


def filled_resident_mb(mem: int, fill: int, env: dict[str, str]) -> float:
    script = (
        f"mkdir /fill && mount -t tmpfs -o size={fill + 64}m none /fill && "
        f"dd if=/dev/zero of=/fill/f bs=1M count={fill} 2>/dev/null && echo filled && sleep 30"
    )
    guest = subprocess.Popen(
        [str(BIN / "colinux"), "run", "--name", "fill", f"mem={mem}", "--", "sh", "-c", script],
        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
    )  # fmt: skip
    assert guest.stdout is not None
    try:
        if guest.stdout.readline() != b"filled\n":
            raise SystemExit("the fill guest failed")
        return int(status("fill", env)["resident_kib"]) / 1024  # type: ignore[call-overload]
    finally:
        subprocess.run([str(BIN / "colinux"), "stop", "fill", "--force"], env=env)
        guest.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="64,256,1024,4096", help="mem= values in MB")
    parser.add_argument("--fill", type=int, default=256, help="MB the busy guest writes")
    parser.add_argument("--settle", type=float, default=2.0, help="seconds idle before reading")
    ns = parser.parse_args()
    sizes = sorted(int(s) for s in ns.sizes.split(","))
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "COLINUX_RUN_DIR": str(Path(tmp) / "run")}
        rows = [
            (f"idle default guest, mem={m}", m, idle_resident_mb(m, ns.settle, env)) for m in sizes
        ]
        big = sizes[-1]
        rows.append(
            (
                f"mem={big} after writing {ns.fill} MB to tmpfs",
                big,
                filled_resident_mb(big, ns.fill, env),
            )
        )
        shutil.rmtree(Path(tmp) / "run", ignore_errors=True)
    baseline = rows[0][2]
    width = max(len(r[0]) for r in rows)
    print(f"memory benchmark: resident = PSS of the engine's processes, MB, {os.cpu_count()} cores")
    print(f"{'what':<{width}}  {'given':>6}  {'resident':>8}  {'of given':>8}  {'ratio':>6}")
    for name, given, resident in rows:
        print(
            f"{name:<{width}}  {given:6d}  {resident:8.1f}  {resident / given:8.1%}"
            f"  {resident / baseline:6.2f}"
        )
    print(f"(ratio: to the baseline, the first row, {baseline:.1f} MB)")


if __name__ == "__main__":
    main()
