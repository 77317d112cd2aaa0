"""The user's cache directory for colinux: built guests and facts about kernels.

``~/.cache/colinux`` (``$XDG_CACHE_HOME/colinux``), made 0700 on first use;
where the home is not writable (a service user, say), a private directory
in the system's temporary directory instead. Everything in it can be
rebuilt: removing it costs time, never data.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "colinux"


def writable_cache_dir() -> Path:
    """The cache directory, made if needed (or a private temporary one)."""
    directory = cache_dir()
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError:
        directory = Path(tempfile.gettempdir()) / f"colinux-cache-{os.getuid()}"
        directory.mkdir(exist_ok=True, mode=0o700)
    return directory


def file_key(path: str) -> str:
    """What identifies a file's content cheaply: where it is, its size, its change time."""
    st = os.stat(path)
    return f"{os.path.realpath(path)}:{st.st_size}:{st.st_mtime_ns}:{st.st_ino}"


def load_json(name: str) -> dict[str, object]:
    """A cache file's JSON object ({} when it is missing or unreadable)."""
    try:
        with open(cache_dir() / name) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def store_json(name: str, data: dict[str, object]) -> None:
    """Replace a cache file atomically; a cache that cannot be written is only slower."""
    try:
        directory = writable_cache_dir()
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.")
        with os.fdopen(fd, "w") as f:
            json.dump(data, f)
        os.replace(tmp, directory / name)
    except OSError:
        pass
