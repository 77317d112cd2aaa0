"""cofs benchmark: postmark and sequential I/O on a cofs share, the disk image and the host.

Runs Debian's ``postmark`` (as the seed did) in one default guest on a flat
cofs share, a meta cofs share and an ext4 disk image (cobd0, UML's ubd), then
on the host directory natively, and prints KB/s read and written with the ratios
cofs/disk-image and cofs/host, plus large sequential write/read MB/s (dd,
with the guest's page cache dropped before reading)::

    .venv/bin/python bench/cofs.py [--files 2000] [--transactions 10000] [--seq-mb 64] [--rounds 2]
    .venv/bin/python bench/cofs.py --breakdown [--dir /dev/shm]

postmark and its C library are shipped to the guest on a second,
read-only share. Needs the Debian packages postmark and e2fsprogs.

``--breakdown`` says where cofs's time goes instead: one more guest runs
postmark once on each target, timed in the guest, while the cofs servers
count their requests and their own time per request (``COLINUX_COFS_STATS``).
What the server does not account for of cofs's extra time over the disk image
is the guest's side of each round trip (UML's interrupt, the FUSE client,
waking the waiting process). It also prints what a round trip would have to
cost for cofs to reach 0.8x the disk image with that many requests.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path

BIN = Path(sys.executable).parent
TARGETS = ("flat", "meta", "disk")
NAMES = ("cofs flat", "cofs meta", "disk image (ubd, ext4)")
LIBS = ("/lib/x86_64-linux-gnu/libc.so.6", "/lib64/ld-linux-x86-64.so.2")


def postmark_script(location: str, files: int, transactions: int) -> str:
    return (
        f"set location {location}\nset number {files}\nset transactions {transactions}\nrun\nquit\n"
    )


def parse_postmark(text: str) -> tuple[float, float]:
    """(read KB/s, write KB/s) from postmark's summary."""
    rates = []
    for kind in ("read", "written"):
        m = re.search(rf"megabytes {kind} \(([\d.]+) (kilo|mega)bytes per second\)", text)
        if not m:
            raise SystemExit(f"postmark printed no {kind} rate:\n{text[-1500:]}")
        rates.append(float(m.group(1)) * (1024 if m.group(2) == "mega" else 1))
    return rates[0], rates[1]


def parse_timed(text: str, mb: int) -> float:
    """MB/s from the guest's ``seconds T0 T1`` line."""
    m = re.search(r"seconds ([\d.]+) ([\d.]+)", text)
    if not m:
        raise SystemExit(f"no timing: {text!r}")
    return mb / max(float(m.group(2)) - float(m.group(1)), 0.01)


# postmark and its libraries from the tools share, the three targets mounted.
SETUP = r"""
set -e
mkdir -p /lib/x86_64-linux-gnu /lib64 /mnt/tools /mnt/flat /mnt/meta /mnt/disk
mount -t cofs cofs1 /mnt/tools
cp /mnt/tools/libc.so.6 /lib/x86_64-linux-gnu/
cp /mnt/tools/ld-linux-x86-64.so.2 /lib64/
mount -t cofs cofs0 /mnt/flat
mount -t cofs cofs2 /mnt/meta
mount /dev/cobd0 /mnt/disk
"""

GUEST = (
    SETUP
    + r"""
# busybox dd prints no rate: time it with /proc/uptime (centiseconds).
timed() {
    read -r t0 _ </proc/uptime
    "$@" 2>/dev/null
    read -r t1 _ </proc/uptime
    echo "seconds $t0 $t1"
}
for target in ORDER; do
    dir=/mnt/$target/pm
    mkdir -p $dir
    echo "== postmark $target"
    /mnt/tools/postmark /mnt/tools/pm-$target.cfg 2>&1 | grep -E "megabytes|seconds"
    rm -rf $dir
    echo "== seqwrite $target"
    timed dd if=/dev/zero of=/mnt/$target/seq bs=1M count=SEQMB conv=fsync
    sync; echo 3 > /proc/sys/vm/drop_caches
    echo "== seqread $target"
    timed dd if=/mnt/$target/seq of=/dev/null bs=1M
    rm /mnt/$target/seq
done
"""
)


BREAKDOWN = (
    SETUP
    + r"""
for target in disk flat meta; do
    mkdir -p /mnt/$target/pm
    read -r t0 _ </proc/uptime
    /mnt/tools/postmark /mnt/tools/pm-$target.cfg >/dev/null 2>&1
    read -r t1 _ </proc/uptime
    echo "elapsed $target $t0 $t1"
    rm -rf /mnt/$target/pm
done
"""
)


def breakdown(argv: list[str], stats: Path) -> None:
    """Run postmark once per target with request statistics on; print where time goes."""
    result = subprocess.run(
        [*argv, "--", "sh", "-c", BREAKDOWN], capture_output=True, text=True,
        stdin=subprocess.DEVNULL, env={**os.environ, "COLINUX_COFS_STATS": str(stats)},
    )  # fmt: skip
    if result.returncode != 0:
        raise SystemExit(f"the guest failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    elapsed = {
        m.group(1): float(m.group(3)) - float(m.group(2))
        for m in re.finditer(r"elapsed (\w+) ([\d.]+) ([\d.]+)", result.stdout)
    }
    records = {r["tag"]: r for r in map(json.loads, stats.read_text().splitlines())}
    disk = elapsed["disk"]
    print(f"postmark once per target; the disk image took {disk:.1f} s")
    print()
    print("| share | postmark s | vs disk | requests | server µs/request | guest-side µs/request "
          "| µs/request for 0.8x |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- |")
    ops: dict[str, dict[str, list[int]]] = {}
    for target, tag in (("flat", "cofs0"), ("meta", "cofs2")):
        r = records[tag]
        n = sum(count for count, _ in r["ops"].values())
        server = r["busy_ns"] / 1e9
        extra = elapsed[target] - disk
        guest_side = extra - server
        budget = disk / 0.8 - disk  # all the extra time 0.8x allows
        print(
            f"| {target} | {elapsed[target]:.1f} | {disk / elapsed[target]:.2f} | {n} "
            f"| {server / n * 1e6:.0f} | {guest_side / n * 1e6:.0f} | {budget / n * 1e6:.0f} |"
        )
        ops[target] = r["ops"]
    print()
    print("| request | flat count | flat server µs | meta count | meta server µs |")
    print("| --- | --- | --- | --- | --- |")
    names = sorted(ops["flat"], key=lambda k: -ops["flat"][k][0])
    for name in names:
        if ops["flat"][name][0] < 100:
            continue
        row = [f"| {name}"]
        for target in ("flat", "meta"):
            count, ns = ops[target].get(name, [0, 0])
            row.append(f"{count} | {ns / max(count, 1) / 1000:.0f}")
        print(" | ".join(row) + " |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--transactions", type=int, default=10000)
    parser.add_argument("--seq-mb", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2, help="runs of each; the best is kept")
    parser.add_argument("--mem", type=int, default=256, help="guest memory, MB")
    parser.add_argument("-v", "--verbose", action="store_true", help="show the guest's output")
    parser.add_argument(
        "--breakdown", action="store_true", help="where cofs's time goes, instead of the table"
    )
    parser.add_argument(
        "--dir", help="host directory for the shares, the disk image and the native run "
        "(default: $TMPDIR or /tmp); its file system weighs on cofs and on the host alike",
    )  # fmt: skip
    ns = parser.parse_args()
    postmark = shutil.which("postmark")
    if postmark is None:
        raise SystemExit("bench/cofs.py needs postmark: apt-get install postmark")
    with tempfile.TemporaryDirectory(prefix="colinux-bench-cofs-", dir=ns.dir) as tmp:
        base = Path(tmp)
        share, tools, native = base / "share", base / "tools", base / "native"
        meta_share = base / "meta"
        for d in (share, tools, native, meta_share):
            d.mkdir()
        shutil.copy(postmark, tools / "postmark")
        for lib in LIBS:
            shutil.copy(lib, tools / Path(lib).name)
        for target in ("flat", "meta", "disk"):
            script = postmark_script(f"/mnt/{target}/pm", ns.files, ns.transactions)
            (tools / f"pm-{target}.cfg").write_text(script)
        image = base / "disk.img"
        size_mb = max(256, ns.seq_mb * 2 + 128)
        subprocess.run(["mke2fs", "-q", "-t", "ext4", "-F", str(image), f"{size_mb}M"], check=True)
        # Rounds alternate the order (flat meta disk, disk meta flat, ...) and the best of
        # each is kept: the machine's load changes from one minute to the next.
        order = [t for i in range(ns.rounds) for t in TARGETS[:: -1 if i % 2 else 1]]
        guest = GUEST.replace("SEQMB", str(ns.seq_mb)).replace("ORDER", " ".join(order))
        argv = [
            str(BIN / "colinux"), "run", "--no-share", f"mem={ns.mem}", f"cofs0={share}",
            f"cofs1={tools},ro", f"cofs2={meta_share},meta", f"cobd0={image}",
        ]  # fmt: skip
        if ns.breakdown:
            breakdown(argv, base / "stats.jsonl")
            return 0
        result = subprocess.run(
            [*argv, "--", "sh", "-c", guest], capture_output=True, text=True,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        if ns.verbose:
            print(result.stdout)
        if result.returncode != 0:
            raise SystemExit(f"the guest failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
        sections: dict[str, list[str]] = {}
        for m in re.finditer(r"== (\w+ \w+)\n(.*?)(?=\n== |\Z)", result.stdout, re.S):
            sections.setdefault(m.group(1), []).append(m.group(2))
        # The host natively, same postmark parameters.
        host, seq_host = [], []
        for _ in range(ns.rounds):
            host.append(parse_postmark(subprocess.run(
                [postmark], input=postmark_script(str(native), ns.files, ns.transactions),
                capture_output=True, text=True, check=True,
            ).stdout))  # fmt: skip
            seq = native / "seq"
            w = subprocess.run(
                ["dd", "if=/dev/zero", f"of={seq}", "bs=1M", f"count={ns.seq_mb}", "conv=fsync"],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            r = subprocess.run(
                ["dd", f"if={seq}", "of=/dev/null", "bs=1M"],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            seq_host.append((_gnu_dd(w.stderr), _gnu_dd(r.stderr)))
    mb = ns.seq_mb
    rows, seqs = {}, {}
    for name, t in zip(NAMES, TARGETS, strict=True):
        rows[name] = _best(parse_postmark(text) for text in sections[f"postmark {t}"])
        seqs[name] = _best(
            (parse_timed(w, mb), parse_timed(r, mb))
            for w, r in zip(sections[f"seqwrite {t}"], sections[f"seqread {t}"], strict=True)
        )
    rows["host natively"] = _best(host)
    seqs["host natively"] = _best(seq_host)
    disk, native_rates = rows["disk image (ubd, ext4)"], rows["host natively"]
    print(
        f"postmark: {ns.files} files, {ns.transactions} transactions; dd: {ns.seq_mb} MiB; "
        f"best of {ns.rounds} rounds"
    )
    print()
    print("| where | read KB/s | write KB/s | read vs disk | write vs disk | read vs host "
          "| write vs host | seq write MB/s | seq read MB/s |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, (rd, wr) in rows.items():
        sw, sr = seqs[name]
        print(
            f"| {name} | {rd:.0f} | {wr:.0f} | {rd / disk[0]:.2f} | {wr / disk[1]:.2f} "
            f"| {rd / native_rates[0]:.2f} | {wr / native_rates[1]:.2f} | {sw:.1f} | {sr:.1f} |"
        )
    return 0


def _best(pairs: Iterable[tuple[float, float]]) -> tuple[float, float]:
    """The best (largest) of each member of the pairs."""
    firsts, seconds = zip(*pairs, strict=True)
    return max(firsts), max(seconds)


def _gnu_dd(text: str) -> float:
    m = re.search(r"copied, ([\d.]+) s, ([\d.]+) ([kMG])B/s", text)
    if not m:
        raise SystemExit(f"dd printed no rate: {text!r}")
    return float(m.group(2)) * {"k": 1 / 1000, "M": 1, "G": 1000}[m.group(3)]


if __name__ == "__main__":
    sys.exit(main())
