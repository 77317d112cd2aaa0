"""Network benchmark: TCP throughput both ways and round-trip time, per backend.

The guest uses busybox (wget, nc, ping); the host end is Python on loopback,
timing from its side. The baseline is the same Python sink and source
talking to each other over the host's loopback, measured in the same run:

    .venv/bin/python bench/net.py [--mb 64]

Rows: slirp (no root), and tuntap when run as root (a private network
namespace with a TAP device).
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

BIN = Path(sys.executable).parent
CHUNK = b"\0" * (1 << 16)


class OneConnection:
    """A loopback-side server for one connection, timed from the host's side."""

    def __init__(self, host: str, size: int) -> None:
        self.size = size
        self.sock = socket.create_server((host, 0))
        self.port = self.sock.getsockname()[1]
        self.rate = 0.0  # Mbit/s
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.sock.accept()
        with conn:
            self._run(conn)
        self.sock.close()

    def _run(self, conn: socket.socket) -> None:
        raise NotImplementedError


class Sink(OneConnection):
    """Takes one HTTP POST of ``size`` bytes (timed from its first body byte)."""

    def _run(self, conn: socket.socket) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            data += conn.recv(65536)
        body = data.split(b"\r\n\r\n", 1)[1]
        start = time.perf_counter()
        got = len(body)
        while got < self.size:
            chunk = conn.recv(1 << 20)
            if not chunk:
                break
            got += len(chunk)
        self.rate = got * 8 / (time.perf_counter() - start) / 1e6
        conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n")


class Source(OneConnection):
    """Serves ``size`` bytes as one HTTP response to one request."""

    def _run(self, conn: socket.socket) -> None:
        conn.recv(65536)
        conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % self.size)
        start = time.perf_counter()
        sent = 0
        while sent < self.size:
            conn.sendall(CHUNK)
            sent += len(CHUNK)
        conn.shutdown(socket.SHUT_WR)
        conn.recv(1)  # the client has read it all
        self.rate = sent * 8 / (time.perf_counter() - start) / 1e6


def baseline(size: int) -> tuple[float, float]:
    sink = Sink("127.0.0.1", size)
    with socket.create_connection(("127.0.0.1", sink.port)) as c:
        c.sendall(b"POST / HTTP/1.0\r\nContent-Length: %d\r\n\r\n" % size)
        for _ in range(size // len(CHUNK)):
            c.sendall(CHUNK)
        c.recv(1024)
    sink.thread.join()
    source = Source("127.0.0.1", size)
    with socket.create_connection(("127.0.0.1", source.port)) as c:
        c.sendall(b"GET / HTTP/1.0\r\n\r\n")
        while c.recv(1 << 20):
            pass
    source.thread.join()
    return sink.rate, source.rate


def guest_run(prefix: list[str], args: list[str], script: str, env: dict[str, str]) -> str:
    result = subprocess.run(
        [*prefix, str(BIN / "colinux"), "run", "--no-share", *args, "--", "sh", "-c", script],
        capture_output=True, env=env, timeout=600,
    )  # fmt: skip
    if result.returncode != 0:
        raise SystemExit(f"guest failed: {result.stderr.decode()[-400:]}")
    return result.stdout.decode()


def measure(
    name: str, host_addr: str, guest_host: str, prefix: list[str], args: list[str], size: int,
    env: dict[str, str], setup: str = "",
) -> tuple[str, float, float, float]:  # fmt: skip
    sink = Sink(host_addr, size)
    source = Source(host_addr, size)
    script = (
        f"{setup}"
        # wget, not busybox nc: nc's 1 KB writes cost more guest CPU than the network.
        # The file is text because busybox wget posts a C string.
        f"head -c {size} /dev/zero | tr '\\0' a > /tmp/up; "
        f"wget -q -O /dev/null --post-file=/tmp/up http://{guest_host}:{sink.port}/; "
        f"wget -q -O /dev/null http://{guest_host}:{source.port}/; "
        f"ping -c 10 -q {guest_host} | tail -1"
    )
    out = guest_run(prefix, args, script, env)
    sink.thread.join(60)
    source.thread.join(60)
    rtt = re.search(r"= [\d.]+/([\d.]+)/", out)
    return name, sink.rate, source.rate, float(rtt.group(1)) if rtt else float("nan")


def with_tap_namespace(run: Callable[[str], tuple[str, float, float, float]]) -> tuple:  # type: ignore[type-arg]
    ns = f"cxbench-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        for cmd in (["link", "set", "lo", "up"], ["tuntap", "add", "cobench0", "mode", "tap"],
                    ["addr", "add", "10.79.0.1/24", "dev", "cobench0"]):  # fmt: skip
            subprocess.run(["ip", "netns", "exec", ns, "ip", *cmd], check=True)
        return run(ns)
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=64, help="megabytes each way")
    parser.add_argument("--tap", action="store_true", help="add the tuntap row (root)")
    options = parser.parse_args()
    size = options.mb << 20
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "COLINUX_RUN_DIR": f"{tmp}/run"}
        base_up, base_down = baseline(size)
        rows = [measure("slirp (slirp4netns)", "127.0.0.1", "10.0.2.2", [], [], size, env)]
        if options.tap and os.geteuid() == 0:

            def tap(ns: str) -> tuple[str, float, float, float]:
                # The host end must live in the namespace too: run it there.
                return tap_in_namespace(ns, size, env)

            rows.append(with_tap_namespace(tap))
    print(f"network benchmark: {size >> 20} MB each way; Mbit/s and ms; ratio to host loopback")
    print(f"{'backend':<22} {'guest->host':>12} {'ratio':>6} {'host->guest':>12} {'ratio':>6} "
          f"{'rtt ms':>7}")  # fmt: skip
    print(f"{'host loopback (base)':<22} {base_up:12.0f} {1:6.2f} {base_down:12.0f} {1:6.2f} "
          f"{'':>7}")  # fmt: skip
    for name, up, down, rtt in rows:
        print(f"{name:<22} {up:12.0f} {up / base_up:6.2f} {down:12.0f} {down / base_down:6.2f} "
              f"{rtt:7.3f}")  # fmt: skip


def tap_in_namespace(ns: str, size: int, env: dict[str, str]) -> tuple[str, float, float, float]:
    """The tuntap row: this script re-runs itself inside the namespace as the host end."""
    out = subprocess.run(
        ["ip", "netns", "exec", ns, sys.executable, __file__, "--tap-row", str(size)],
        capture_output=True, env=env, timeout=600, text=True,
    )  # fmt: skip
    if out.returncode != 0:
        raise SystemExit(f"tap row failed: {out.stderr[-400:]}")
    up, down, rtt = (float(x) for x in out.stdout.split())
    return "tuntap (vector tap)", up, down, rtt


def tap_row(size: int) -> None:
    env = dict(os.environ)
    _, up, down, rtt = measure(
        "tap", "10.79.0.1", "10.79.0.1", [], ['eth0=tuntap,"cobench0"'],
        size, env, setup="ip addr add 10.79.0.2/24 dev eth0; ",
    )  # fmt: skip
    print(up, down, rtt)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--tap-row"]:
        tap_row(int(sys.argv[2]))
    else:
        main()
