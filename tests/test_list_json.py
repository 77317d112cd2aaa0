"""`colinux list --json`: one document of the running guests, its keys as the README says."""

from __future__ import annotations

import json
import socket
import subprocess

from conftest import Colinux

GUEST_KEYS = {
    "name", "state", "pid", "engine_pid", "memory_mb", "resident_mb", "cpus", "userspace",
    "uptime_seconds", "started", "source", "kernel", "agent", "exec", "exec_sessions",
    "serials", "shares", "cards", "disks", "daemon_version",
}  # fmt: skip


def document(colinux: Colinux, *args: str) -> dict[str, object]:
    result = colinux.run("list", *args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_no_guests_is_an_empty_list(colinux: Colinux) -> None:
    assert document(colinux) == {"schema": 1, "guests": []}


def test_a_guest_described_for_scripts(colinux: Colinux) -> None:
    share = colinux.cwd / "share"
    share.mkdir()
    disk = colinux.cwd / "disk.img"
    subprocess.run(["mke2fs", "-q", "-t", "ext4", str(disk), "8M"], check=True)
    port = free_port()
    result = colinux.run(
        "start", "web", "mem=96", f"cofs0={share},meta,ro", f"cobd1={disk},ro",
        f"eth0=slirp,00:ff:01:02:03:04,tcp:{port}:22", "ttys0=daemon",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    try:
        assert colinux.run("exec", "web", "--", "true").returncode == 0  # the agent is up
        everything = document(colinux)
        assert everything["schema"] == 1
        one = document(colinux, "web")
        assert [g["name"] for g in one["guests"]] == ["web"]  # type: ignore[attr-defined]
        (guest,) = everything["guests"]  # type: ignore[misc]
        assert set(guest) == GUEST_KEYS
        assert guest["name"] == "web" and guest["state"] == "running"
        assert isinstance(guest["pid"], int) and isinstance(guest["engine_pid"], int)
        assert guest["memory_mb"] == 96 and guest["cpus"] == 1
        assert isinstance(guest["resident_mb"], float) and guest["resident_mb"] > 0
        assert 0 <= guest["uptime_seconds"] < 120
        assert guest["source"] == "default guest"  # a file with -c FILE
        assert guest["exec"] is True and guest["exec_sessions"] == 0
        assert guest["serials"] == [0]
        assert guest["shares"] == [
            {"index": 0, "path": str(share), "type": "meta", "readonly": True}
        ]
        assert guest["disks"] == [
            {"index": 1, "path": str(disk), "alias": None, "readonly": True, "cow": None}
        ]
        assert guest["cards"] == [
            {
                "index": 0, "type": "slirp", "mac": "00:ff:01:02:03:04", "host": None,
                "ports": [{"protocol": "tcp", "address": "127.0.0.1", "host_port": port,
                           "guest_port": 22, "count": 1}],
            }
        ]  # fmt: skip
        table = colinux.run("list", "web").stdout.decode().splitlines()
        assert [row.split()[0] for row in table] == ["NAME", "web"]
    finally:
        assert colinux.run("stop", "web").returncode == 0


def test_listing_a_guest_that_is_not_running(colinux: Colinux) -> None:
    result = colinux.run("list", "nosuch", "--json")
    assert result.returncode == 2
    assert result.stderr.decode().count("\n") == 1 and "nosuch" in result.stderr.decode()
