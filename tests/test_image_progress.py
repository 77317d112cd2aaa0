"""`colinux image root`'s progress: mmdebstrap's verbose output read, and shown.

The log is a real one (mmdebstrap 1.3.5, bookworm minbase plus iproute2,
thinned out to what the parser reads and some of what it skips). The live
display is checked on a real pseudo-terminal; the full build's plain lines in
test_image.py's build as an ordinary user.
"""

from __future__ import annotations

import io
import itertools
import os
import pty
import select
import subprocess
import sys
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from colinux.image.progress import STAGES, BuildProgress, BuildState, MmdebstrapLog, parse_bytes

LOG = Path(__file__).parent / "data" / "mmdebstrap-verbose.log"


def states() -> list[BuildState]:
    log, seen = MmdebstrapLog(), []
    for line in LOG.read_text().splitlines():
        if log.feed(line):
            seen.append(log.state)
    return seen


def last_of(stage: str, phase: str) -> BuildState:
    return [s for s in states() if s.stage == stage and s.phase == phase][-1]


def test_apt_sizes() -> None:
    assert parse_bytes("29.7 MB") == 29_700_000
    assert parse_bytes("37.6 kB") == 37_600
    assert parse_bytes("0 B") == 0
    assert parse_bytes("1,234 kB") == 1_234_000


def test_downloads_are_counted_in_packages_and_bytes() -> None:
    essential = last_of("downloading Debian packages", "downloading")
    assert (essential.done, essential.total) == (69, 69)
    assert essential.bytes_total == 29_700_000
    assert abs(essential.bytes_done - essential.bytes_total) < 0.01 * essential.bytes_total
    others = last_of("installing the other packages", "downloading")
    assert (others.done, others.total, others.bytes_total) == (42, 42, 13_900_000)


def test_installs_are_counted_in_packages() -> None:
    essential = last_of("installing the essential packages", "installing")
    assert (essential.done, essential.total) == (69, 69)  # those downloaded first
    others = last_of("installing the other packages", "installing")
    assert (others.done, others.total) == (42, 42)


def test_stages_come_in_order_and_progress_never_goes_back() -> None:
    seen = states()
    order = [stage for _, stage in STAGES]
    stages = list(dict.fromkeys(s.stage for s in seen))
    assert stages == sorted(stages, key=order.index)
    assert "downloading Debian packages" in stages and "extracting" in stages
    for before, after in itertools.pairwise(seen):
        if (before.stage, before.phase) == (after.stage, after.phase):
            assert after.done >= before.done and after.bytes_done >= before.bytes_done


@given(st.lists(st.text(max_size=120), max_size=60))
def test_any_output_is_read_without_error(lines: list[str]) -> None:
    log = MmdebstrapLog()
    for line in lines:
        log.feed(line)
        assert 0 <= log.state.done <= max(log.state.total, log.state.done)


def test_plain_lines_without_a_terminal() -> None:
    out = io.StringIO()
    shown = BuildProgress(out, start=0.0)
    for state in states():
        shown.update(state)
    shown.close()
    lines = out.getvalue().splitlines()
    assert any("downloading Debian packages" in line for line in lines)
    assert any("downloading: 69/69 packages, 29.7 of 29.7 MB" in line for line in lines)
    assert any("installing: 42/42 packages" in line for line in lines)
    assert len(lines) < 40  # a few lines a phase, not one a package
    assert "\x1b" not in out.getvalue()


def test_a_live_display_on_a_terminal() -> None:
    script = (
        "import sys, time\n"
        "from colinux.image.progress import BuildProgress, MmdebstrapLog\n"
        "log, shown = MmdebstrapLog(), BuildProgress(sys.stdout)\n"
        "shown.line('building root.img')\n"
        f"for line in open({str(LOG)!r}):\n"
        "    if log.feed(line):\n"
        "        shown.update(log.state)\n"
        "    if line.startswith('Get:40 '):  # halfway through a download: a frame of it\n"
        "        time.sleep(0.5)\n"
        "shown.close()\n"
        "print('closed')\n"
    )
    master, slave = pty.openpty()
    env = {**os.environ, "COLUMNS": "120", "TERM": "xterm"}
    process = subprocess.Popen([sys.executable, "-c", script], stdout=slave, stderr=slave, env=env)
    os.close(slave)
    output = b""
    try:
        while True:
            ready, _, _ = select.select([master], [], [], 30)
            if not ready:
                break
            try:
                data = os.read(master, 65536)
            except OSError:  # the program ended: EIO
                break
            if not data:
                break
            output += data
    finally:
        os.close(master)
        assert process.wait(30) == 0, output[-2000:]
    text = output.decode(errors="replace")
    assert "building root.img" in text and "closed" in text
    assert "installing the other packages" in text  # each stage's line stays
    assert "packages" in text and "MB" in text and "\x1b[" in text  # rich drew on it
