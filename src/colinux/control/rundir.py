"""Run directories: where each guest's daemon keeps its sockets and state.

``/run/colinux`` for root (login shells and system services alike),
``$XDG_RUNTIME_DIR/colinux`` when that is set and ours, else
``/tmp/colinux-UID``; mode 0700, and refused if another user owns it. Each
guest has ``BASE/NAME/`` (0700) holding ``control.sock`` (0600), ``lock``
(held with flock by the live daemon: that, not a pid file, says whether the
guest runs), ``daemon.json`` (pid, start time), ``uml/`` (the engine's
private ``uml_dir``) and, with ``--web``, ``web.url`` (0600: its token).
The daemon's log is ``BASE/NAME.log``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from colinux.control import lock
from colinux.errors import ColinuxError, UserError

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,47}")


CLAIM_PATIENCE = 0.5  # seconds a guest's lock may be held by a passer-by


def check_name(name: str) -> str:
    if not NAME_RE.fullmatch(name):
        raise UserError(
            f"guest name {name!r}: expected 1-48 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def _private_dir(path: Path) -> Path:
    """Create ``path`` 0700 or check that an existing one is ours and private."""
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o700)
    st = path.lstat()
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
        raise ColinuxError(
            f"{path}: not a directory owned by uid {os.getuid()}; refusing to use it"
        )
    if stat.S_IMODE(st.st_mode) != 0o700:
        os.chmod(path, 0o700)
    return path


def base_dir() -> Path:
    override = os.environ.get("COLINUX_RUN_DIR")
    if override:
        return _private_dir(Path(override))
    if os.getuid() == 0:
        # One place for all of root's guests, whether started from a login
        # shell (which has XDG_RUNTIME_DIR) or by a systemd system unit (which
        # has not): `colinux list` shows both.
        return _private_dir(Path("/run/colinux"))
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime) and os.stat(runtime).st_uid == os.getuid():
        return _private_dir(Path(runtime) / "colinux")
    return _private_dir(Path("/tmp") / f"colinux-{os.getuid()}")


@dataclass
class GuestDir:
    """One guest's run directory."""

    name: str
    path: Path

    @property
    def control_socket(self) -> Path:
        return self.path / "control.sock"

    @property
    def uml_dir(self) -> Path:
        return self.path / "uml"

    @property
    def info_file(self) -> Path:
        return self.path / "daemon.json"

    @property
    def web_url_file(self) -> Path:
        """The daemon's web console URL (--web), token and all: 0600, in this 0700 directory."""
        return self.path / "web.url"

    @property
    def log_file(self) -> Path:
        return self.path.parent / f"{self.name}.log"

    def is_live(self) -> bool:
        """True while a daemon holds this guest's lock."""
        return lock.held(self.path / "lock")

    def remove_if_stale(self) -> None:
        """Remove the directory of a daemon that is gone (killed), holding its lock
        meanwhile, so that a daemon claiming the name now is never removed."""
        try:
            fd = os.open(self.path / "lock", os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return  # a daemon between making the directory and its lock, or nothing
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return  # live
        try:
            shutil.rmtree(self.path, ignore_errors=True)
        finally:
            os.close(fd)

    def read_info(self) -> dict[str, object]:
        try:
            return dict(json.loads(self.info_file.read_text()))
        except (OSError, ValueError):
            return {}


def guest_dir(name: str) -> GuestDir:
    return GuestDir(check_name(name), base_dir() / name)


class ClaimedGuestDir(GuestDir):
    """The run directory of the guest this process serves, locked for its lifetime."""

    def __init__(self, name: str) -> None:
        super().__init__(check_name(name), base_dir() / name)
        self._lock_fd = self._claim()
        # Leftovers of a daemon that was killed: its sockets are dead.
        for leftover in (self.control_socket, self.info_file, self.web_url_file):
            leftover.unlink(missing_ok=True)
        shutil.rmtree(self.uml_dir, ignore_errors=True)
        _private_dir(self.uml_dir)

    def _claim(self) -> int:
        """The lock of this guest's directory, held: an fd.

        Others hold it for a moment too (`colinux list` testing whether a guest
        lives, or removing a dead daemon's directory, which may remove the one we
        just made): a lock held for more than half a second is another daemon's,
        and a lock whose file is no longer in the directory is made again."""
        deadline = time.monotonic() + CLAIM_PATIENCE
        while True:
            _private_dir(self.path)
            lock = self.path / "lock"
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                if time.monotonic() < deadline:
                    time.sleep(0.02)
                    continue
                pid = self.read_info().get("pid", "?")
                raise UserError(
                    f"guest {self.name!r} is already running (daemon pid {pid}); "
                    f"stop it with 'colinux stop {self.name}' or choose another name"
                ) from None
            try:
                if os.stat(lock).st_ino == os.fstat(fd).st_ino:
                    return fd
            except FileNotFoundError:
                pass
            os.close(fd)  # removed as stale under us: make it again

    def write_info(self, **info: object) -> None:
        tmp = self.info_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"pid": os.getpid(), "started": time.time(), **info}))
        tmp.replace(self.info_file)

    def release(self) -> None:
        """Remove the directory (the daemon is ending) and drop the lock."""
        shutil.rmtree(self.uml_dir, ignore_errors=True)
        for leftover in (self.control_socket, self.info_file, self.path / "engine.log"):
            leftover.unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # colinux start's log, when nothing went wrong
            if self.log_file.stat().st_size == 0:
                self.log_file.unlink()
        (self.path / "lock").unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self.path.rmdir()
        os.close(self._lock_fd)


def list_guests() -> list[GuestDir]:
    base = base_dir()
    guests = []
    for entry in sorted(base.iterdir()):
        if entry.is_dir() and NAME_RE.fullmatch(entry.name):
            guests.append(GuestDir(entry.name, entry))
    return guests
