"""`colinux exec` and `colinux shell`: commands in a running guest, as a person runs them."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import os
import pty
import select
import signal
import struct
import subprocess
import tarfile
import termios
import time

import pytest
from conftest import Colinux, OrdinaryUser, reaped, write_user_initrd


def piped(colinux: Colinux, data: bytes, *args: str) -> subprocess.CompletedProcess[bytes]:
    """``colinux ARGS`` with ``data`` on a pipe as its standard input."""
    return colinux.run(*args, stdin=None, input=data)


def start(colinux: Colinux, name: str, *settings: str) -> None:
    result = colinux.run("start", name, *settings)
    assert result.returncode == 0, result.stderr


def stop(colinux: Colinux, name: str) -> None:
    assert colinux.run("stop", name).returncode == 0


@pytest.fixture
def web(colinux: Colinux):  # type: ignore[no-untyped-def]
    """A running default guest named web, stopped after the test."""
    start(colinux, "web")
    yield "web"
    stop(colinux, "web")


def test_output_apart_byte_for_byte_and_the_status(colinux: Colinux, web: str) -> None:
    result = colinux.run(
        "exec", web, "--", "sh", "-c", r"printf 'a\nb\tc\001\000\n'; echo oops >&2; exit 7"
    )
    assert result.returncode == 7, result.stderr
    assert result.stdout == b"a\nb\tc\x01\x00\n"
    assert result.stderr == b"oops\n"
    assert colinux.run("exec", web, "true").returncode == 0  # '--' may be left out
    assert colinux.run("exec", web, "--", "false").returncode == 1
    # A signal's status is 128 + its number, as a host shell reports it.
    killed = colinux.run("exec", web, "--", "sh", "-c", "kill -TERM $$")
    assert killed.returncode == 128 + signal.SIGTERM


def test_the_command_gets_pipes_its_words_directory_and_environment(
    colinux: Colinux, web: str
) -> None:
    probe = (
        '[ -t 0 ] || echo stdin-no-tty; [ -t 1 ] || echo stdout-no-tty; printf "%s|" "$@"; echo; '
        'pwd; echo "$GREETING ${TERM-no-term} $HOME"'
    )
    result = colinux.run(
        "exec", "-w", "/tmp", "-e", "GREETING=héllo wörld", web, "--",
        "sh", "-c", probe, "x", "a b", "it's", "\n", "$HOME",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().splitlines() == [
        "stdin-no-tty", "stdout-no-tty", "a b|it's|", "|$HOME|", "/tmp",
        "héllo wörld no-term /root",
    ]  # fmt: skip
    missing = colinux.run("exec", "-w", "/no/such/dir", web, "--", "true")
    assert missing.returncode == 126
    assert b"/no/such/dir" in missing.stderr


def test_piped_stdin_reaches_the_command_with_its_end(colinux: Colinux, web: str) -> None:
    # tar c . | colinux exec web -- tar x -C /srv, and every byte value on the way.
    data = bytes(range(256)) * 64 + b"\x04\x16 no newline at the end"
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo("srv/every-byte")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    unpacked = piped(colinux, buffer.getvalue(), "exec", web, "--", "tar", "x", "-C", "/")
    assert unpacked.returncode == 0, unpacked.stderr
    digest = colinux.run("exec", web, "--", "md5sum", "/srv/every-byte")
    assert digest.stdout.split()[0].decode() == hashlib.md5(data).hexdigest()
    # EOF reaches the command: cat ends, and what follows runs.
    echoed = piped(colinux, data, "exec", web, "--", "sh", "-c", "cat; echo end")
    assert echoed.stdout == data + b"end\n"
    # A file as stdin (select() cannot wait on one), and nothing at all.
    (colinux.cwd / "in.txt").write_bytes(b"from a file\n")
    with open(colinux.cwd / "in.txt", "rb") as f:
        assert colinux.run("exec", web, "--", "cat", stdin=f).stdout == b"from a file\n"
    assert colinux.run("exec", web, "--", "cat").stdout == b""  # /dev/null


def test_unread_stdin_is_not_the_next_commands(colinux: Colinux, web: str) -> None:
    # head takes one line of a long input; the next exec on the same slot starts clean.
    lots = b"first line\n" + b"x" * 200_000 + b"\n"
    assert piped(colinux, lots, "exec", web, "--", "head", "-n1").stdout == b"first line\n"
    assert piped(colinux, b"mine\n", "exec", web, "--", "cat").stdout == b"mine\n"


def test_two_execs_at_once(colinux: Colinux, web: str) -> None:
    # Each its own output and status, while the other runs.
    slow = colinux.popen(
        "exec", web, "--", "sh", "-c", "sleep 1; echo slow; exit 3",
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    with reaped(slow):
        fast = colinux.run("exec", web, "--", "sh", "-c", "echo fast >&2; exit 4")
        assert (fast.returncode, fast.stdout, fast.stderr) == (4, b"", b"fast\n")
        out, err = slow.communicate(timeout=30)
        assert (slow.returncode, out, err) == (3, b"slow\n", b"")


def test_exec_while_a_console_is_attached(colinux: Colinux, web: str) -> None:
    master, slave = pty.openpty()
    console = colinux.popen("console", web, stdin=slave, stdout=slave, stderr=slave)
    os.close(slave)
    try:
        with reaped(console):
            assert _read_until(master, b"attached")
            result = colinux.run("exec", web, "--", "sh", "-c", "echo beside-the-console")
            assert result.stdout == b"beside-the-console\n"
            os.write(master, b"\x1d")  # detach
            assert console.wait(20) == 0
    finally:
        os.close(master)


def test_a_reader_that_goes_away_ends_the_command(colinux: Colinux, web: str) -> None:
    # colinux exec web -- yes | head -1: yes ends with SIGPIPE's status.
    run = colinux.popen("exec", web, "--", "yes", stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
    with reaped(run):
        assert run.stdout is not None
        assert run.stdout.read(2) == b"y\n"
        run.stdout.close()
        assert run.wait(30) == 128 + signal.SIGPIPE


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_here_goes_to_the_command(
    colinux: Colinux, web: str, signum: int, status: int
) -> None:
    run = colinux.popen(
        "exec", web, "--", "sh", "-c", "echo started; exec sleep 100",
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    with reaped(run):
        assert run.stdout is not None
        assert run.stdout.readline() == b"started\n"
        run.send_signal(signum)
        assert run.wait(30) == status
    # The guest goes on: another command runs.
    assert colinux.run("exec", web, "--", "true").returncode == 0


def test_a_guest_stopped_during_an_exec(colinux: Colinux) -> None:
    start(colinux, "gone")
    run = colinux.popen(
        "exec", "gone", "--", "sh", "-c", "echo started; exec sleep 100",
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    with reaped(run):
        assert run.stdout is not None
        assert run.stdout.readline() == b"started\n"
        stop(colinux, "gone")
        _, err = run.communicate(timeout=30)
    assert run.returncode == 255
    assert err.decode().count("\n") == 1 and "gone" in err.decode() and "stopped" in err.decode()


def test_a_guest_killed_during_an_exec(colinux: Colinux) -> None:
    start(colinux, "killed")
    run = colinux.popen(
        "exec", "killed", "--", "sh", "-c", "echo started; exec sleep 100",
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    with reaped(run):
        assert run.stdout is not None
        assert run.stdout.readline() == b"started\n"
        listed = colinux.run("list").stdout.decode().splitlines()[1].split()
        os.kill(int(listed[2]), signal.SIGKILL)  # the daemon
        _, err = run.communicate(timeout=30)
    assert run.returncode == 255
    assert err.decode().count("\n") == 1 and "killed" in err.decode()
    assert colinux.run("list").returncode == 0  # which clears the dead daemon's run directory


# -- a terminal ---------------------------------------------------------------------------


class Screen:
    """A client on a real pseudo-terminal of a given size, typed into like a person would."""

    def __init__(self, colinux: Colinux, *args: str, rows: int = 33, cols: int = 111) -> None:
        self.master, slave = pty.openpty()
        self.resize(rows, cols)
        self.process = colinux.popen(
            *args, stdin=slave, stdout=slave, stderr=slave, start_new_session=True
        )
        os.close(slave)
        self.output = b""
        self.queries = 0  # cursor queries answered

    def resize(self, rows: int, cols: int) -> None:
        fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        if hasattr(self, "process"):
            self.process.send_signal(signal.SIGWINCH)

    def read_until(self, text: bytes, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output:
            assert time.monotonic() < deadline, f"{text!r} not seen in {self.output[-1500:]!r}"
            ready, _, _ = select.select([self.master], [], [], 0.1)
            if ready:
                try:
                    data = os.read(self.master, 65536)
                except OSError:
                    continue
                self.output += data
                # busybox's line editor asks where the cursor is; a terminal answers.
                self.output = self.output.replace(b"\x1b[6n", b"")
                if b"\x1b[6n" in data:
                    os.write(self.master, b"\x1b[1;1R")
                    self.queries += 1

    def settle(self, queries: int, timeout: float = 2.0) -> None:
        """Wait (a little) for the line editor's cursor query after a prompt to be
        answered: a key typed before that is taken as part of the answer."""
        deadline = time.monotonic() + timeout
        while self.queries < queries and time.monotonic() < deadline:
            with contextlib.suppress(AssertionError):
                self.read_until(b"\0never\0", timeout=0.1)

    def type(self, text: bytes) -> None:
        os.write(self.master, text)

    def close(self) -> int:
        try:
            return self.process.wait(20)
        finally:
            os.close(self.master)


def test_a_terminal_with_its_size_and_ctrl_c(colinux: Colinux, web: str) -> None:
    screen = Screen(colinux, "exec", "-t", web, "--", "sh")
    with reaped(screen.process):
        screen.read_until(b"# ")
        screen.type(b"stty size; tty; echo term=$TERM\r")
        screen.read_until(b"33 111\r\n/dev/ttyS")
        screen.read_until(b"term=xterm")
        # Ctrl-C once the command runs (typed earlier, the line editor would take it):
        # SIGINT in the guest, not here, and the shell is back at once.
        screen.type(b"echo sleeping; sleep 100\r")
        screen.read_until(b"sleeping\r\n")
        time.sleep(0.3)
        screen.type(b"\x03")
        screen.type(b"echo back-$((6 * 7))\r")
        screen.read_until(b"back-42", timeout=30)
        screen.resize(50, 70)
        time.sleep(0.3)
        screen.type(b"stty size\r")
        screen.read_until(b"50 70")
        screen.type(b"exit 5\r")
        assert screen.close() == 5


def test_shell_is_a_login_shell_on_a_terminal(colinux: Colinux, web: str) -> None:
    screen = Screen(colinux, "shell", web)
    with reaped(screen.process):
        screen.read_until(b"web:/root# ")  # the prompt of /etc/profile: a login shell's
        screen.type(b"echo $HOME $(pwd) $SHELL\r")
        screen.read_until(b"/root /root /bin/sh\r\nweb:/root# ")
        screen.settle(queries=2)  # one for each prompt, where the editor asks
        screen.type(b"\x04")  # Ctrl-D ends it, as on a terminal
        assert screen.close() == 0


def test_shell_without_a_terminal_reads_commands(colinux: Colinux, web: str) -> None:
    result = piped(colinux, b"echo from-stdin; [ -t 0 ] || echo no-tty\n", "shell", web)
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"from-stdin\nno-tty\n"


# -- mistakes ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["exec", "nosuch", "--", "true"], "no running guest named 'nosuch'"),
        (["exec", "web"], "no command"),
        (["exec", "web", "--"], "no command"),
        (["exec"], "the following arguments are required"),
        (["exec", "-e", "1X=y", "web", "--", "true"], "-e 1X=y"),
        (["exec", "--wait", "soon", "web", "--", "true"], "--wait"),
        (["exec", "bad/name", "--", "true"], "guest name"),
        (["shell"], "the following arguments are required"),
    ],
)
def test_bad_exec_requests(colinux: Colinux, args: list[str], expected: str) -> None:
    result = colinux.run(*args)
    assert result.returncode == 2, result.stderr
    assert result.stderr.decode().count("\n") == 1, result.stderr
    assert expected in result.stderr.decode()


def _root_disk(colinux: Colinux, init: str) -> None:
    """root.img: busybox and ``init``, and an initrd that knows nothing of colinux."""
    import shutil

    write_user_initrd(colinux.cwd / "plain-initrd.gz")
    tree = colinux.cwd / "tree"
    for d in ("bin", "sbin", "proc", "sys", "dev", "tmp"):
        (tree / d).mkdir(parents=True)
    shutil.copy("/bin/busybox", tree / "bin" / "busybox")
    (tree / "sbin" / "init").write_text(init)
    (tree / "sbin" / "init").chmod(0o755)
    subprocess.run(
        ["mke2fs", "-q", "-t", "ext4", "-d", str(tree), "root.img", "16M"],
        cwd=colinux.cwd,
        check=True,
    )


def test_a_guest_without_colinux_agent(colinux: Colinux) -> None:
    _root_disk(
        colinux, "#!/bin/busybox sh\n/bin/busybox mount -t proc proc /proc\nexec /bin/busybox sh\n"
    )
    start(colinux, "plain", "cobd0=root.img", "root=/dev/cobd0", "initrd=plain-initrd.gz")
    try:
        result = colinux.run("exec", "--wait", "1", "plain", "--", "true")
        assert result.returncode == 2
        assert result.stderr.decode().count("\n") == 1
        assert "no colinux agent" in result.stderr.decode()
    finally:
        stop(colinux, "plain")


def test_an_image_agent_from_before_exec_says_so(colinux: Colinux) -> None:
    # What images made before colinux exec run: an agent that only powers off.
    old_agent = (
        "#!/bin/busybox sh\n/bin/busybox mount -t proc proc /proc\n"
        "/bin/busybox mount -o remount,rw /\n/bin/busybox --install -s /bin\n"
        "mount -t devtmpfs dev /dev\n"
        "stty -F /dev/tty15 raw -echo\nexec 3<>/dev/tty15\n"
        'echo "HELLO 0.0.9 serve" >&3\n'
        'while read -r request _ <&3; do [ "$request" = POWEROFF ] && poweroff -f; done\n'
        "exec sh\n"
    )
    _root_disk(colinux, old_agent)
    start(colinux, "old", "cobd0=root.img", "root=/dev/cobd0", "initrd=plain-initrd.gz")
    try:
        result = colinux.run("exec", "old", "--", "true")
        assert result.returncode == 2
        assert result.stderr.decode().count("\n") == 1
        assert "made before colinux exec" in result.stderr.decode()
        assert "colinux image root" in result.stderr.decode()
    finally:
        stop(colinux, "old")


def test_an_ordinary_user_execs(ordinary_user: OrdinaryUser) -> None:
    user = ordinary_user
    assert user.run("start", "mine").returncode == 0
    try:
        result = user.run("exec", "mine", "--", "sh", "-c", "id -u; echo err >&2")
        assert result.returncode == 0, result.stderr
        assert (result.stdout, result.stderr) == (b"0\n", b"err\n")  # root in the guest
    finally:
        assert user.run("stop", "mine").returncode == 0


def _read_until(fd: int, text: bytes, timeout: float = 20.0) -> bool:
    seen, deadline = b"", time.monotonic() + timeout
    while text not in seen and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            try:
                seen += os.read(fd, 65536)
            except OSError:
                break
    return text in seen
