"""Network benchmark: TCP throughput both ways (iperf3) and TCP round trips, per backend.

iperf3 and its libraries, from the host's Debian package, reach the default
guest on its cofs share (the directory ``colinux run`` starts in); the
iperf3 servers run on the host. The baseline is iperf3 against itself over
the host's loopback, in the same run.
The round trip is one byte to a ``cat`` behind busybox ``nc`` in the guest
and back, timed on the host (median of 200), through a port redirection for
slirp:

    .venv/bin/python bench/net.py [--seconds 5] [--tap]

Rows: slirp through slirp4netns (when /dev/net/tun is usable) and through
passt; with ``--tap`` (root), tuntap and pcap-bridge in a private network
namespace (a TAP device; a veth pair whose one end the guest bridges onto).
Needs the Debian package iperf3.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

BIN = Path(sys.executable).parent
ECHO_PORT = 7777
READY = "rtt-ready"


def ship_iperf3(tools: Path) -> None:
    """iperf3, its libraries and the dynamic loader, in one directory."""
    tools.mkdir()
    iperf3 = shutil.which("iperf3")
    if iperf3 is None:
        raise SystemExit("bench/net.py needs iperf3 (the Debian package iperf3)")
    shutil.copy(iperf3, tools / "iperf3")
    for line in subprocess.run(["ldd", iperf3], capture_output=True, text=True).stdout.split("\n"):
        match = re.search(r"(/\S+)", line)
        if match:
            shutil.copy(match.group(1), tools / Path(match.group(1)).name)


@contextmanager
def iperf3_server(address: str) -> Iterator[int]:
    """An iperf3 server for one test; its port."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        ["iperf3", "-s", "-1", "-B", address, "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    time.sleep(0.3)
    try:
        yield port
    finally:
        server.kill()
        server.wait()


def receiver_rate(text: str) -> float:
    """Mbit/s at the receiving end, from iperf3 -f m output."""
    match = re.search(r"([\d.]+) Mbits/sec\s+receiver", text)
    return float(match.group(1)) if match else float("nan")


def round_trips(address: str, port: int, count: int = 200) -> float:
    """Median milliseconds of one byte there and back."""
    deadline = time.monotonic() + 20
    while True:  # until the guest's nc listens (a redirection accepts before that)
        try:
            sock = socket.create_connection((address, port), timeout=5)
            sock.sendall(b"x")
            if sock.recv(1) == b"x":
                break
            sock.close()
        except OSError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.2)
    with sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        times = []
        for _ in range(count + 10):
            start = time.perf_counter()
            sock.sendall(b"x")
            if sock.recv(1) != b"x":
                raise SystemExit("echo: connection closed")
            times.append(time.perf_counter() - start)
    return statistics.median(times[10:]) * 1000


def measure(
    server: str, host: str, echo: tuple[str, int], args: list[str], seconds: int, tools: Path,
    env: dict[str, str], setup: str = "",
) -> dict[str, float]:  # fmt: skip
    """One row: guest->host and host->guest Mbit/s, round trip ms.

    The iperf3 servers listen on ``server``, which the guest reaches as
    ``host``; ``echo`` is where the host reaches the guest's echo port."""
    iperf = "./ld-linux-x86-64.so.2 --library-path . ./iperf3"
    with iperf3_server(server) as up, iperf3_server(server) as down:
        script = (
            f"{setup}"
            f"{iperf} -f m -t {seconds} -c {host} -p {up} 2>&1 | grep receiver; "
            f"{iperf} -f m -t {seconds} -R -c {host} -p {down} 2>&1 | grep receiver; "
            f"nc -ll -p {ECHO_PORT} -e cat & echo {READY}; sleep 120"
        )
        run = subprocess.Popen(
            [str(BIN / "colinux"), "run", *args, "--", "sh", "-c", script], cwd=tools,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True,
        )  # fmt: skip
        assert run.stdout is not None
        lines = []
        for line in run.stdout:
            if line.strip() == READY:
                break
            lines.append(line)
        else:
            raise SystemExit(f"guest failed: {run.stderr.read() if run.stderr else ''}"[-600:])
    try:
        rtt = round_trips(*echo)
    finally:
        run.terminate()
        run.wait(60)
    up_rate, down_rate = (receiver_rate(line) for line in [*lines, "", ""][:2])
    return {"up": up_rate, "down": down_rate, "rtt": rtt}


def baseline(seconds: int) -> dict[str, float]:
    with iperf3_server("127.0.0.1") as port:
        out = subprocess.run(
            ["iperf3", "-f", "m", "-t", str(seconds), "-c", "127.0.0.1", "-p", str(port)],
            capture_output=True, text=True,
        ).stdout  # fmt: skip
    rate = receiver_rate(out)
    echo = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = echo.accept()
        with conn:
            while data := conn.recv(1):
                conn.sendall(data)

    threading.Thread(target=serve, daemon=True).start()
    rtt = round_trips("127.0.0.1", echo.getsockname()[1])  # a Python echo: the guest's is cat
    echo.close()
    return {"up": rate, "down": rate, "rtt": rtt}


def slirp_row(stack: str, seconds: int, tools: Path, env: dict[str, str]) -> dict[str, float]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**env, "COLINUX_SLIRP": stack}
    redirect = f"eth0=slirp,,tcp:{port}:{ECHO_PORT}"
    return measure("127.0.0.1", "10.0.2.2", ("127.0.0.1", port), [redirect], seconds, tools, env)


def host_row(kind: str, seconds: int, tools: Path) -> None:
    """Run inside a fresh namespace (see ``in_namespace``): prints the row as JSON."""
    env = dict(os.environ)
    if kind == "tuntap":
        for cmd in (["tuntap", "add", "cobench0", "mode", "tap"],
                    ["addr", "add", "10.79.0.1/24", "dev", "cobench0"]):  # fmt: skip
            subprocess.run(["ip", *cmd], check=True)
        card = 'eth0=tuntap,"cobench0"'
    else:  # pcap-bridge: the guest on one end of a veth pair, the host on the other
        for cmd in (["link", "add", "cobench1", "type", "veth", "peer", "name", "cobench2"],
                    ["link", "set", "cobench2", "up"],
                    ["addr", "add", "10.79.0.1/24", "dev", "cobench2"]):  # fmt: skip
            subprocess.run(["ip", *cmd], check=True)
        card = 'eth0=pcap-bridge,"cobench1"'
    row = measure("10.79.0.1", "10.79.0.1", ("10.79.0.2", ECHO_PORT), [card], seconds, tools,
                  env, setup="ip addr add 10.79.0.2/24 dev eth0; ")  # fmt: skip
    print(json.dumps(row))


def in_namespace(kind: str, seconds: int, tools: Path, env: dict[str, str]) -> dict[str, float]:
    ns = f"cxbench-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"], check=True)
        out = subprocess.run(
            ["ip", "netns", "exec", ns, sys.executable, __file__, "--host-row", kind,
             str(seconds), str(tools)],
            capture_output=True, env=env, timeout=600, text=True,
        )  # fmt: skip
        if out.returncode != 0:
            raise SystemExit(f"{kind} row failed: {out.stderr[-600:]}")
        return dict(json.loads(out.stdout.splitlines()[-1]))
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5, help="iperf3 time each way")
    parser.add_argument("--tap", action="store_true", help="add tuntap and pcap-bridge (root)")
    options = parser.parse_args()
    seconds = options.seconds
    rows: list[tuple[str, dict[str, float]]] = []
    with tempfile.TemporaryDirectory() as tmp:
        tools = Path(tmp) / "tools"
        ship_iperf3(tools)
        os.chmod(tmp, 0o755)
        env = {**os.environ, "COLINUX_RUN_DIR": f"{tmp}/run"}
        rows.append(("host loopback (base)", baseline(seconds)))
        if os.access("/dev/net/tun", os.R_OK | os.W_OK):
            rows.append(("slirp: slirp4netns", slirp_row("slirp4netns", seconds, tools, env)))
        rows.append(("slirp: passt", slirp_row("passt", seconds, tools, env)))
        if options.tap and os.geteuid() == 0:
            rows.append(("tuntap (vector tap)", in_namespace("tuntap", seconds, tools, env)))
            rows.append(("pcap-bridge (raw)", in_namespace("bridge", seconds, tools, env)))
    base = rows[0][1]
    print(f"network benchmark: iperf3 {seconds} s each way (Mbit/s), TCP round trip (ms); "
          "ratios to host loopback")  # fmt: skip
    print(f"{'backend':<22} {'guest->host':>12} {'ratio':>6} {'host->guest':>12} {'ratio':>6} "
          f"{'rtt ms':>7} {'ratio':>6}")  # fmt: skip
    for name, r in rows:
        up, down, rtt = r["up"], r["down"], r["rtt"]
        print(f"{name:<22} {up:12.0f} {up / base['up']:6.2f} {down:12.0f} "
              f"{down / base['down']:6.2f} {rtt:7.3f} {rtt / base['rtt']:6.1f}")  # fmt: skip


if __name__ == "__main__":
    if sys.argv[1:2] == ["--host-row"]:
        host_row(sys.argv[2], int(sys.argv[3]), Path(sys.argv[4]))
    else:
        main()
