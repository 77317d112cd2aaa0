"""How much host memory a guest really holds: the resident size of its process tree.

An engine is several host processes: bwrap, the UML kernel, its helper
threads (separate pids sharing one address space) and one process per guest
address space, all mapping the guest's RAM file. Adding up their RSS counts
shared pages many times, so we add up PSS (shared pages divided among the
address spaces that map them), once per address space::

    resident_kib(engine_pid)    # e.g. 41236 for an idle mem=1024 guest

Guest RAM is a sparse file mapped on demand: pages the guest never touched
cost the host nothing, which is coLinux's "memory on demand".
"""

from __future__ import annotations

import os
from functools import cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import ctypes

_KCMP_VM = 1
_KCMP_SYSCALL = {"x86_64": 312, "aarch64": 272, "riscv64": 272, "ppc64le": 354, "s390x": 343}


def process_tree(root: int) -> list[int]:
    """``root`` and all its descendants (pids), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # The command name is in parentheses and may hold spaces: split after it.
        fields = stat[stat.rfind(b")") + 2 :].split()
        children.setdefault(int(fields[1]), []).append(int(entry))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo += children.get(pid, [])
    return tree


@cache
def _libc() -> ctypes.CDLL:
    # Imported on first use: ctypes is a few ms of every daemon's start.
    import ctypes

    return ctypes.CDLL(None, use_errno=True)


def same_address_space(a: int, b: int) -> bool:
    """kcmp(2): do processes ``a`` and ``b`` share one address space?"""
    number = _KCMP_SYSCALL.get(os.uname().machine)
    if number is not None:
        result = _libc().syscall(number, a, b, _KCMP_VM, 0, 0)
        if result >= 0:
            return bool(result == 0)
    # No kcmp: processes that share an address space show the same maps.
    try:
        with open(f"/proc/{a}/maps", "rb") as fa, open(f"/proc/{b}/maps", "rb") as fb:
            return fa.read() == fb.read()
    except OSError:
        return False


def _pss_kib(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
            for line in f:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return 0  # a zombie or kernel thread: no address space


def resident_kib(root: int) -> int | None:
    """Host memory (KiB, proportional set size) held by ``root``'s process tree."""
    total, counted = 0, list[int]()
    seen_any = False
    for pid in process_tree(root):
        if any(same_address_space(pid, other) for other in counted):
            continue
        pss = _pss_kib(pid)
        if pss is None:
            continue
        seen_any = True
        counted.append(pid)
        total += pss
    return total if seen_any else None
