"""Phase marks: where the time of one run goes (``bench/boot.py --breakdown``).

With ``COLINUX_TRACE=FILE`` in the environment, each step of a run appends
one line to FILE as it happens, on the host's monotonic clock (what
``time.monotonic()`` reads in every host process)::

    host 12345.678901 engine: started
    host 12345.912345 init: boot hooks done     # a guest step, as it reached the host
    kernel 0.180000 runs init                   # the guest's uptime, from its kernel log

The guest's init and agent write ``colinux-trace: PHASE`` lines straight to
the daemon's kernel-message line (/dev/tty13), so the daemon stamps them on
arrival with the host's clock (the guest's own clock steps in jiffies, 10 ms);
``colinux.trace`` on the kernel command line tells them to. Without the
variable nothing is written and a mark costs one dictionary lookup.
"""

from __future__ import annotations

import os
import time

TRACE_ENV = "COLINUX_TRACE"
GUEST_PREFIX = "colinux-trace: "  # what the guest's marks say in its kernel log
KERNEL_ARG = "colinux.trace"


def enabled() -> bool:
    return bool(os.environ.get(TRACE_ENV))


def _append(line: str) -> None:
    path = os.environ.get(TRACE_ENV)
    if not path:
        return
    # One write of one line in append mode: marks from the client, the daemon
    # and its threads interleave whole.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def mark(phase: str) -> None:
    """The host reached PHASE now."""
    if TRACE_ENV in os.environ:
        _append(f"host {time.monotonic():.6f} {phase}\n")


def guest_line(line: str, uptime: float | None = None) -> None:
    """A line from the guest's kernel-message channel: a mark if it is one.

    ``uptime`` is a kernel message's own time, for the kernel's boot to init."""
    if TRACE_ENV not in os.environ:
        return
    if line.startswith(GUEST_PREFIX):
        mark(line[len(GUEST_PREFIX) :].strip())
    elif uptime is not None and line.startswith("Run ") and line.endswith(" as init process"):
        _append(f"kernel {uptime:.6f} runs init\n")
