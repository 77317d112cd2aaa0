"""The run directory's lock against passers-by: `colinux list` testing or removing
a dead daemon's directory while a daemon claims the same name."""

from __future__ import annotations

import fcntl
import os
import threading
import time
from pathlib import Path

import pytest

from colinux.control.rundir import ClaimedGuestDir, guest_dir


@pytest.fixture(autouse=True)
def run_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("COLINUX_RUN_DIR", str(tmp_path / "run"))
    return tmp_path / "run"


def test_a_dead_daemons_directory_is_removed_a_live_one_kept() -> None:
    claimed = ClaimedGuestDir("web")
    guest_dir("web").remove_if_stale()
    assert claimed.uml_dir.is_dir() and guest_dir("web").is_live()
    os.close(claimed._lock_fd)  # the daemon was killed: its lock went with it
    assert not guest_dir("web").is_live()
    guest_dir("web").remove_if_stale()
    assert not claimed.path.exists()


def test_a_claim_waits_out_a_passer_by_and_survives_a_removal() -> None:
    first = ClaimedGuestDir("web")
    os.close(first._lock_fd)  # a dead daemon's directory
    # A passer-by holds the lock a moment, then removes the directory as stale.
    fd = os.open(first.path / "lock", os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)

    def remove_later() -> None:
        time.sleep(0.1)
        guest = guest_dir("web")
        os.close(fd)
        guest.remove_if_stale()

    remover = threading.Thread(target=remove_later)
    remover.start()
    claimed = ClaimedGuestDir("web")  # no "already running": it waited and claimed
    remover.join()
    claimed.write_info(engine_pid=1)
    assert guest_dir("web").is_live() and claimed.uml_dir.is_dir()
    claimed.release()
