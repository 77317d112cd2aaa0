"""Guests as systemd services: unit files checked by systemd-analyze, the readiness protocol.

These machines have no systemd as PID 1, so units are written to a private
directory (COLINUX_UNIT_DIR) and verified with ``systemd-analyze verify``, and
``--run-service`` runs directly under a test NOTIFY_SOCKET.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import Colinux, reaped

GUEST_XML = '<colinux>\n    <memory size="64"></memory>\n</colinux>\n'

needs_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze (Debian package systemd)"
)


@pytest.fixture
def units(colinux: Colinux, tmp_path: Path) -> Path:
    directory = tmp_path / "units"
    colinux.env["COLINUX_UNIT_DIR"] = str(directory)
    (colinux.cwd / "web.xml").write_text(GUEST_XML)
    return directory


def install(colinux: Colinux, *args: str) -> subprocess.CompletedProcess[bytes]:
    return colinux.run("--install-service", *args, program="colinux-daemon")


def verify(unit: Path, *, user: bool, tmp_path: Path) -> None:
    runtime = tmp_path / "xdg"
    runtime.mkdir(mode=0o700, exist_ok=True)
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime)}
    argv = ["systemd-analyze", *(["--user"] if user else []), "verify", str(unit)]
    result = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    assert unit.name not in result.stderr, result.stderr  # no warning about our unit


@needs_analyze
def test_system_unit_verifies(colinux: Colinux, units: Path, tmp_path: Path) -> None:
    result = install(colinux, "web", "-c", "web.xml", "--system")
    assert result.returncode == 0, result.stderr
    out = result.stdout.decode()
    unit = units / "colinux-web.service"
    assert f"installed system service colinux-web.service ({unit})" in out
    assert "systemctl enable colinux-web.service" in out
    text = unit.read_text()
    config = colinux.cwd / "web.xml"
    assert f"--run-service web -c {config}" in text  # the XML's absolute path
    assert f"WorkingDirectory={colinux.cwd}" in text
    for line in (
        "Type=notify", "Restart=on-failure", "RestartPreventExitStatus=2",
        "WantedBy=multi-user.target",
    ):  # fmt: skip
        assert line in text.splitlines()
    verify(unit, user=False, tmp_path=tmp_path)


@needs_analyze
def test_user_unit_with_awkward_paths_verifies(
    colinux: Colinux, units: Path, tmp_path: Path
) -> None:
    odd = colinux.cwd / "my guests %i $HOME"
    odd.mkdir()
    (odd / "web 1.xml").write_text(GUEST_XML)
    result = colinux.run(
        "--install-service", "-c", "web 1.xml", "--user", "--drive", f"c={odd}",
        program="colinux-daemon", cwd=odd,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    unit = units / "colinux-colinux.service"  # the default name
    text = unit.read_text()
    assert "WantedBy=default.target" in text
    assert "%%i $$HOME/web 1.xml" in text  # specifiers and variables escaped
    assert '--drive "C=' in text
    verify(unit, user=True, tmp_path=tmp_path)


def test_drive_maps_from_the_environment_are_stored(colinux: Colinux, units: Path) -> None:
    colinux.env["COLINUX_DRIVE_D"] = str(colinux.cwd)
    assert install(colinux, "web", "-c", "web.xml").returncode == 0
    assert f"--drive D={colinux.cwd}" in (units / "colinux-web.service").read_text()


def test_daemon_switches_are_stored(colinux: Colinux, units: Path) -> None:
    result = install(colinux, "web", "-c", "web.xml", "-k", "-p", "web.pid", "--debug-collector")
    assert result.returncode == 0, result.stderr
    text = (units / "colinux-web.service").read_text()
    assert f" -k -p {colinux.cwd / 'web.pid'} --debug-collector\n" in text


def test_install_twice_remove_and_remove_again(colinux: Colinux, units: Path) -> None:
    assert install(colinux, "web", "-c", "web.xml").returncode == 0
    unit = units / "colinux-web.service"
    before = unit.read_text()
    again = install(colinux, "web", "-c", "web.xml", "-k")
    assert again.returncode == 2
    assert b"already installed" in again.stderr
    assert unit.read_text() == before
    # As `systemctl enable` would have left it:
    (units / "multi-user.target.wants").mkdir()
    (units / "multi-user.target.wants" / unit.name).symlink_to(unit)
    removed = colinux.run("--remove-service", "web", program="colinux-daemon")
    assert removed.returncode == 0, removed.stderr
    assert b"removed system service colinux-web.service" in removed.stdout
    assert sorted(p.name for p in units.rglob("*")) == ["multi-user.target.wants"]
    missing = colinux.run("--remove-service", "web", program="colinux-daemon")
    assert missing.returncode == 2
    assert b"no service web is installed" in missing.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("web", "-c", "missing.xml"), b"missing.xml"),
        (("web", "-c", "bad.xml"), b"bad.xml"),
        (("web",), b"add -c my.colinux.xml"),
        (("web", "-c", "web.xml", "mem=64"), b"mem=64: a service takes its settings"),
        (("bad/name", "-c", "web.xml"), b"guest name"),
        (("web", "-c", "web.xml", "--run-service", "x"), b"cannot be combined"),
        (("web", "-c", "web.xml", "--user", "--system"), b"--user and --system cannot be"),
        (("web", "-c", "web.xml", "-p", "/nonexistent/web.pid"), b"does not exist"),
    ],
)
def test_install_refuses_bad_input_and_writes_nothing(
    colinux: Colinux, units: Path, args: tuple[str, ...], message: bytes
) -> None:
    (colinux.cwd / "bad.xml").write_text("<colinux><memory size='lots'/></colinux>")
    result = install(colinux, *args)
    assert result.returncode == 2, result
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not units.exists() or list(units.iterdir()) == []


def test_scope_switches_need_a_service_action(colinux: Colinux, units: Path) -> None:
    result = colinux.run("--user", "-c", "web.xml", program="colinux-daemon")
    assert result.returncode == 2
    assert b"--user goes with --install-service" in result.stderr


def test_run_service_tells_systemd_ready_and_stopping(colinux: Colinux, units: Path) -> None:
    """What systemd sees of `systemctl start` and `systemctl stop` (SIGTERM)."""
    path = str(colinux.cwd / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.settimeout(30)
        colinux.env["NOTIFY_SOCKET"] = path
        colinux.env["WATCHDOG_USEC"] = "1000000"  # WatchdogSec=1: a ping every 0.5 s
        daemon = colinux.popen(
            "--run-service", "web", "-c", "web.xml", program="colinux-daemon",
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        with reaped(daemon):
            messages: list[str] = []
            while "READY=1" not in messages:
                messages += sock.recv(4096).decode().splitlines()
            assert "STATUS=guest web is running" in messages
            assert "WATCHDOG=1" in messages  # the watchdog is answered from the start
            # The service's guest is an ordinary named guest.
            del colinux.env["NOTIFY_SOCKET"]
            listed = colinux.run("list").stdout.decode().splitlines()
            assert listed[1].split()[:2] == ["web", "running"]
            daemon.send_signal(signal.SIGTERM)
            while "STOPPING=1" not in messages:
                messages += sock.recv(4096).decode().splitlines()
            _, err = daemon.communicate(timeout=30)
            assert daemon.returncode == 0, err  # a clean stop: no restart on failure


@pytest.mark.skipif(os.getuid() != 0, reason="root's run directory")
def test_root_guests_share_one_run_directory(colinux: Colinux) -> None:
    """A system unit (no XDG_RUNTIME_DIR) and a root login shell (with one) see one
    run directory, so `colinux list` in the shell shows the services' guests."""
    code = "from colinux.control.rundir import base_dir; print(base_dir())"
    seen = set()
    for runtime in (None, str(colinux.cwd)):
        env = {k: v for k, v in colinux.env.items() if k != "COLINUX_RUN_DIR"}
        env.pop("XDG_RUNTIME_DIR", None)
        if runtime:
            env["XDG_RUNTIME_DIR"] = runtime
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
        seen.add(out.stdout.strip())
    assert seen == {"/run/colinux"}
