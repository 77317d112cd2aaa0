"""Root and swap images: a real Debian guest with systemd, COW files, locks, crashes.

One Debian image (bookworm, with openssh-server, a root password and an SSH
key) is built with `colinux image root` once and kept in a cache keyed by
its inputs: $COLINUX_TEST_IMAGE_CACHE, else ~/.cache/colinux/test-images. A
build takes about a minute; later runs reuse it. Tests that write to the
root disk work on a copy of it or on a COW file over it.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from conftest import (
    BIN,
    TEST_USER,
    Colinux,
    OrdinaryUser,
    processes_mentioning,
    reaped,
    wait_until,
)
from seed_config import SEED_XML
from test_daemon import Terminal
from test_debug import status

from colinux.image.build import RootImageSpec
from colinux.version import __version__

PASSWORD = "colinux-test"
HOSTNAME = "debian"
PROMPT = f"root@{HOSTNAME}:~# ".encode()
BOOT_TIMEOUT = 180.0  # a loaded 2-core CI machine; about 13 s here


def cache_root() -> Path:
    override = os.environ.get("COLINUX_TEST_IMAGE_CACHE")
    if override:
        return Path(override)
    return Path.home() / ".cache" / "colinux" / "test-images"


@pytest.fixture(scope="session")
def debian(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The cached Debian root image and the SSH key that logs in to it."""
    cache = cache_root()
    cache.mkdir(parents=True, exist_ok=True)
    key = cache / "ssh-key"
    if not key.exists():
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "colinux-test", "-f", str(key)],
            check=True,
        )
    spec = RootImageSpec(
        Path("root.img"),
        2 << 30,
        packages=("openssh-server",),
        hostname=HOSTNAME,
        root_password=PASSWORD,
        ssh_key=(cache / "ssh-key.pub").read_text(),
    )
    image = cache / f"debian-{spec.cache_key()}.img"
    if not image.exists():
        building = cache / f".building-{os.getpid()}"
        shutil.rmtree(building, ignore_errors=True)
        building.mkdir()
        started = time.monotonic()
        result = subprocess.run(
            [
                str(BIN / "colinux"), "image", "root", str(building / "root.img"),
                "--size", "2G", "--packages", "openssh-server", "--hostname", HOSTNAME,
                "--root-password", PASSWORD, "--ssh-key", str(cache / "ssh-key.pub"),
            ],
            capture_output=True,
            timeout=1200,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        print(f"\nbuilt the Debian test image in {time.monotonic() - started:.0f} s")
        (building / "root.img").rename(image)
        shutil.rmtree(building)
        for old in cache.glob("debian-*.img"):  # images of older inputs
            if old != image:
                old.unlink(missing_ok=True)
    return {"image": image, "key": key}


@pytest.fixture(scope="session")
def debian_cofs_tree() -> Path:
    """The same Debian as a meta cofs directory (``colinux image root --cofs``), cached."""
    cache = cache_root()
    cache.mkdir(parents=True, exist_ok=True)
    spec = RootImageSpec(Path("root"), 0, hostname=HOSTNAME, root_password=PASSWORD, cofs=True)
    tree = cache / f"debian-cofs-{spec.cache_key()}"
    if not tree.exists():
        building = cache / f".building-cofs-{os.getpid()}"
        shutil.rmtree(building, ignore_errors=True)
        building.mkdir()
        result = subprocess.run(
            [
                str(BIN / "colinux"), "image", "root", str(building / "root"), "--cofs",
                "--hostname", HOSTNAME, "--root-password", PASSWORD,
            ],
            capture_output=True,
            timeout=1200,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        (building / "root").rename(tree)
        shutil.rmtree(building)
        for old in cache.glob("debian-cofs-*"):  # trees of older inputs
            if old != tree:
                shutil.rmtree(old, ignore_errors=True)
    return tree


def copy_image(source: Path, target: Path) -> Path:
    subprocess.run(["cp", "--sparse=always", str(source), str(target)], check=True)
    return target


def make_swap(colinux: Colinux, path: Path, size: str = "64M") -> Path:
    result = colinux.run("image", "swap", str(path), "--size", size)
    assert result.returncode == 0, result.stderr
    return path


def fsck_clean(image: Path) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["e2fsck", "-fn", str(image)], capture_output=True)


def log_in(console: Terminal) -> None:
    console.read_until(b"login: ", BOOT_TIMEOUT)
    console.type(b"root\r")
    console.read_until(b"Password: ")
    console.type(PASSWORD.encode() + b"\r")
    console.read_until(PROMPT)


def run_in(console: Terminal, command: str, marker: str) -> str:
    """Type a command; its output up to the line ``marker`` prints after it."""
    console.output = b""
    console.type(f"{command}; echo {marker}-$((1+1))\r".encode())
    out = console.read_until(f"{marker}-2".encode(), 60)
    return out.decode(errors="replace")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ssh(key: Path, port: int, command: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [
            "ssh", "-p", str(port), "-i", str(key), "-o", "BatchMode=yes",
            "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR", "root@127.0.0.1", command,
        ],
        capture_output=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
    )  # fmt: skip


def ssh_when_up(key: Path, port: int, command: str) -> subprocess.CompletedProcess[bytes]:
    """ssh once the guest's sshd answers (it boots meanwhile)."""
    deadline = time.monotonic() + BOOT_TIMEOUT
    while True:
        result = ssh(key, port, command)
        if result.returncode == 0 or time.monotonic() > deadline:
            return result
        time.sleep(1)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


# --- the seed's configuration, on images colinux made ---------------------------------


def test_seed_xml_boots_debian_to_a_login_prompt(
    colinux: Colinux, debian: dict[str, Path], tmp_path: Path
) -> None:
    drive_c = tmp_path / "c"
    folder = drive_c / "coLinux"
    folder.mkdir(parents=True)
    root = copy_image(debian["image"], folder / "root.img")
    # As an image made for coLinux would be: without colinux's udev rule. The
    # seed's initrd (the default guest) names the disks for it.
    for path in ("/etc/udev/rules.d/60-colinux.rules", "/usr/lib/colinux/cobd-names"):
        subprocess.run(["debugfs", "-w", "-R", f"rm {path}", str(root)], check=True)
    make_swap(colinux, folder / "swap.img", "128M")
    # The seed's vmlinux and initrd.gz, as the user makes them: colinux's kernel
    # and the default guest.
    for what, name in (("kernel", "vmlinux"), ("initrd", "initrd.gz")):
        made = colinux.run("image", what, str(folder / name))
        assert made.returncode == 0, made.stderr
    xml = folder / "my.colinux.xml"
    xml.write_text(SEED_XML)

    started = time.monotonic()
    console = Terminal(colinux, "-c", str(xml), "--drive", f"c={drive_c}", program="colinux-daemon")
    try:
        console.read_until(b"login: ", BOOT_TIMEOUT)
        print(f"\nboot to the login prompt: {time.monotonic() - started:.1f} s")
        assert b"Debian GNU/Linux 12" in console.output
        log_in(console)
        out = run_in(console, "tail -n +2 /proc/swaps; ls -1 /dev/cobd0 /dev/cobd1", "probe")
        assert "/dev/cobd1 " in out or "/dev/ubdb " in out  # cobd1 is swapping
        assert "/dev/cobd0\r\n/dev/cobd1\r\n" in out
        out = run_in(console, "findmnt -no SOURCE,FSTYPE /; systemctl is-system-running", "st")
        assert "/dev/ubda ext4" in out
        assert "running" in out or "degraded" in out
        out = run_in(console, "mount -t cofs 0 /mnt && ls /mnt/coLinux", "cofs")
        assert "root.img" in out  # our guest tools: mount -t cofs
        console.type(b"shutdown -h now\r")
        status = console.close()
    finally:
        if console.process.poll() is None:  # a failed test: shut down, as SIGTERM does
            console.process.terminate()
            console.process.wait(60)
    assert status == 0, console.output[-2000:]
    check = fsck_clean(root)
    assert check.returncode == 0, check.stdout


def test_debian_boots_from_a_meta_cofs_directory(
    colinux: Colinux, debian_cofs_tree: Path, tmp_path: Path
) -> None:
    from colinux.cofs import meta

    root = tmp_path / "root"
    subprocess.run(["cp", "-a", str(debian_cofs_tree), str(root)], check=True)  # xattrs too
    console = Terminal(
        colinux, "--name", "cofsroot", "mem=256", f"cofs0={root},meta", "root=cofs0", "rw",
        "ttys0=daemon", program="colinux-daemon",
    )  # fmt: skip
    try:
        log_in(console)
        out = run_in(console, "findmnt -no SOURCE,FSTYPE /; systemctl is-system-running", "st")
        assert "cofs0 virtiofs" in " ".join(out.split())
        assert "running" in out or "degraded" in out
        # systemd runs a getty on the serial line colinux connected (ttys0=daemon).
        line = Terminal(colinux, "serial", "cofsroot", "0")
        log_in(line)
        line.output = b""
        line.type(b"tty; echo serial-$((1+1))\r")
        assert b"/dev/ttyS0" in line.read_until(b"serial-2")
        line.type(b"exit\r\x1d")
        assert line.close() == 0
        # The kernel's messages reach the debug collector from a Debian guest too.
        kernel = colinux.run("debug", "cofsroot", "--no-follow", "--component", "guest")
        assert b"guest/prints[5] Linux version" in kernel.stdout, kernel.stdout[-2000:]
        assert b"systemd[1]:" in kernel.stdout  # userland's messages, after the hand-over
        run_in(console, "echo from-the-guest >/root/note; chmod 600 /root/note", "note")
        console.type(b"shutdown -h now\r")
        status = console.close()
    finally:
        if console.process.poll() is None:
            console.process.terminate()
            console.process.wait(60)
    assert status == 0, console.output[-2000:]
    note = root / "root" / "note"
    assert note.read_bytes() == b"from-the-guest\n"
    kept = meta.read(str(note))
    assert kept is not None and (kept.uid, kept.gid, kept.mode & 0o7777) == (0, 0, 0o600)

    # '-- CMD' runs in the default guest: this root's agent runs no commands, and says so
    # once the system is up (it used to wait for ever).
    job = colinux.run(
        "run", "--no-share", "mem=256", f"cofs0={root},meta", "root=cofs0", "rw", "--", "true",
        timeout=120,
    )  # fmt: skip
    assert job.returncode == 2, job.stderr
    assert job.stderr.count(b"\n") == 1, job.stderr
    assert b"needs the default guest's root" in job.stderr


# --- ssh, COW files and one base for many guests --------------------------------------


def test_two_guests_share_one_base_through_cow_files(
    colinux: Colinux, debian: dict[str, Path], tmp_path: Path
) -> None:
    base = copy_image(debian["image"], tmp_path / "base.img")
    before = (base.stat().st_mtime_ns, sha256(base))
    ports = {"a": free_port(), "b": free_port()}
    for name, port in ports.items():
        result = colinux.run(
            "start", name, "mem=128", f"cobd0={base},cow={tmp_path / name}.cow",
            "root=/dev/cobd0", f"eth0=slirp,,tcp:{port}:22",
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
    try:
        # A host ssh client logs in to each guest with the key the image was built with.
        first = ssh_when_up(
            debian["key"],
            ports["a"],
            "echo from-a >/root/mark; sync; hostname; readlink /dev/cobd0",
        )
        assert first.returncode == 0, first.stderr
        assert first.stdout == f"{HOSTNAME}\nubda\n".encode()  # the image's udev rule
        second = ssh_when_up(debian["key"], ports["b"], "cat /root/mark 2>&1 || true")
        assert second.returncode == 0, second.stderr
        assert b"No such file" in second.stdout  # b does not see a's write

        # The image's agent greets the daemon once the system is up, and colinux stop
        # then powers the guest off through systemd, not by halting the engine.
        assert wait_until(lambda: status(colinux, "a")["agent_version"] == __version__, 60)
        log = tmp_path / "a-daemon.log"
        follower = colinux.popen(
            "debug", "a", "--component", "daemon", "-f", str(log),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        with reaped(follower):
            assert wait_until(lambda: status(colinux, "a")["collecting"] is True, 20)
            assert colinux.run("stop", "a").returncode == 0
            follower.wait(30)
        daemon_log = log.read_text()
        assert "asking the guest agent to power off" in daemon_log, daemon_log
        assert "halting the guest through the engine" not in daemon_log, daemon_log
    finally:
        for name in ports:
            colinux.run("stop", name)
    assert (base.stat().st_mtime_ns, sha256(base)) == before  # the base is untouched

    # a's writes go into the base; the COW file starts over on the new base.
    commit = colinux.run("image", "commit", str(tmp_path / "a.cow"))
    assert commit.returncode == 0, commit.stderr
    assert b"committed" in commit.stdout
    assert fsck_clean(base).returncode == 0
    dump = subprocess.run(
        ["debugfs", "-R", "cat /root/mark", str(base)], capture_output=True, check=True
    )
    assert dump.stdout == b"from-a\n"

    # b's COW file was made on the base as it was: refused, before anything starts.
    stale = colinux.run(
        "run", f"cobd0={base},cow={tmp_path / 'b.cow'}", "root=/dev/cobd0", "--", "true"
    )
    assert stale.returncode == 2
    message = stale.stderr.decode()
    assert message.count("\n") == 1, message
    assert "b.cow" in message and "changed after COW file" in message
    assert b"Traceback" not in stale.stderr


def test_exec_on_a_debian_image(colinux: Colinux, debian: dict[str, Path], tmp_path: Path) -> None:
    # The image's agent runs colinux exec sessions once the system is up (exec waits).
    result = colinux.run(
        "start", "deb", "mem=128", f"cobd0={debian['image']},cow={tmp_path / 'deb.cow'}",
        "root=/dev/cobd0",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    wait = str(int(BOOT_TIMEOUT))
    try:
        probe = colinux.run(
            "exec", "--wait", wait, "deb", "--", "sh", "-c",
            'cat /etc/debian_version; [ -t 1 ] || echo pipe; echo "$HOME $0" >&2; exit 3', "x",
            timeout=BOOT_TIMEOUT + 30,
        )  # fmt: skip
        assert probe.returncode == 3, probe.stderr
        assert probe.stdout.decode().splitlines()[1:] == ["pipe"]
        assert probe.stderr == b"/root x\n"
        echoed = colinux.run("exec", "deb", "--", "cat", stdin=None, input=b"through bash\x04\n")
        assert echoed.stdout == b"through bash\x04\n"
        shell = colinux.run(
            "shell", "deb", stdin=None, input=b"echo $SHELL; systemctl is-enabled colinux-agent\n"
        )
        assert shell.stdout == b"/bin/bash\nenabled\n", shell.stderr
        # SIGPIPE and SIGINT behave as in a host shell, under systemd too.
        yes = colinux.popen(
            "exec", "deb", "--", "yes", stdin=subprocess.DEVNULL, stdout=subprocess.PIPE
        )
        with reaped(yes):
            assert yes.stdout is not None and yes.stdout.read(2) == b"y\n"
            yes.stdout.close()
            assert yes.wait(30) == 141
        sleeper = colinux.popen(
            "exec", "deb", "--", "sh", "-c", "echo started; exec sleep 100",
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        )  # fmt: skip
        with reaped(sleeper):
            assert sleeper.stdout is not None and sleeper.stdout.readline() == b"started\n"
            sleeper.send_signal(signal.SIGINT)
            assert sleeper.wait(30) == 130
    finally:
        assert colinux.run("stop", "deb").returncode == 0


# --- disk safety on small images (the default guest) ----------------------------------


def data_image(path: Path, size: str = "64M") -> Path:
    subprocess.run(["mke2fs", "-q", "-t", "ext4", str(path), size], check=True)
    return path


def test_a_writable_image_has_one_guest(colinux: Colinux, tmp_path: Path) -> None:
    disk = data_image(tmp_path / "data.img")
    result = colinux.run("start", "holder", f"cobd1={disk}")
    assert result.returncode == 0, result.stderr
    try:
        for settings in ([f"cobd1={disk}"], [f"cobd1={disk},ro"]):
            second = colinux.run("run", *settings, "--", "true")
            assert second.returncode == 2, second.stderr
            message = second.stderr.decode()
            assert message.count("\n") == 1, message
            assert str(disk) in message and "in use by guest 'holder'" in message
        # Nothing of the refused guests started.
        assert [
            line.split()[0] for line in colinux.run("list").stdout.split(b"\n")[1:] if line
        ] == [b"holder"]
    finally:
        colinux.run("stop", "holder")
    assert colinux.run("run", f"cobd1={disk}", "--", "true").returncode == 0


def test_read_only_images_are_shared_and_stay_unchanged(colinux: Colinux, tmp_path: Path) -> None:
    disk = data_image(tmp_path / "data.img")
    before = sha256(disk)
    result = colinux.run("start", "reader", f"cobd1={disk},ro")
    assert result.returncode == 0, result.stderr
    try:
        probe = colinux.run(
            "run", f"cobd1={disk},ro", "--", "sh", "-c",
            "cat /sys/block/ubda/ro; mount -o ro /dev/cobd1 /mnt; "
            "touch /mnt/x 2>/dev/null || echo refused",
        )  # fmt: skip
        assert probe.returncode == 0, probe.stderr
        assert probe.stdout.split() == [b"1", b"refused"]
        writer = colinux.run("run", f"cobd1={disk}", "--", "true")
        assert writer.returncode == 2
        assert b"in use by guest 'reader'" in writer.stderr
    finally:
        colinux.run("stop", "reader")
    assert sha256(disk) == before


def test_sigkill_during_heavy_writes_then_fsck(colinux: Colinux, tmp_path: Path) -> None:
    disk = data_image(tmp_path / "data.img", "256M")
    daemon = colinux.popen(
        "run", "--name", "writer", f"cobd1={disk}", "--", "sh", "-c",
        "mount /dev/cobd1 /mnt && echo mounted && i=0; "
        "while :; do dd if=/dev/urandom of=/mnt/f$i bs=64k count=64 2>/dev/null; "
        "i=$((i+1)); done",
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert daemon.stdout is not None
        assert daemon.stdout.readline() == b"mounted\n"
        # Kill once the guest has written for real: 24 MB of the image in use.
        assert wait_until(lambda: disk.stat().st_blocks * 512 > 24 << 20, 120, 0.1)
    finally:
        daemon.send_signal(signal.SIGKILL)
        daemon.wait()
    assert wait_until(lambda: not processes_mentioning("umid=writer"), 20)
    # A killed daemon cannot tidy up after itself; its run directory is stale.
    shutil.rmtree(colinux.run_dir / "writer")
    repair = subprocess.run(["e2fsck", "-fy", str(disk)], capture_output=True)
    assert repair.returncode in (0, 1), repair.stdout  # clean, or errors corrected
    assert fsck_clean(disk).returncode == 0
    mounted = colinux.run(
        "run", f"cobd1={disk}", "--", "sh", "-c", "mount /dev/cobd1 /mnt && ls /mnt | grep -c f"
    )
    assert mounted.returncode == 0, mounted.stderr
    assert int(mounted.stdout) >= 1


def test_cow_on_a_busybox_guest(colinux: Colinux, tmp_path: Path) -> None:
    disk = data_image(tmp_path / "data.img")
    before = sha256(disk)
    cow = tmp_path / "data.cow"
    write = colinux.run(
        "run", f"cobd1={disk},cow={cow}", "--", "sh", "-c",
        "mount /dev/cobd1 /mnt && echo hello >/mnt/greeting && umount /mnt",
    )  # fmt: skip
    assert write.returncode == 0, write.stderr
    assert sha256(disk) == before
    again = colinux.run(
        "run", f"cobd1={disk},cow={cow}", "--", "sh", "-c",
        "mount /dev/cobd1 /mnt && cat /mnt/greeting",
    )  # fmt: skip
    assert again.stdout == b"hello\n", again.stderr
    # Not while a guest uses the COW file.
    assert colinux.run("start", "user", f"cobd1={disk},cow={cow}").returncode == 0
    try:
        busy = colinux.run("image", "commit", str(cow))
        assert busy.returncode == 2
        assert b"in use by guest 'user'" in busy.stderr
    finally:
        colinux.run("stop", "user")
    assert sha256(disk) == before
    assert colinux.run("image", "commit", str(cow)).returncode == 0
    plain = colinux.run(
        "run", f"cobd1={disk}", "--", "sh", "-c", "mount /dev/cobd1 /mnt && cat /mnt/greeting"
    )
    assert plain.stdout == b"hello\n", plain.stderr


# --- bad input: one line, exit 2, nothing made ----------------------------------------


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["root", "r.img", "--size", "100M"], "--size 100M: too small"),
        (
            ["root", "r.img", "--size", "1G", "--suite", "bookwrom"],
            "--suite bookwrom: not a Debian",
        ),
        (["root", "r.img", "--size", "lots"], "--size lots: expected a size"),
        (["root", "exists.img", "--size", "1G"], "exists.img: already exists"),
        (["root", "r.img", "--size", "1G", "--ssh-key", "nokey.pub"], "--ssh-key nokey.pub"),
        (["swap", "s.img", "--size", "1K"], "too small for swap"),
        (["swap", "exists.img", "--size", "1M"], "exists.img: already exists"),
        (["commit", "exists.img"], "not a usable COW file"),
        (["commit", "missing.cow"], "missing.cow"),
    ],
)
def test_bad_image_requests(colinux: Colinux, args: list[str], expected: str) -> None:
    (colinux.cwd / "exists.img").write_bytes(b"\0" * 8192)
    result = colinux.run("image", *args)
    assert result.returncode == 2, result.stdout
    message = result.stderr.decode()
    assert message.count("\n") == 1, message
    assert expected in message
    assert sorted(p.name for p in colinux.cwd.iterdir()) == ["exists.img"]


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ('cobd0="data.img",bogus', "unknown option 'bogus'"),
        ("cobd0=data.img,bogus", "data.img,bogus' does not exist"),  # a path with a comma
        ("cobd0=data.img,ro,cow=x.cow", "do not go together"),
        ("cobd0=data.img,cow=/no/such/dir/x.cow", "does not exist"),
        ("cobd0=data.img,cow=data.img", "not a usable COW file"),
    ],
)
def test_bad_disk_settings(colinux: Colinux, setting: str, expected: str) -> None:
    data_image(colinux.cwd / "data.img", "4M")
    result = colinux.run("run", setting, "--", "true")
    assert result.returncode == 2
    message = result.stderr.decode()
    assert message.count("\n") == 1, message
    assert expected in message
    assert sorted(p.name for p in colinux.cwd.iterdir()) == ["data.img"]


def test_disk_options_convert_both_ways(colinux: Colinux, tmp_path: Path) -> None:
    conf = tmp_path / "disks.conf"
    conf.write_text('cobd0=base.img,cow=guest.cow cobd1=data.img,ro cobd2="odd,name.img",ro\n')
    xml = colinux.run("config", "convert", str(conf), "--to", "xml")
    assert xml.returncode == 0, xml.stderr
    text = xml.stdout.decode()
    assert 'cow="guest.cow"' in text and 'readonly="true"' in text
    (tmp_path / "disks.xml").write_text(text)
    back = colinux.run("config", "convert", str(tmp_path / "disks.xml"), "--to", "cmdline")
    assert shlex.split(back.stdout.decode())[1:] == [
        "cobd0=base.img,cow=guest.cow",
        "cobd1=data.img,ro",
        'cobd2="odd,name.img",ro',
    ]


# --- as an ordinary user --------------------------------------------------------------


def test_ordinary_user_makes_swap_and_reads_a_root_owned_image(
    ordinary_user: OrdinaryUser,
) -> None:
    if os.getuid() != 0:
        pytest.skip("runs a second user through runuser, as root")
    disk = data_image(ordinary_user.top / "root-owned.img", "8M")
    disk.chmod(0o644)  # root's, readable by all
    swap = ordinary_user.run("image", "swap", "swap.img", "--size", "16M", timeout=120)
    assert swap.returncode == 0, swap.stderr
    assert (ordinary_user.work / "swap.img").stat().st_uid == ordinary_user.uid
    ro = ordinary_user.run(
        "run", "--no-share", f"cobd1={disk},ro", "--", "sh", "-c",
        "mount -o ro /dev/cobd1 /mnt && echo readable", timeout=120,
    )  # fmt: skip
    assert ro.returncode == 0, ro.stderr
    assert ro.stdout == b"readable\n"
    rw = ordinary_user.run("run", "--no-share", f"cobd1={disk}", "--", "true", timeout=120)
    assert rw.returncode == 2
    assert b"not writable (add ,ro" in rw.stderr
    cow = ordinary_user.run(
        "run", "--no-share", f"cobd1={disk},cow=mine.cow", "--", "sh", "-c",
        "mount /dev/cobd1 /mnt && touch /mnt/mine && echo written", timeout=120,
    )  # fmt: skip
    assert cow.returncode == 0, cow.stderr
    assert cow.stdout == b"written\n"


def test_ordinary_user_builds_a_root_image(ordinary_user: OrdinaryUser) -> None:
    # mmdebstrap --mode=unshare: a user namespace mapped onto the user's
    # subordinate ids, which the test user gets here if it has none.
    if os.getuid() != 0:
        pytest.skip("runs a second user through runuser, as root")
    for table in ("/etc/subuid", "/etc/subgid"):
        Path(table).touch(0o644)  # a fresh system may have neither
    if f"{TEST_USER}:" not in Path("/etc/subuid").read_text(errors="replace"):
        subprocess.run(
            ["usermod", "--add-subuids", "300000-365535", "--add-subgids", "300000-365535",
             TEST_USER],
            check=True,
        )  # fmt: skip
    result = ordinary_user.run("image", "root", "user.img", "--size", "1G", timeout=1200)
    assert result.returncode == 0, result.stdout + result.stderr
    assert b"unshare" in result.stdout
    # Not a terminal: plain lines, a few per phase, with packages and bytes.
    out = result.stdout.decode()
    assert "downloading Debian packages" in out and " MB" in out, out
    assert "installing:" in out and "packages" in out and "\x1b" not in out, out
    image = ordinary_user.work / "user.img"
    assert image.stat().st_uid == ordinary_user.uid
    assert sorted(p.name for p in ordinary_user.work.iterdir()) == ["user.img"]  # nothing left over
    assert fsck_clean(image).returncode == 0
    # Inside, the files are root's as in Debian: passwd is setuid root.
    stat = subprocess.run(
        ["debugfs", "-R", "stat /usr/bin/passwd", str(image)], capture_output=True, check=True
    ).stdout.decode()
    assert "Mode:  04755" in stat and "User:     0   Group:     0" in stat
