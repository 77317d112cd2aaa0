"""Guest RAM is taken from the host on demand: `colinux list` shows given and resident memory."""

from __future__ import annotations

from conftest import Colinux
from test_daemon import Terminal, listed, start

FILL_MB = 300


def resident_mb(colinux: Colinux, name: str) -> tuple[str, int]:
    row = next(r for r in listed(colinux) if r[0] == name)
    memory, resident = row[3], row[4]
    assert resident.endswith("M"), row
    return memory, int(resident[:-1])


def test_idle_guest_holds_far_less_than_its_memory_and_grows_on_use(colinux: Colinux) -> None:
    start(colinux, "big", "mem=1024")
    console = Terminal(colinux, "console", "big")
    console.read_until(b"big:/root# ")
    memory, idle = resident_mb(colinux, "big")
    assert memory == "1024M"
    assert 0 < idle < 1024 // 4, idle
    # The guest fills a tmpfs: those pages, and only those, come from the host.
    console.type(
        f"mkdir /fill; mount -t tmpfs -o size={FILL_MB + 100}m none /fill; "
        f"dd if=/dev/zero of=/fill/f bs=1M count={FILL_MB} 2>/dev/null; "
        "echo filled-$((1))\r".encode()
    )
    console.read_until(b"filled-1")
    _, full = resident_mb(colinux, "big")
    assert full >= idle + FILL_MB * 0.9, (idle, full)
    console.type(b"\x1d")
    assert console.close() == 0
    assert colinux.run("stop", "big").returncode == 0
