"""tuntap and pcap-bridge cards on networks the test builds itself (root only).

Each test makes network namespaces and veth pairs of its own, runs colinux
inside one of them and removes everything afterwards. No address outside
this machine is ever used.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest
from conftest import BIN, Colinux, wait_until

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the host's network needs root")


def ip(*args: str, netns: str | None = None) -> None:
    prefix = ["ip", "netns", "exec", netns] if netns else []
    subprocess.run([*prefix, "ip", *args], check=True, capture_output=True)


class Namespaces:
    """Network namespaces made for one test, deleted after it."""

    def __init__(self) -> None:
        self.made: list[str] = []

    def make(self) -> str:
        name = f"cx-{uuid.uuid4().hex[:8]}"
        subprocess.run(["ip", "netns", "add", name], check=True)
        self.made.append(name)
        ip("link", "set", "lo", "up", netns=name)
        return name


@pytest.fixture
def netns() -> Iterator[Namespaces]:
    namespaces = Namespaces()
    yield namespaces
    for name in namespaces.made:
        subprocess.run(["ip", "netns", "del", name], check=False)


# An HTTP server for one namespace: GET sends SIZE random bytes, POST answers
# the md5 of the body. It prints the md5 of what it sends, then serves.
SERVER = """
import hashlib, http.server, os, sys
blob = os.urandom(int(sys.argv[3]))
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", str(len(blob)))
        self.end_headers()
        self.wfile.write(blob)
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.end_headers()
        self.wfile.write(hashlib.md5(body).hexdigest().encode())
    def log_message(self, *args):
        pass
server = http.server.HTTPServer((sys.argv[1], int(sys.argv[2])), Handler)
print(hashlib.md5(blob).hexdigest(), flush=True)
server.serve_forever()
"""
BULK = 8 << 20


class BulkServer:
    """SERVER running in a namespace, stopped by the test's fixture."""

    def __init__(self, namespace: str, address: str) -> None:
        self.process = subprocess.Popen(
            ["ip", "netns", "exec", namespace, sys.executable, "-c", SERVER, address, "8000",
             str(BULK)],
            stdout=subprocess.PIPE,
        )  # fmt: skip
        assert self.process.stdout is not None
        self.md5 = self.process.stdout.readline().decode().strip()
        self.url = f"http://{address}:8000/"

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()


@pytest.fixture
def servers() -> Iterator[list[BulkServer]]:
    started: list[BulkServer] = []
    yield started
    for server in started:
        server.stop()


def bulk_script(address: str, server: BulkServer) -> str:
    """Guest commands that set ``address``, then move BULK bytes each way and
    print both md5s as the guest sees them, then the server's md5 of the upload."""
    return (
        f"ip addr add {address} dev eth0 && "
        f"wget -q -O /tmp/down {server.url} && md5sum /tmp/down | cut -c1-32 && "
        # base64: busybox wget posts the file as a C string, so no NUL bytes
        f"head -c {BULK} /dev/urandom | base64 > /tmp/up && md5sum /tmp/up | cut -c1-32 && "
        f"wget -q -O - --post-file=/tmp/up {server.url}"
    )


def check_bulk(result: subprocess.CompletedProcess[bytes], server: BulkServer) -> None:
    assert result.returncode == 0, result.stderr
    down, up, up_at_server = result.stdout.decode().split()
    assert down == server.md5  # host -> guest, 64 KB segments from the host's TSO/GRO
    assert up == up_at_server  # guest -> host


def colinux_in(colinux: Colinux, namespace: str, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["ip", "netns", "exec", namespace, str(BIN / "colinux"), *args],
        capture_output=True, timeout=60, env=colinux.env, cwd=colinux.cwd,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip


def test_tuntap_guest_and_host_ping_each_other(colinux: Colinux, netns: Namespaces) -> None:
    host = netns.make()
    # An admin-made TAP device with the host's address on it.
    ip("tuntap", "add", "dev", "cotest0", "mode", "tap", netns=host)
    ip("addr", "add", "10.77.0.1/24", "dev", "cotest0", netns=host)
    script = "ip addr add 10.77.0.2/24 dev eth0 && ping -c 2 -W 5 10.77.0.1 >/dev/null && echo pong"
    result = colinux_in(colinux, host, "run", "--no-share", 'eth0=tuntap,"cotest0"', "--",
                        "sh", "-c", script)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"pong\n"
    # The device was the admin's: it is still there.
    ip("link", "show", "cotest0", netns=host)


def test_tuntap_device_is_made_and_removed(colinux: Colinux, netns: Namespaces) -> None:
    host = netns.make()
    result = colinux_in(colinux, host, "run", "--no-share", "eth0=tuntap,cotmp7", "--",
                        "sh", "-c", "cat /sys/class/net/eth0/operstate")  # fmt: skip
    assert result.returncode == 0, result.stderr
    gone = subprocess.run(["ip", "netns", "exec", host, "ip", "link", "show", "cotmp7"],
                          capture_output=True)  # fmt: skip
    assert gone.returncode != 0


def test_tuntap_device_made_by_a_killed_daemon_is_removed(
    colinux: Colinux, netns: Namespaces
) -> None:
    host = netns.make()
    daemon = subprocess.Popen(
        ["ip", "netns", "exec", host, str(BIN / "colinux-daemon"), "-d", "--name", "tapk",
         "eth0=tuntap,cokill3"],
        env=colinux.env, cwd=colinux.cwd, stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip

    def tap_exists() -> bool:
        shown = subprocess.run(["ip", "netns", "exec", host, "ip", "link", "show", "cokill3"],
                               capture_output=True)  # fmt: skip
        return shown.returncode == 0

    try:
        assert wait_until(tap_exists)
        assert wait_until(lambda: b"tapk" in colinux.run("list").stdout)
    finally:
        daemon.kill()
        daemon.wait()
    # No daemon is left to clean up: its reaper removes the device.
    assert wait_until(lambda: not tap_exists(), 15)
    assert b"tapk" not in colinux.run("list").stdout  # which sweeps the dead run directory


def test_tuntap_bulk_tcp_both_ways(
    colinux: Colinux, netns: Namespaces, servers: list[BulkServer]
) -> None:
    host = netns.make()
    ip("tuntap", "add", "dev", "cotest2", "mode", "tap", netns=host)
    ip("addr", "add", "10.77.1.1/24", "dev", "cotest2", netns=host)
    ip("link", "set", "cotest2", "up", netns=host)
    servers.append(server := BulkServer(host, "10.77.1.1"))
    result = colinux_in(colinux, host, "run", "--no-share", 'eth0=tuntap,"cotest2"', "--",
                        "sh", "-c", bulk_script("10.77.1.2/24", server))  # fmt: skip
    check_bulk(result, server)


def test_pcap_bridge_bulk_tcp_both_ways(
    colinux: Colinux, netns: Namespaces, servers: list[BulkServer]
) -> None:
    host, peer = netns.make(), netns.make()
    ip("link", "add", "vhost1", "type", "veth", "peer", "name", "vpeer1", netns=host)
    ip("link", "set", "vpeer1", "netns", peer, netns=host)
    ip("addr", "add", "10.78.1.1/24", "dev", "vpeer1", netns=peer)
    ip("link", "set", "vpeer1", "up", netns=peer)
    servers.append(server := BulkServer(peer, "10.78.1.1"))
    result = colinux_in(colinux, host, "run", "--no-share", 'eth0=pcap-bridge,"vhost1"', "--",
                        "sh", "-c", bulk_script("10.78.1.2/24", server))  # fmt: skip
    check_bulk(result, server)


def test_pcap_bridge_puts_the_guest_on_the_segment(colinux: Colinux, netns: Namespaces) -> None:
    host, peer = netns.make(), netns.make()
    ip("link", "add", "vhost0", "type", "veth", "peer", "name", "vpeer0", netns=host)
    ip("link", "set", "vpeer0", "netns", peer, netns=host)
    ip("addr", "add", "10.78.0.1/24", "dev", "vpeer0", netns=peer)
    ip("link", "set", "vpeer0", "up", netns=peer)
    script = (
        "ip addr add 10.78.0.2/24 dev eth0 && ping -c 2 -W 5 10.78.0.1 >/dev/null && "
        "cat /sys/class/net/eth0/address"
    )
    result = colinux_in(colinux, host, "run", "--no-share", "--name", "bridged",
                        'eth0=pcap-bridge,"vhost0"', "--", "sh", "-c", script)  # fmt: skip
    assert result.returncode == 0, result.stderr
    mac = result.stdout.decode().strip()
    # The peer learned the guest's own MAC: they shared the layer-2 segment.
    neigh = subprocess.run(["ip", "netns", "exec", peer, "ip", "neigh", "show", "10.78.0.2"],
                           capture_output=True)  # fmt: skip
    assert mac in neigh.stdout.decode()


def test_slirp_and_tuntap_cards_in_one_guest(
    colinux: Colinux, netns: Namespaces, servers: list[BulkServer]
) -> None:
    # With a host card the engine stays in the host's network, so passt serves slirp.
    host = netns.make()
    # passt wants a default route to copy; this one leads nowhere.
    ip("link", "add", "coveth3", "type", "veth", "peer", "name", "coveth4", netns=host)
    ip("link", "set", "coveth3", "up", netns=host)
    ip("addr", "add", "10.77.4.1/24", "dev", "coveth3", netns=host)
    ip("route", "add", "default", "via", "10.77.4.254", netns=host)
    ip("tuntap", "add", "dev", "cotest3", "mode", "tap", netns=host)
    ip("addr", "add", "10.77.3.1/24", "dev", "cotest3", netns=host)
    servers.append(server := BulkServer(host, "127.0.0.1"))
    script = (
        "ip addr add 10.77.3.2/24 dev eth1 && ping -c 2 -W 5 10.77.3.1 >/dev/null && "
        "wget -q -O - http://10.0.2.2:8000/ | md5sum | cut -c1-32"
    )
    result = colinux_in(colinux, host, "run", "--no-share", "eth0=slirp", 'eth1=tuntap,"cotest3"',
                        "--", "sh", "-c", script)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().strip() == server.md5


def test_slirp4netns_and_host_cards_do_not_mix(colinux: Colinux) -> None:
    colinux.env["COLINUX_SLIRP"] = "slirp4netns"
    result = colinux.run("run", "eth1=tuntap,cotest1", "--", "true")
    assert result.returncode == 2
    assert result.stderr.count(b"\n") == 1 and b"use passt" in result.stderr, result.stderr


def test_an_early_sigterm_leaves_nothing_behind(colinux: Colinux, netns: Namespaces) -> None:
    # SIGTERM the moment the TAP device exists: the backends have started, the
    # engine barely, the daemon's own signal handling not yet. The fixture
    # then checks that no process, run directory entry or device is left.
    host = netns.make()
    daemon = subprocess.Popen(
        ["ip", "netns", "exec", host, str(BIN / "colinux-daemon"), "-d", "--name", "early",
         "eth0=tuntap,coearly1"],
        env=colinux.env, cwd=colinux.cwd, stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip

    def tap_exists() -> bool:
        shown = subprocess.run(["ip", "netns", "exec", host, "ip", "link", "show", "coearly1"],
                               capture_output=True)  # fmt: skip
        return shown.returncode == 0

    try:
        assert wait_until(tap_exists, interval=0.005)
        daemon.send_signal(signal.SIGTERM)
        _, err = daemon.communicate(timeout=30)
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
    assert daemon.returncode in (0, 143), err
    assert b"Traceback" not in err, err
    assert not tap_exists()
