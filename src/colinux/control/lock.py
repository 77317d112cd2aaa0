"""Whether a guest's lock is held: the test a live daemon passes.

Only os and fcntl, so the lean exec client (colinux/launch.py) can use it
without importing the run-directory module."""

from __future__ import annotations

import fcntl
import os


def held(lock: str | os.PathLike[str]) -> bool:
    """True while some process holds ``lock`` (a guest's daemon holds its own)."""
    try:
        fd = os.open(lock, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False
