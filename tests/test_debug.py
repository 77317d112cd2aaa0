"""The debug collector: off by default, structured records from every part, filters, XML."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from conftest import Colinux, reaped, wait_until
from test_daemon import Terminal, start

from colinux.control.debug import (
    DebugCollector,
    Filter,
    Record,
    parse_facility_levels,
    record_from_kmsg,
)


def status(colinux: Colinux, name: str) -> dict[str, object]:
    """The daemon's status reply, through the client library in a process of the test's env."""
    code = (
        "import json; from colinux.console.client import request; "
        f"print(json.dumps(request({name!r}, {{'op': 'status'}})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=colinux.env, capture_output=True, check=True
    )
    return dict(json.loads(out.stdout))


def test_follow_filters_components_and_includes_kernel_messages(
    colinux: Colinux, tmp_path: Path
) -> None:
    start(colinux, "dbg")
    assert status(colinux, "dbg")["debug"] is False  # off by default
    log = tmp_path / "hub.log"
    follower = colinux.popen(
        "debug", "dbg", "--component", "hub", "-f", str(log),
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    with reaped(follower):
        # The follower switches the collector on once it is connected.
        assert wait_until(lambda: status(colinux, "dbg")["collecting"] is True, 20)
        console = Terminal(colinux, "console", "dbg")
        console.read_until(b"dbg:/root# ")
        console.type(b"\x1d")
        assert console.close() == 0
        assert wait_until(lambda: log.exists() and "client detached" in log.read_text(), 10)
        follower.send_signal(signal.SIGINT)
        assert follower.wait(10) == 0
    lines = log.read_text().splitlines()
    assert lines and all(" hub/pipe[5] " in line for line in lines), lines
    assert any("client attached" in line for line in lines)
    # The follower has gone: the collector is off again.
    assert wait_until(lambda: status(colinux, "dbg")["collecting"] is False, 10)

    # What was collected, as the original's -p XML: kernel messages included.
    dump = colinux.run("debug", "dbg", "--no-follow", "-p", "-s", "prints=15")
    assert dump.returncode == 0, dump.stderr
    root = ET.fromstring(dump.stdout)
    records = root.findall("record")
    assert records and {r.get("facility") for r in records} == {"prints"}
    assert any((r.text or "").startswith("Linux version") for r in records)
    # No driver error on a clean boot (UML's ubd0 and mmapper defaults are switched off).
    texts = [r.text or "" for r in records]
    assert not [t for t in texts if "ubd device 0" in t or "find_iomem failed" in t], texts
    for attr in ("timestamp", "module", "file", "function", "facility", "line", "level"):
        assert records[0].get(attr) is not None

    # `colinux debug NAME | head -1`: a reader that goes away ends the follower quietly.
    piped = colinux.popen(
        "debug", "dbg", stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    with reaped(piped):
        assert piped.stdout is not None and piped.stdout.readline()
        piped.stdout.close()
        for _ in range(3):  # new records to write: console clients come and go
            client = Terminal(colinux, "console", "dbg", "--no-replay")
            client.type(b"\x1d")
            assert client.close() == 0
            if piped.poll() is not None:
                break
        assert piped.wait(20) == 128 + signal.SIGPIPE
        assert piped.stderr is not None and piped.stderr.read() == b""
    assert colinux.run("stop", "dbg").returncode == 0


def test_collector_on_from_the_start_and_off_at_run_time(colinux: Colinux, tmp_path: Path) -> None:
    share = tmp_path / "share"
    share.mkdir()
    disk = tmp_path / "disk.img"
    disk.write_bytes(b"\0" * 1024 * 1024)
    start(
        colinux, "on", "--debug-collector", f"cofs0={share}", "colinux.cofs=0:/mnt/share",
        f"cobd0={disk}",
    )  # fmt: skip
    assert status(colinux, "on")["debug"] is True
    dump = colinux.run("debug", "on", "--no-follow", "--component", "daemon")
    assert b"daemon/misc[5] engine started pid=" in dump.stdout
    # Every component's start is recorded, under its own facility, one line each
    # (the engine's command line holds newlines).
    everything: list[str] = []
    seen: set[str] = set()

    def collected() -> bool:
        everything[:] = colinux.run("debug", "on", "--no-follow").stdout.decode().splitlines()
        seen.update(line.split()[1].partition("[")[0] for line in everything)
        return "guest/prints" in seen  # the kernel's messages come as it boots

    assert wait_until(collected, 20)
    for component in (
        "daemon/misc", "engine/context_switch", "cofs/filesystem", "net/network",
        "image/blockdev", "guest/prints",
    ):  # fmt: skip
        assert component in seen, (component, seen)
    assert any(f"share=cofs0 path={share} mode=flat" in line for line in everything)
    assert any(f"disks=cobd0={disk}" in line for line in everything)
    # The cofs server follows each request (the default guest mounts cofs0 as it boots,
    # as colinux.cofs= asks).
    requests: list[str] = []

    def mounted() -> bool:
        dump = colinux.run("debug", "on", "--no-follow", "--component", "cofs").stdout.decode()
        requests[:] = [line for line in dump.splitlines() if "filesystem[10] INIT ok" in line]
        return bool(requests)

    assert wait_until(mounted, 20)
    assert "opcode=INIT" in requests[0] and " us=" in requests[0], requests
    assert all(line[:2].isdigit() for line in everything), everything

    # A follower ended by SIGTERM, as one ended by Ctrl-C, closes its XML dump.
    xml_file = tmp_path / "dbg.xml"
    follower = colinux.popen(
        "-a", "on", "-p", "-f", str(xml_file), program="colinux-debug-daemon",
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    with reaped(follower):
        assert wait_until(lambda: xml_file.exists() and "<record " in xml_file.read_text(), 20)
        follower.send_signal(signal.SIGTERM)
        assert follower.wait(10) == 0
    assert ET.parse(xml_file).getroot().findall("record")
    off = colinux.run("debug", "on", "--off")
    assert off.stdout == b"debug collector of on: off\n"
    assert status(colinux, "on")["debug"] is False
    again = colinux.run("debug", "on", "--on")  # at run time, with no one following
    assert again.stdout == b"debug collector of on: on\n"
    assert status(colinux, "on")["collecting"] is True
    # colinux-debug-daemon finds the only guest by itself.
    compat = colinux.run("--help", program="colinux-debug-daemon")
    assert compat.returncode == 0 and b"-s F=L" in compat.stdout
    assert colinux.run("stop", "on").returncode == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("debug", "x", "-s", "bogus=3"), b"unknown facility 'bogus'"),
        (("debug", "x", "-s", "misc=99"), b"expected FACILITY=LEVEL with LEVEL 0..15"),
        (("debug", "x", "--component", "gpu"), b"unknown component 'gpu'"),
        (("debug", "x", "--level", "16"), b"--level 16: expected 0..15"),
        (("debug", "nobody"), b"no running guest named 'nobody'"),
        (("debug", "nobody", "-f", "out.log"), b"no running guest named 'nobody'"),
        (("debug", "x", "--on", "-s", "misc=3"), b"they take no filter or output"),
        (("debug", "x", "--off", "-f", "out.log"), b"they take no filter or output"),
    ],
)
def test_bad_debug_options(colinux: Colinux, args: tuple[str, ...], message: bytes) -> None:
    result = colinux.run(*args)
    assert result.returncode == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (colinux.cwd / "out.log").exists()  # nothing written


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), b"name the guest with -a NAME (running: none)"),
        (("-a", "x", "-n", "host:port"), b"-n host:port: expected HOST or HOST:PORT"),
        (("-x",), b"unknown option -x"),
        (("-a", "x", "-f", "f.log", "-n", "127.0.0.1"), b"-f FILE and -n HOST cannot be combined"),
    ],
)
def test_debug_daemon_bad_input(colinux: Colinux, args: tuple[str, ...], message: bytes) -> None:
    result = colinux.run(*args, program="colinux-debug-daemon")
    assert result.returncode == 2
    assert result.stderr.startswith(b"colinux-debug-daemon: ")
    assert message in result.stderr


def test_debug_daemon_sends_records_over_udp(colinux: Colinux) -> None:
    start(colinux, "udp")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(20)
        port = sock.getsockname()[1]
        sender = colinux.popen(
            "-n", f"127.0.0.1:{port}", "-p", "-s", "prints=15", program="colinux-debug-daemon",
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        with reaped(sender):
            datagrams = [sock.recv(65536) for _ in range(3)]
            sender.send_signal(signal.SIGINT)
            assert sender.wait(10) == 0
    assert datagrams[0].startswith(b"<?xml")
    assert datagrams[1].startswith(b'<record timestamp="')
    assert b'facility="prints"' in datagrams[1]
    assert colinux.run("stop", "udp").returncode == 0


def test_kmsg_lines_and_filters() -> None:
    record = record_from_kmsg(b"3,17,2000000,-;ubda: bad sector", 100.0)
    assert record is not None
    assert (record.time, record.level, record.facility, record.message) == (
        102.0, 1, "prints", "ubda: bad sector",
    )  # fmt: skip
    assert record_from_kmsg(b" continuation line", 0.0) is None
    multi = Record(0.0, "engine", "misc", 10, "argv", {"argv": "sh -c 'a\nb'"})
    assert "\n" not in multi.to_text() and "a\\nb" in multi.to_text()
    levels = parse_facility_levels("all=3,filesystem=10")
    assert levels["misc"] == 3 and levels["filesystem"] == 10
    wanted = Filter(facilities=levels)
    assert wanted(record)
    assert not wanted(Record(0.0, "cofs", "filesystem", 15, "lookup"))
    assert Record.from_json(record.to_json()) == record


def test_records_from_other_threads_reach_followers_on_the_loop() -> None:
    """cofs servers and relays log from their own threads; followers write to asyncio
    streams, which only the loop's thread may touch."""
    import asyncio
    import logging
    import threading

    async def scenario() -> list[tuple[str, bool]]:
        collector = DebugCollector("colinux.test-threads")
        collector.bind_loop(asyncio.get_running_loop())
        collector.enable()
        loop_thread = threading.get_ident()
        seen: list[tuple[str, bool]] = []
        collector.subscribe(
            lambda r: seen.append((r.message, threading.get_ident() == loop_thread))
        )
        worker = threading.Thread(
            target=logging.getLogger("colinux.test-threads.cofs").warning, args=("from a thread",)
        )
        worker.start()
        worker.join()
        for _ in range(10):
            await asyncio.sleep(0)
        collector.disable()
        return seen

    seen = asyncio.run(scenario())
    assert ("from a thread", True) in seen, seen
    assert all(on_loop for _, on_loop in seen), seen
