"""The guest sees only what the user gave it; the engine runs unprivileged; versions match."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from conftest import Colinux, OrdinaryUser

from colinux.guest.image import build_initramfs

ESCAPES = [
    "/", "/..", "..", "../../..", "../../../etc", "/etc", "/root", "/home", "/proc/1/root",
]  # fmt: skip


def test_hostfs_shows_no_host_file(colinux: Colinux, tmp_path: Path) -> None:
    token = uuid.uuid4().hex
    secret_dir = tmp_path / "secret"
    secret_dir.mkdir()
    (secret_dir / "secret.txt").write_text(token)
    tries = [*ESCAPES, str(secret_dir), f"../../../..{secret_dir}"]
    script = "mkdir -p /m\n" + "".join(
        f"if mount -t hostfs -o '{p}' none /m 2>/dev/null; then echo MOUNTED '{p}'; "
        "find /m -xdev 2>/dev/null | head -500; "
        "find /m -xdev -type f ! -path '/m/proc/*' ! -path '/m/sys/*' ! -path '/m/dev/*' "
        f"-size -2M -exec grep -l {token} {{}} + 2>/dev/null; umount /m; fi\n"
        for p in tries
    )
    result = colinux.run("run", "--", "sh", "-c", script)
    assert result.returncode == 0, result.stderr
    out = result.stdout.decode()
    assert "MOUNTED" in out  # hostfs itself works: the sandbox is what confines it
    assert token not in out
    assert "secret" not in out
    for host_file in ("/etc/passwd", "/etc/shadow", "/root/", "/home/"):
        assert f"/m{host_file}" not in out
    assert (secret_dir / "secret.txt").read_text() == token


def test_tools_of_another_version_are_refused(colinux: Colinux) -> None:
    initrd = colinux.cwd / "old-guest.cpio"
    initrd.write_bytes(build_initramfs(version="0.0.1-other"))
    result = colinux.run("run", f"initrd={initrd}", "--", "echo", "must-not-run")
    assert result.returncode == 2
    assert b"must-not-run" not in result.stdout
    message = result.stderr.decode()
    assert "guest tools version 0.0.1-other do not match colinux" in message
    assert message.count("\n") == 1


@pytest.mark.parametrize(
    ("kernel", "expected"),
    [
        ("/bin/true", "not a User-Mode Linux kernel"),
        ("/etc/hostname", "not a User-Mode Linux executable"),
        ("/no/such/kernel", "does not exist"),
    ],
)
def test_kernel_must_be_uml(colinux: Colinux, kernel: str, expected: str) -> None:
    xml = colinux.cwd / "k.xml"
    xml.write_text(f'<colinux>\n<image path="{kernel}"/>\n</colinux>\n')
    for args, program in [
        (["run", f"kernel={kernel}", "--", "true"], "colinux"),
        (["-c", str(xml)], "colinux-daemon"),
        (["config", "check", str(xml)], "colinux"),  # checked without starting anything
    ]:
        result = colinux.run(*args, program=program)
        message = result.stderr.decode()
        assert result.returncode == 2, message
        assert expected in message
        assert message.count("\n") == 1, message
        assert "Traceback" not in message
        assert not colinux.run_dir.exists() or not list(colinux.run_dir.iterdir())


def test_runs_as_an_ordinary_user(ordinary_user: OrdinaryUser) -> None:
    result = ordinary_user.run("run", "--", "sh", "-c", "id -u; echo ok")
    assert result.returncode == 0, result.stderr
    # root inside the guest, an ordinary user on the host
    assert result.stdout.split() == [b"0", b"ok"]


def test_hostfs_shows_an_ordinary_users_guest_no_host_file(ordinary_user: OrdinaryUser) -> None:
    # The same confinement when the engine runs unprivileged (its own namespaces).
    script = "mkdir -p /m\n" + "".join(
        f"if mount -t hostfs -o '{p}' none /m 2>/dev/null; then echo MOUNTED '{p}'; "
        "find /m -xdev 2>/dev/null | head -500; umount /m; fi\n"
        for p in [*ESCAPES, str(ordinary_user.work), str(ordinary_user.lib)]
    )
    result = ordinary_user.run("run", "--no-share", "--", "sh", "-c", script)
    assert result.returncode == 0, result.stderr
    out = result.stdout.decode()
    assert "MOUNTED /\n" in out
    # The kernel is the one file of the user's the engine sees (it runs it).
    user_files = (str(ordinary_user.work), str(ordinary_user.lib))
    for host_file in ("/etc/passwd", "/root/", "/home/", "/colinux/cli.py", *user_files):
        assert f"/m{host_file}" not in out, out
