"""cofs benchmark: postmark and sequential I/O on cofs shares, the disk image and the host.

Each *run* boots one default guest that runs Debian's ``postmark`` (as the
seed did) on a flat cofs share, a meta cofs share and an ext4 disk image
(cobd0, UML's ubd), ``--rounds`` times in alternating order, each timed in the
guest up to the end of a final ``sync``; the best round of each target counts.
A second guest of the same run times 64 MiB sequential writes (``dd
conv=fsync``) and reads (with the guest's page cache dropped) on each target,
and the host does both natively in the same directory. The table gives the
median over ``--runs`` runs of each figure and of each run's ratio to the disk
image (and to the host, for dd)::

    .venv/bin/python bench/cofs.py [--runs 3] [--rounds 2] [--dir /dev/shm]

While postmark runs, the cofs servers count their requests and their own time
per request (``COLINUX_COFS_STATS``). The second table sets them against the
guest's time: what the server does not account for of cofs's extra time over
the disk image is the guest's side of each round trip (UML's interrupt, the
FUSE client, waking the waiting process), and it prints what a whole round trip
would have to cost for cofs to reach 0.8x with that many requests.

postmark and its C library are shipped to the guest on a read-only share.
Needs the Debian packages postmark and e2fsprogs.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

BIN = Path(sys.executable).parent
TARGETS = ("flat", "meta", "disk")
TAGS = {"flat": "cofs0", "meta": "cofs2"}
NAMES = {"flat": "cofs flat", "meta": "cofs meta", "disk": "disk image (ubd, ext4)"}
LIBS = ("/lib/x86_64-linux-gnu/libc.so.6", "/lib64/ld-linux-x86-64.so.2")


def postmark_script(location: str, files: int, transactions: int) -> str:
    return (
        f"set location {location}\nset number {files}\nset transactions {transactions}\nrun\nquit\n"
    )


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
# busybox has no clock finer than /proc/uptime (centiseconds)
now() { read -r t _ </proc/uptime; echo "$t"; }
"""

# postmark removes its files itself; the sync makes the disk image write them too.
POSTMARK = (
    SETUP
    + r"""
for target in ORDER; do
    mkdir -p /mnt/$target/pm
    sync
    t0=$(now)
    /mnt/tools/postmark /mnt/tools/pm-$target.cfg >/dev/null 2>&1
    sync
    echo "postmark $target $t0 $(now)"
    rmdir /mnt/$target/pm
done
"""
)

SEQUENTIAL = (
    SETUP
    + r"""
for target in ORDER; do
    t0=$(now)
    dd if=/dev/zero of=/mnt/$target/seq bs=1M count=SEQMB conv=fsync 2>/dev/null
    echo "seqwrite $target $t0 $(now)"
    sync; echo 3 > /proc/sys/vm/drop_caches
    t0=$(now)
    dd if=/mnt/$target/seq of=/dev/null bs=1M 2>/dev/null
    echo "seqread $target $t0 $(now)"
    rm /mnt/$target/seq
done
"""
)


def guest(argv: list[str], script: str, env: dict[str, str]) -> dict[tuple[str, str], list[float]]:
    """Run ``script`` in a fresh guest; its ``WHAT TARGET T0 T1`` lines as seconds."""
    result = subprocess.run(
        [*argv, "--", "sh", "-c", script], capture_output=True, text=True,
        stdin=subprocess.DEVNULL, env={**os.environ, **env},
    )  # fmt: skip
    if result.returncode != 0:
        raise SystemExit(f"the guest failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    times: dict[tuple[str, str], list[float]] = {}
    for m in re.finditer(r"^(\w+) (\w+) ([\d.]+) ([\d.]+)$", result.stdout, re.M):
        seconds = max(float(m.group(4)) - float(m.group(3)), 0.01)
        times.setdefault((m.group(1), m.group(2)), []).append(seconds)
    return times


def host_dd(directory: Path, mb: int) -> tuple[float, float]:
    """The host's own sequential (write, read) MB/s in ``directory``, as the guest does it."""
    seq = directory / "seq"
    w = subprocess.run(
        ["dd", "if=/dev/zero", f"of={seq}", "bs=1M", f"count={mb}", "conv=fsync"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    r = subprocess.run(
        ["dd", f"if={seq}", "of=/dev/null", "bs=1M"], capture_output=True, text=True, check=True
    )
    seq.unlink()
    return _gnu_dd(w.stderr), _gnu_dd(r.stderr)


def one_run(ns: argparse.Namespace, base: Path, index: int) -> dict[str, float]:
    """One run's figures: seconds, MB/s, requests and server seconds, keyed by name."""
    image, stats = base / "disk.img", base / f"stats-{index}.jsonl"
    size_mb = max(256, ns.seq_mb * 2 + 128)
    subprocess.run(["mke2fs", "-q", "-t", "ext4", "-F", str(image), f"{size_mb}M"], check=True)
    argv = [
        str(BIN / "colinux"), "run", "--no-share", f"mem={ns.mem}", f"cofs0={base / 'flat'}",
        f"cofs1={base / 'tools'},ro", f"cofs2={base / 'meta'},meta", f"cobd0={image}",
    ]  # fmt: skip
    # Rounds alternate the order (flat meta disk, disk meta flat, ...), and runs start
    # where the last one ended: the machine's load changes from one minute to the next.
    order = [t for i in range(ns.rounds) for t in TARGETS[:: -1 if (i + index) % 2 else 1]]
    script = POSTMARK.replace("ORDER", " ".join(order))
    times = guest(argv, script, {"COLINUX_COFS_STATS": str(stats)})
    seq_script = SEQUENTIAL.replace("ORDER", " ".join(order)).replace("SEQMB", str(ns.seq_mb))
    times |= guest(argv, seq_script, {})
    out: dict[str, float] = {}
    for target in TARGETS:
        out[f"postmark {target}"] = min(times["postmark", target])
        out[f"postmark sum {target}"] = sum(times["postmark", target])
        out[f"seqwrite {target}"] = ns.seq_mb / min(times["seqwrite", target])
        out[f"seqread {target}"] = ns.seq_mb / min(times["seqread", target])
    records = {r["tag"]: r for r in map(json.loads, stats.read_text().splitlines())}
    for target, tag in TAGS.items():
        r = records[tag]
        out[f"requests {target}"] = sum(count for count, _ in r["ops"].values()) / ns.rounds
        out[f"server {target}"] = r["busy_ns"] / 1e9 / ns.rounds
        for name, (count, ns_) in r["ops"].items():
            out[f"op {target} {name}"] = count / ns.rounds
            out[f"opns {target} {name}"] = ns_ / max(count, 1)
    host = [host_dd(base / "native", ns.seq_mb) for _ in range(ns.rounds)]
    out["seqwrite host"] = max(w for w, _ in host)
    out["seqread host"] = max(r for _, r in host)
    for target in ("flat", "meta"):
        out[f"ratio {target}"] = out["postmark disk"] / out[f"postmark {target}"]
    for what in ("seqwrite", "seqread"):
        for target in TARGETS:
            out[f"{what} ratio {target}"] = out[f"{what} {target}"] / out[f"{what} host"]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--transactions", type=int, default=10000)
    parser.add_argument("--seq-mb", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2, help="rounds per run; the best counts")
    parser.add_argument("--runs", type=int, default=3, help="runs; the table holds medians")
    parser.add_argument("--mem", type=int, default=256, help="guest memory, MB")
    parser.add_argument(
        "--dir", help="host directory for the shares, the disk image and the host's dd "
        "(default: $TMPDIR or /tmp); its file system weighs on cofs and on the host alike",
    )  # fmt: skip
    ns = parser.parse_args()
    postmark = shutil.which("postmark")
    if postmark is None:
        raise SystemExit("bench/cofs.py needs postmark: apt-get install postmark")
    runs = []
    with tempfile.TemporaryDirectory(prefix="colinux-bench-cofs-", dir=ns.dir) as tmp:
        base = Path(tmp)
        for d in ("flat", "tools", "native", "meta"):
            (base / d).mkdir()
        shutil.copy(postmark, base / "tools" / "postmark")
        for lib in LIBS:
            shutil.copy(lib, base / "tools" / Path(lib).name)
        for target in TARGETS:
            script = postmark_script(f"/mnt/{target}/pm", ns.files, ns.transactions)
            (base / "tools" / f"pm-{target}.cfg").write_text(script)
        for index in range(ns.runs):
            runs.append(one_run(ns, base, index))
            r = runs[-1]
            print(
                f"run {index + 1}: postmark flat {r['postmark flat']:.2f} s, "
                f"meta {r['postmark meta']:.2f} s, disk {r['postmark disk']:.2f} s",
                file=sys.stderr,
            )
    report(ns, runs)
    return 0


def report(ns: argparse.Namespace, runs: list[dict[str, float]]) -> None:
    def med(key: str) -> float:
        return statistics.median(r.get(key, 0.0) for r in runs)

    print(
        f"postmark: {ns.files} files, {ns.transactions} transactions, timed in the guest to "
        f"the end of a sync; dd: {ns.seq_mb} MiB. Best of {ns.rounds} rounds in alternating "
        f"order per run; medians of {ns.runs} runs (ratios: the median of each run's ratio)."
    )
    print()
    print("| where | postmark s | vs disk image | seq write MB/s | vs host | seq read MB/s "
          "| vs host |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for target in TARGETS:
        ratio = f"{med(f'ratio {target}'):.2f}" if target != "disk" else "1.00"
        print(
            f"| {NAMES[target]} | {med(f'postmark {target}'):.2f} | {ratio} "
            f"| {med(f'seqwrite {target}'):.0f} | {med(f'seqwrite ratio {target}'):.2f} "
            f"| {med(f'seqread {target}'):.0f} | {med(f'seqread ratio {target}'):.2f} |"
        )
    print(f"| host natively (dd) | | | {med('seqwrite host'):.0f} | 1.00 "
          f"| {med('seqread host'):.0f} | 1.00 |")  # fmt: skip
    print()
    print("| share | requests per postmark | server µs/request | guest-side µs/request "
          "| µs/request for 0.8x |")  # fmt: skip
    print("| --- | --- | --- | --- | --- |")
    for target in TAGS:
        n = med(f"requests {target}")
        server = med(f"server {target}")
        extra = statistics.median(
            (r[f"postmark sum {target}"] - r["postmark sum disk"]) / ns.rounds for r in runs
        )
        budget = med("postmark disk") / 0.8 - med("postmark disk")
        print(
            f"| {target} | {n:.0f} | {server / n * 1e6:.0f} | {(extra - server) / n * 1e6:.0f} "
            f"| {budget / n * 1e6:.0f} |"
        )
    print()
    print("| request | flat count | flat server µs | meta count | meta server µs |")
    print("| --- | --- | --- | --- | --- |")
    names = {k.split(" ", 2)[2] for r in runs for k in r if k.startswith("op flat ")}
    for name in sorted(names, key=lambda k: -med(f"op flat {k}")):
        if med(f"op flat {name}") < 100:
            continue
        cells = [
            f"{med(f'op {t} {name}'):.0f} | {med(f'opns {t} {name}') / 1000:.0f}" for t in TAGS
        ]
        print(f"| {name} | " + " | ".join(cells) + " |")


def _gnu_dd(text: str) -> float:
    m = re.search(r"copied, ([\d.]+) s, ([\d.]+) ([kMG])B/s", text)
    if not m:
        raise SystemExit(f"dd printed no rate: {text!r}")
    return float(m.group(2)) * {"k": 1 / 1000, "M": 1, "G": 1000}[m.group(3)]


if __name__ == "__main__":
    sys.exit(main())
