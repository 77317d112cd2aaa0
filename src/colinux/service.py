"""Guests as systemd services: ``colinux-daemon --install-service`` and friends.

coLinux 0.6.2 registered a guest as a Windows service; here it becomes a
systemd unit, ``colinux-NAME.service``. The unit runs
``colinux-daemon --run-service NAME -c /abs/my.colinux.xml`` (the settings
stay in the XML file, whose absolute path the unit stores) in the directory
the install was made from, with ``Type=notify`` (READY=1 once the guest has
booted), a restart on failure and a clean guest shutdown on
``systemctl stop`` (SIGTERM)::

    unit = ServiceUnit(name="web", config="/srv/web.xml", scope="system", ...)
    path = install(unit)            # refuses to overwrite; atomic
    remove("web", scope="system")   # stops and disables it first when systemd runs

A system unit goes to ``/etc/systemd/system`` (root), a user unit to
``~/.config/systemd/user``; ``COLINUX_UNIT_DIR`` overrides both (tests,
packaging).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from colinux.control.rundir import check_name
from colinux.errors import ColinuxError, UserError

Scope = Literal["system", "user"]
DEFAULT_SERVICE_NAME = "colinux"
SYSTEM_UNIT_DIR = Path("/etc/systemd/system")
# systemd may stop a guest for this long before it kills it; our own stop
# ladder (agent power-off, engine halt, kill) fits well within it.
STOP_TIMEOUT_S = 60
WATCHDOG_S = 30


def unit_name(name: str) -> str:
    return f"colinux-{check_name(name)}.service"


def default_scope() -> Scope:
    return "system" if os.geteuid() == 0 else "user"


def unit_dir(scope: Scope) -> Path:
    override = os.environ.get("COLINUX_UNIT_DIR")
    if override:
        return Path(override)
    if scope == "system":
        return SYSTEM_UNIT_DIR
    config = os.environ.get("XDG_CONFIG_HOME") or os.path.join(Path.home(), ".config")
    return Path(config) / "systemd" / "user"


def quote_exec_word(word: str) -> str:
    """One ExecStart= word as systemd reads it back: specifiers and variables escaped."""
    word = word.replace("%", "%%").replace("$", "$$")
    if word and not any(c in word for c in " \t\"'\\;"):
        return word
    return '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _plain_value(value: str) -> str:
    """A setting value that is not a command line: only specifiers need escaping."""
    if "\n" in value:
        raise UserError(f"{value!r}: a newline cannot be stored in a systemd unit")
    return value.replace("%", "%%")


def daemon_command() -> list[str]:
    """How the unit starts colinux-daemon: the installed script, else this Python."""
    script = Path(sys.executable).parent / "colinux-daemon"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "colinux.cli", "daemon"]


@dataclass(frozen=True)
class ServiceUnit:
    name: str  # guest name; the unit is colinux-NAME.service
    config: str  # absolute path of the XML (or KEY=VALUE) configuration file
    scope: Scope
    working_directory: str
    drives: tuple[str, ...] = ()  # --drive L=DIR, stored so DOS paths resolve the same
    quiet: bool = False  # -k
    pidfile: str | None = None  # -p PIDFILE, absolute
    debug_collector: bool = False  # --debug-collector
    web: tuple[str, ...] = ()  # --web --port PORT [--listen ADDRESS]: the daemon's web console
    command: tuple[str, ...] = field(default_factory=lambda: tuple(daemon_command()))

    @property
    def unit_name(self) -> str:
        return unit_name(self.name)

    def exec_start(self) -> list[str]:
        argv = [*self.command, "--run-service", self.name, "-c", self.config]
        for drive in self.drives:
            argv += ["--drive", drive]
        if self.quiet:
            argv.append("-k")
        if self.pidfile is not None:
            argv += ["-p", self.pidfile]
        if self.debug_collector:
            argv.append("--debug-collector")
        argv += self.web
        return argv

    def render(self) -> str:
        wanted_by = "multi-user.target" if self.scope == "system" else "default.target"
        exec_start = " ".join(quote_exec_word(w) for w in self.exec_start())
        return (
            "# Written by colinux-daemon --install-service; remove with\n"
            f"# colinux-daemon --remove-service {self.name}"
            f"{' --user' if self.scope == 'user' else ''}\n"
            "[Unit]\n"
            f"Description=Cooperative Linux guest {self.name} "
            f"({_plain_value(self.config)})\n"
            "After=network.target\n"
            "\n"
            "[Service]\n"
            "Type=notify\n"
            "NotifyAccess=main\n"
            f"ExecStart={exec_start}\n"
            f"WorkingDirectory={_plain_value(self.working_directory)}\n"
            # SIGTERM to the daemon alone: it shuts the guest down cleanly and
            # reaps the engine; whatever is left afterwards is killed.
            "KillMode=mixed\n"
            "Restart=on-failure\n"
            # Exit status 2 is a mistake in the settings: restarting cannot fix it.
            "RestartPreventExitStatus=2\n"
            "RestartSec=5\n"
            "TimeoutStartSec=300\n"
            f"TimeoutStopSec={STOP_TIMEOUT_S}\n"
            f"WatchdogSec={WATCHDOG_S}\n"
            "\n"
            "[Install]\n"
            f"WantedBy={wanted_by}\n"
        )


def systemd_running() -> bool:
    """True when systemd is PID 1 (sd_booted's test)."""
    return os.path.isdir("/run/systemd/system")


def _systemctl(scope: Scope, *args: str, check: bool = True) -> bool:
    systemctl = shutil.which("systemctl")
    if systemctl is None or not systemd_running():
        return False
    argv = [systemctl, *(["--user"] if scope == "user" else []), *args]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    if check and result.returncode != 0:
        raise ColinuxError(f"{' '.join(argv)} failed: {result.stderr.strip()}")
    return result.returncode == 0


def install(unit: ServiceUnit) -> Path:
    """Write the unit file, refusing to replace one; nothing is half written."""
    directory = unit_dir(unit.scope)
    path = directory / unit.unit_name
    if path.exists():
        raise UserError(
            f"service {unit.name} is already installed ({path}); "
            f"remove it first with colinux-daemon --remove-service {unit.name}"
        )
    try:
        directory.mkdir(parents=True, exist_ok=True)
        tmp = directory / f".{unit.unit_name}.{os.getpid()}.tmp"
        tmp.write_text(unit.render())
        try:
            os.link(tmp, path)  # unlike rename, never replaces a unit written meanwhile
        except FileExistsError:
            raise UserError(f"service {unit.name} is already installed ({path})") from None
        finally:
            tmp.unlink(missing_ok=True)
    except PermissionError as e:
        hint = "run as root, or use --user" if unit.scope == "system" else None
        raise UserError(f"cannot write {path}: {e.strerror}", hint=hint) from None
    _systemctl(unit.scope, "daemon-reload", check=False)
    return path


def remove(name: str, scope: Scope) -> Path:
    """Stop, disable and delete the unit of service ``name``."""
    directory = unit_dir(scope)
    unit = unit_name(name)
    path = directory / unit
    if not path.exists():
        other: Scope = "user" if scope == "system" else "system"
        hint = None
        if not os.environ.get("COLINUX_UNIT_DIR") and (unit_dir(other) / unit).exists():
            hint = f"it is a {other} service: add --{other}"
        raise UserError(f"no service {name} is installed ({path} does not exist)", hint=hint)
    _systemctl(scope, "disable", "--now", unit, check=False)
    try:
        path.unlink()
    except PermissionError as e:
        raise UserError(f"cannot remove {path}: {e.strerror}") from None
    # `systemctl enable` links the unit into *.wants/ directories: without a
    # running systemd to disable it, remove those links ourselves.
    with contextlib.suppress(OSError):
        for wants in directory.glob("*.wants"):
            link = wants / unit
            if link.is_symlink():
                link.unlink()
    _systemctl(scope, "daemon-reload", check=False)
    return path


def systemctl_hint(scope: Scope) -> str:
    return "systemctl --user" if scope == "user" else "systemctl"
