"""Named guests: start, list, console (attach, detach, several clients), stop, signals."""

from __future__ import annotations

import os
import pty
import signal
import stat
import subprocess
import time

import pytest
from conftest import Colinux, processes_mentioning, wait_until


class Terminal:
    """A client program on a real pseudo-terminal, read and typed into like a person would."""

    def __init__(self, colinux: Colinux, *args: str, program: str = "colinux") -> None:
        self.master, slave = pty.openpty()
        self.process = colinux.popen(
            *args, program=program, stdin=slave, stdout=slave, stderr=slave
        )
        os.close(slave)
        self.output = b""
        self._tail = b""  # the end of what was read, for a query split across reads

    def read_until(self, text: bytes, timeout: float = 20.0) -> bytes:
        deadline = time.monotonic() + timeout
        while text not in self.output:
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not seen; got {self.output[-2000:]!r}")
            import select

            ready, _, _ = select.select([self.master], [], [], 0.1)
            if ready:
                try:
                    data = os.read(self.master, 65536)
                    self.output += data
                    self._answer_cursor_queries(data)
                except OSError:
                    if self.process.poll() is not None:
                        raise AssertionError(
                            f"client ended before {text!r}; got {self.output[-2000:]!r}"
                        ) from None
        return self.output

    def _answer_cursor_queries(self, data: bytes) -> None:
        # A real terminal answers "where is the cursor?" (ESC [6n), which busybox's
        # line editor asks after a reboot; unanswered, it takes what we type next
        # as the answer and the command is lost.
        window = self._tail + data
        for _ in range(window.count(b"\x1b[6n")):
            os.write(self.master, b"\x1b[1;1R")
        self._tail = window[-3:]

    def type(self, text: bytes) -> None:
        os.write(self.master, text)

    def close(self) -> int:
        try:
            status = self.process.wait(20)
            while True:  # what the client wrote before it ended
                try:
                    data = os.read(self.master, 65536)
                except OSError:
                    break
                if not data:
                    break
                self.output += data
        finally:
            os.close(self.master)
        return status


def start(colinux: Colinux, name: str, *settings: str) -> None:
    result = colinux.run("start", name, *settings)
    assert result.returncode == 0, result.stderr
    assert name.encode() in result.stdout


def listed(colinux: Colinux) -> list[list[str]]:
    result = colinux.run("list")
    assert result.returncode == 0, result.stderr
    return [line.split() for line in result.stdout.decode().splitlines()[1:]]


def test_start_list_console_stop(colinux: Colinux) -> None:
    start(colinux, "web", "mem=80")
    rows = listed(colinux)
    assert len(rows) == 1
    name, state, pid, memory, _resident, _uptime = rows[0]
    assert (name, memory) == ("web", "80M")
    assert state in ("booting", "running")
    assert os.path.exists(f"/proc/{pid}")
    # The engine's umid is the guest's name: ps shows which process is whose.
    assert processes_mentioning("umid=web")

    console = Terminal(colinux, "console", "web")
    console.read_until(b"web:/root# ")
    console.type(b"echo hello-$((6*7))\r")
    console.read_until(b"hello-42")
    console.type(b"\x1d")
    assert console.close() == 0
    assert b"detached from web" in console.output

    # Detaching left it running; a new console replays the recent output.
    assert [r[0] for r in listed(colinux)] == ["web"]
    again = Terminal(colinux, "console", "web")
    again.read_until(b"hello-42")
    again.type(b"\x1d")
    assert again.close() == 0

    result = colinux.run("stop", "web")
    assert result.returncode == 0, result.stderr
    assert listed(colinux) == []
    # Nothing went wrong, so the daemon's (empty) log went with it.
    log = colinux.run_dir / "web.log"
    assert wait_until(lambda: not log.exists()), log.read_text()


def test_console_reads_typed_input_from_a_file(colinux: Colinux) -> None:
    # Standard input that cannot be polled (a file, /dev/null) is sent as typed.
    start(colinux, "scripted")
    # A terminal first, which answers the shell's cursor query (what we send next
    # would otherwise be taken for the answer).
    watcher = Terminal(colinux, "console", "scripted")
    watcher.read_until(b"scripted:/root# ")
    script = colinux.cwd / "typed.txt"
    script.write_text("echo typed-$((2*3))\npoweroff\n")
    with open(script, "rb") as typed:
        result = colinux.run("console", "scripted", stdin=typed)
    assert result.returncode == 0, result.stderr
    assert watcher.close() == 0
    assert b"typed-6" in result.stdout
    assert b"has stopped" in result.stderr
    assert wait_until(lambda: listed(colinux) == [])
    start(colinux, "scripted")
    idle = colinux.popen(
        "console", "scripted", stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    assert wait_until(lambda: listed(colinux)[0][1] == "running")
    assert colinux.run("stop", "scripted").returncode == 0
    _out, err = idle.communicate(timeout=30)
    assert idle.returncode == 0, err
    assert b"has stopped" in err


def test_several_consoles_at_once(colinux: Colinux) -> None:
    start(colinux, "shared")
    first = Terminal(colinux, "console", "shared")
    second = Terminal(colinux, "console", "shared", "--no-replay")
    first.read_until(b"shared:/root# ")
    second.read_until(b"detaches")
    first.type(b"echo from-first-$((1+1))\r")
    first.read_until(b"from-first-2")
    second.read_until(b"from-first-2")
    second.type(b"echo from-second-$((2+2))\r")
    first.read_until(b"from-second-4")
    second.read_until(b"from-second-4")
    # poweroff in the guest ends the daemon; both consoles hear it.
    first.type(b"poweroff\r")
    assert first.close() == 0
    assert second.close() == 0
    assert b"has stopped" in first.output
    assert wait_until(lambda: listed(colinux) == [])


def test_foreground_daemon_ends_with_status_0_on_poweroff(colinux: Colinux) -> None:
    daemon = Terminal(colinux, "--name", "fg", program="colinux-daemon")
    daemon.read_until(b"fg:/root# ")
    daemon.type(b"shutdown -h now\r")
    assert daemon.close() == 0


def test_daemon_without_terminal_writes_console_to_stdout(colinux: Colinux) -> None:
    daemon = colinux.popen(
        "--name",
        "piped",
        program="colinux-daemon",
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    assert wait_until(lambda: [r[0] for r in listed(colinux)] == ["piped"])
    assert colinux.run("stop", "piped").returncode == 0
    out, err = daemon.communicate(timeout=30)
    assert daemon.returncode == 0, err
    assert b"Linux version 7.2." in out  # kernel messages: -k was not given


def test_sigterm_shuts_down_cleanly(colinux: Colinux) -> None:
    disk = colinux.cwd / "disk.img"
    with open(disk, "wb") as f:
        f.truncate(16 << 20)
    assert colinux.run("run", "cobd0=disk.img", "--", "mke2fs", "-q", "/dev/cobd0").returncode == 0
    daemon = colinux.popen("-d", "--name", "term", "cobd0=disk.img", program="colinux-daemon")
    assert wait_until(lambda: [r[0] for r in listed(colinux)] == ["term"])
    console = Terminal(colinux, "console", "term")
    console.read_until(b"term:/root# ")
    console.type(b"mount /dev/cobd0 /mnt && echo unsynced-data > /mnt/f && echo mounted-ok\r")
    console.read_until(b"mounted-ok")
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(30) == 0
    assert console.close() == 0
    # The guest unmounted its disk on the way down: the file system is clean.
    fsck = subprocess.run(["e2fsck", "-n", str(disk)], capture_output=True)
    assert fsck.returncode == 0, fsck.stdout
    result = colinux.run(
        "run", "cobd0=disk.img", "--", "sh", "-c", "mount /dev/cobd0 /mnt; cat /mnt/f"
    )
    assert result.stdout == b"unsynced-data\n"


def test_sigkill_leaves_no_engine_behind(colinux: Colinux) -> None:
    start(colinux, "victim")
    rows = listed(colinux)
    daemon_pid = int(rows[0][2])
    engine = processes_mentioning("umid=victim")
    assert engine
    os.kill(daemon_pid, signal.SIGKILL)
    assert wait_until(lambda: not processes_mentioning("umid=victim"), 10)
    # The dead daemon's run directory is cleaned up by the next look.
    assert listed(colinux) == []
    start(colinux, "victim")  # and the name is free again
    assert colinux.run("stop", "victim").returncode == 0


def test_stop_forces_a_stuck_guest_after_the_timeout(colinux: Colinux) -> None:
    # An engine that answers nothing (frozen with SIGSTOP): the clean shutdown
    # cannot happen, so stop kills it once --timeout has passed.
    start(colinux, "frozen")
    assert wait_until(lambda: listed(colinux)[0][1] == "running")
    engine = processes_mentioning("umid=frozen")
    for pid in engine:
        os.kill(pid, signal.SIGSTOP)
    began = time.monotonic()
    result = colinux.run("stop", "frozen", "--timeout", "2")
    took = time.monotonic() - began
    assert result.returncode == 0, result.stderr
    assert 2 <= took < 10, took
    assert wait_until(lambda: not processes_mentioning("umid=frozen"), 10)
    assert listed(colinux) == []
    log = colinux.run_dir / "frozen.log"  # the daemon ended with nothing to complain of
    assert wait_until(lambda: not log.exists()), log.read_text()
    # --force does not wait for a clean shutdown at all
    start(colinux, "frozen")
    began = time.monotonic()
    assert colinux.run("stop", "frozen", "--force").returncode == 0
    assert time.monotonic() - began < 5
    assert wait_until(lambda: not processes_mentioning("umid=frozen"), 10)


def test_sighup_sends_ctrl_alt_del(colinux: Colinux) -> None:
    daemon = colinux.popen("-d", "--name", "hup", program="colinux-daemon")
    assert wait_until(lambda: [r[0] for r in listed(colinux)] == ["hup"])
    console = Terminal(colinux, "console", "hup")
    console.read_until(b"hup:/root# ")
    console.type(b"touch /tmp/before-reboot; echo marked\r")
    console.read_until(b"marked")
    console.output = b""
    daemon.send_signal(signal.SIGHUP)
    # The guest reboots (its tmpfs is new) and the daemon keeps serving it.
    console.read_until(b"Linux version", timeout=30)
    console.read_until(b"Run /init", timeout=30)
    # The line editor asks where the cursor is right after this prompt: typed
    # before that query is answered, the command would be taken as the answer.
    console.read_until(b"hup:/root# \x1b[6n", timeout=30)
    console.type(b"ls /tmp/before-reboot || echo gone-after-reboot\r")
    console.read_until(b"gone-after-reboot", timeout=30)
    console.type(b"\x1d")
    assert console.close() == 0
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(30) == 0


def test_start_refuses_a_name_in_use(colinux: Colinux) -> None:
    start(colinux, "twin")
    result = colinux.run("start", "twin")
    assert result.returncode == 2
    assert b"already running" in result.stderr
    assert colinux.run("stop", "twin").returncode == 0


@pytest.mark.parametrize("command", ["console", "stop"])
def test_unknown_guest_is_a_clear_error(colinux: Colinux, command: str) -> None:
    result = colinux.run(command, "nobody-here")
    assert result.returncode == 2
    assert result.stderr.decode().count("\n") == 1
    assert b"nobody-here" in result.stderr


@pytest.mark.parametrize("slirp", ["slirp4netns", "passt"])
def test_run_directory_and_sockets_are_private(colinux: Colinux, slirp: str) -> None:
    # Every socket the guest's daemon, engine and backends make (control, mconsole,
    # cofs, slirp) is the user's only, in directories that are the user's only.
    colinux.env["COLINUX_SLIRP"] = slirp
    (colinux.cwd / "share").mkdir()
    start(colinux, "private", "cofs0=share")
    guest = colinux.run_dir / "private"
    try:
        # the engine makes its mconsole socket early in its boot
        assert wait_until(lambda: any(guest.rglob("mconsole")))
        assert os.stat(colinux.run_dir).st_mode & 0o777 == 0o700
        assert os.stat(guest / "control.sock").st_mode & 0o777 == 0o600
        sockets = []
        for path in [guest, *guest.rglob("*")]:
            mode = os.lstat(path).st_mode
            if stat.S_ISDIR(mode):
                assert mode & 0o777 == 0o700, path
            elif stat.S_ISSOCK(mode):
                assert mode & 0o077 == 0, path
                sockets.append(path.name)
        assert {"control.sock", "mconsole", "cofs0.sock", "slirp0.sock"} <= set(sockets)
    finally:
        assert colinux.run("stop", "private").returncode == 0


def test_run_gives_a_root_shell_on_the_terminal(colinux: Colinux) -> None:
    shell = Terminal(colinux, "run", "--name", "inter")
    shell.read_until(b"inter:/root# ")
    shell.type(b"id -u; echo shell-$((40+2))\r")
    shell.read_until(b"shell-42")
    assert b"\r\n0\r\n" in shell.output
    shell.type(b"exit\r")  # the shell ends, and with it the guest
    assert shell.close() == 0


def test_pidfile(colinux: Colinux) -> None:
    pidfile = colinux.cwd / "daemon.pid"
    daemon = colinux.popen("-d", "-p", str(pidfile), "--name", "pid", program="colinux-daemon")
    assert wait_until(lambda: pidfile.exists() and pidfile.read_text().strip() != "")
    assert int(pidfile.read_text()) == daemon.pid
    assert colinux.run("stop", "pid").returncode == 0
    assert daemon.wait(30) == 0
    assert not pidfile.exists()


def test_stop_halts_a_guest_without_colinux_tools(colinux: Colinux) -> None:
    # A root disk with its own init and no guest agent: colinux stop flushes
    # and halts it through the engine, and what the guest wrote is on the disk.
    import shutil

    tree = colinux.cwd / "tree"
    for d in ("bin", "sbin", "dev", "proc", "mnt"):
        (tree / d).mkdir(parents=True)
    shutil.copy("/bin/busybox", tree / "bin" / "busybox")
    init = tree / "sbin" / "init"
    init.write_text(
        "#!/bin/busybox sh\n/bin/busybox mount -t proc proc /proc\n"
        "/bin/busybox echo foreign-init-ready\nexec /bin/busybox sh\n"
    )
    init.chmod(0o755)
    disk = colinux.cwd / "foreign.img"
    subprocess.run(["mke2fs", "-q", "-t", "ext4", "-d", str(tree), str(disk), "16M"], check=True)
    daemon = colinux.popen(
        "-d", "--name", "foreign", "cobd0=foreign.img", "root=/dev/cobd0", "rw",
        program="colinux-daemon",
    )  # fmt: skip
    assert wait_until(lambda: [r[0] for r in listed(colinux)] == ["foreign"])
    console = Terminal(colinux, "console", "foreign")
    console.read_until(b"foreign-init-ready")
    time.sleep(0.5)
    console.type(b"/bin/busybox echo written-by-guest > /note; /bin/busybox echo wrote-$((1+1))\r")
    console.read_until(b"wrote-2")
    assert colinux.run("stop", "foreign").returncode == 0
    assert daemon.wait(30) == 0
    assert console.close() == 0
    fsck = subprocess.run(["e2fsck", "-fn", str(disk)], capture_output=True)
    assert fsck.returncode == 0, fsck.stdout
    note = subprocess.run(["debugfs", "-R", "cat /note", str(disk)], capture_output=True)
    assert note.stdout == b"written-by-guest\n"
