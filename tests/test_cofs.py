"""cofs in real guests: the seed's mount forms, the flat view, names, confinement.

Each test boots one default guest with `colinux run` and does all its
checks in one guest command, to keep the suite fast.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import Colinux, wait_until

SECRET = b"host secret, not for the guest\n"


def run_sh(colinux: Colinux, script: str, *settings: str, cwd: Path | None = None):  # type: ignore[no-untyped-def]
    args = ["run", *settings, "--", "sh", "-c", script]
    return colinux.run(*args, **({"cwd": cwd} if cwd else {}))


def test_the_seeds_mount_forms_and_fstab_line(colinux: Colinux, tmp_path: Path) -> None:
    share = tmp_path / "c"
    (share / "Share").mkdir(parents=True)
    (share / "Share" / "inside.txt").write_bytes(b"from the host\n")
    (share / "top.txt").write_bytes(b"top\n")
    script = r"""
    set -e
    echo 'dax:x:1234:1234::/tmp:/bin/sh' >> /etc/passwd
    echo 'dax:x:1234:' >> /etc/group
    mkdir -p /mnt/windows /mnt/w1 /mnt/w2 /mnt/w3
    mount -t cofs 0 /mnt/w1
    mount -t cofs cofs0 -o uid=dax,gid=dax /mnt/w2
    mount -t cofs cofs0:Share -o uid=dax,gid=dax,dmask=0700,fmask=0700 /mnt/w3
    echo 'cofs0:Share /mnt/windows cofs defaults 0 0' >> /etc/fstab
    mount -a
    stat -c '%n %u %g %a' /mnt/w1 /mnt/w1/top.txt /mnt/w2 /mnt/w2/top.txt /mnt/w3 \
        /mnt/w3/inside.txt /mnt/windows/inside.txt
    cat /mnt/windows/inside.txt
    su dax -c 'echo by-dax > /mnt/w3/dax.txt'
    su dax -c 'cat /mnt/w1/Share/dax.txt' && echo dax-read-w1 || echo dax-denied-w1
    mkdir /mnt/ro && mount -t cofs -o ro cofs0 /mnt/ro
    touch /mnt/ro/new 2>/dev/null || echo ro-refused
    mount -t cofs 31 /mnt/w1 2>&1 || echo no-share-31
    """
    result = run_sh(colinux, script, f"cofs0={share}", "--no-share")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.decode().splitlines()
    assert lines[:7] == [
        "/mnt/w1 0 0 755",
        "/mnt/w1/top.txt 0 0 755",
        "/mnt/w2 1234 1234 755",
        "/mnt/w2/top.txt 1234 1234 755",
        "/mnt/w3 1234 1234 700",
        "/mnt/w3/inside.txt 1234 1234 700",
        "/mnt/windows/inside.txt 0 0 755",
    ]
    assert lines[7] == "from the host"
    # dax may write in its view; in the root-owned 0755 view it may read.
    assert (share / "Share" / "dax.txt").read_bytes() == b"by-dax\n"
    assert lines[8] == "by-dax" and lines[9] == "dax-read-w1"
    assert "ro-refused" in lines and not (share / "new").exists()
    assert "no-share-31" in lines[-1] or b"cofs31" in result.stderr


def test_flat_view_and_names(colinux: Colinux, tmp_path: Path) -> None:
    share = tmp_path / "share"
    share.mkdir()
    names = ["日本語のファイル.txt", "𠮷野家", "a*b?c", "space name"]
    script = r"""
    cd /mnt/cofs0
    for n in '日本語のファイル.txt' '𠮷野家' 'a*b?c' 'space name'; do printf '%s' "$n" > "$n"; done
    mkdir 'ディレクトリ' && mv '𠮷野家' 'ディレクトリ/𠮷野家-moved'
    rm 'space name'
    ls -1 | od -An -c | tr -d ' \n'; echo
    chmod 600 'a*b?c' && echo chmod-ok
    chown 5:5 'a*b?c' && echo chown-ok
    stat -c '%u %g %a' 'a*b?c'
    ln -s target link 2>/dev/null || echo symlink-EPERM
    mkfifo fifo 2>/dev/null || echo fifo-EPERM
    mknod dev c 1 3 2>/dev/null || echo mknod-EPERM
    dd if=/dev/zero of=big bs=64k count=40 2>/dev/null
    cmp big /dev/zero 2>&1 | grep -q EOF && echo big-ok
    truncate -s 100 big && stat -c '%s' big
    echo longer-text > t && echo s > t && echo more >> t && tr '\n' + < t; echo
    cp /bin/busybox busybox && ./busybox echo exec-ok && rm busybox  # mmap of its pages
    dd if=/dev/zero of=sparse bs=1 count=1 seek=5G 2>/dev/null && stat -c '%s' sparse
    dd if=sparse bs=1 skip=5G 2>/dev/null | od -An -tx1
    df -P . | tail -1 | awk '{ print ($2 > 0) ? "statfs-ok" : "statfs-bad" }'
    """
    result = run_sh(colinux, script, cwd=share)
    assert result.returncode == 0, result.stderr
    out = result.stdout.decode().splitlines()
    assert "chmod-ok" in out and "chown-ok" in out
    assert "0 0 755" in out  # chmod/chown did not persist
    assert {"symlink-EPERM", "fifo-EPERM", "mknod-EPERM", "big-ok", "100", "statfs-ok"} <= set(out)
    assert "s+more+" in out and "exec-ok" in out  # O_TRUNC and O_APPEND; mmap
    assert "5368709121" in out and " 00" in out  # over 4 GiB, and sparse on the host:
    assert (share / "sparse").stat().st_blocks < 64
    (share / "sparse").unlink()
    on_host = sorted(os.listdir(share))
    assert on_host == sorted(["日本語のファイル.txt", "a*b?c", "ディレクトリ", "big", "t"])
    assert os.listdir(share / "ディレクトリ") == ["𠮷野家-moved"]
    for name in names[:1]:
        assert (share / name).read_bytes() == name.encode()  # byte for byte
    assert (share / "ディレクトリ" / "𠮷野家-moved").read_bytes() == "𠮷野家".encode()


def test_escapes_find_nothing_outside(colinux: Colinux, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "secret"
    secret.write_bytes(SECRET)
    os.utime(secret, (1_000_000_000, 1_000_000_000))
    share = tmp_path / "share"
    (share / "sub").mkdir(parents=True)
    os.symlink(str(secret), share / "abs")
    os.symlink("../outside/secret", share / "rel")
    os.symlink("../../outside", share / "sub" / "up")
    script = r"""
    cd /mnt/cofs0
    cat abs rel sub/up/secret ../outside/secret 2>/dev/null
    echo pwn > abs 2>/dev/null; echo pwn > rel 2>/dev/null; echo pwn > sub/up/secret 2>/dev/null
    ls -a /mnt/cofs0/.. /mnt/cofs0/../.. 2>/dev/null | grep -c outside
    for spec in 'cofs0:..' 'cofs0:../outside' 'cofs0:sub/up' 'cofs0:/..' 'cofs0:abs'; do
        mkdir -p /mnt/e && mount -t cofs "$spec" /mnt/e 2>/dev/null && ls -a /mnt/e && umount /mnt/e
    done
    cat '/run/cofs/0/.cofs-view:uid=0,gid=0,dmode=755,fmode=755/../secret' 2>/dev/null
    ls -a /run/cofs/0 | grep -c cofs-view
    echo done
    """
    result = run_sh(colinux, script, cwd=share)
    assert result.returncode == 0, result.stderr
    assert SECRET.strip() not in result.stdout + result.stderr
    assert b"secret" not in result.stdout
    assert result.stdout.split()[-1] == b"done"
    assert secret.read_bytes() == SECRET
    assert secret.stat().st_mtime == 1_000_000_000
    assert sorted(os.listdir(outside)) == ["secret"]
    assert os.readlink(share / "abs") == str(secret)  # the links are still links


def test_read_only_share_and_no_share(colinux: Colinux, tmp_path: Path) -> None:
    share = tmp_path / "ro"
    share.mkdir()
    (share / "f").write_bytes(b"keep\n")
    script = r"""
    mkdir -p /mnt/r && mount -t cofs cofs0 /mnt/r
    cat /mnt/r/f
    echo x > /mnt/r/f 2>/dev/null || echo write-refused
    touch /mnt/r/new 2>/dev/null || echo create-refused
    rm /mnt/r/f 2>/dev/null || echo unlink-refused
    """
    result = run_sh(colinux, script, f"cofs0={share},ro")
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().split() == [
        "keep", "write-refused", "create-refused", "unlink-refused"
    ]  # fmt: skip
    assert os.listdir(share) == ["f"] and (share / "f").read_bytes() == b"keep\n"

    # `colinux run` shares its directory at /mnt/cofs0 and starts there; --no-share does not.
    work = tmp_path / "here"
    work.mkdir()
    shared = run_sh(colinux, "pwd; echo made > here.txt", cwd=work)
    assert shared.returncode == 0, shared.stderr
    assert shared.stdout == b"/mnt/cofs0\n"
    assert (work / "here.txt").read_bytes() == b"made\n"
    alone = run_sh(colinux, "pwd; ls /mnt", "--no-share", cwd=work)
    assert alone.stdout == b"/root\n"


def test_meta_mode_keeps_unix_metadata_on_the_host(colinux: Colinux, tmp_path: Path) -> None:
    share = tmp_path / "meta"
    share.mkdir()
    (share / "from-host").write_bytes(b"host\n")
    script = r"""
    mkdir -p /mnt/m && mount -t cofs cofs0 /mnt/m && cd /mnt/m
    echo hi > f && chown 12:34 f && chmod 4750 f
    ln f hard && mv f g && ln -s g link && ln -s /etc/passwd abs
    mknod null c 1 3 && mkfifo fifo && mkdir -m 700 d && chown 5:6 d
    stat -c '%n %F %a %u %g' g hard link null fifo d from-host
    cat link; readlink abs; echo gone > null; cat null; echo end
    """
    result = run_sh(colinux, script, f"cofs0={share},meta", "--no-share")
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().splitlines() == [
        "g regular file 4750 12 34",
        "hard regular file 4750 12 34",  # a hard link shares the metadata
        "link symbolic link 777 0 0",
        "null character special file 644 0 0",
        "fifo fifo 644 0 0",
        "d directory 700 5 6",
        "from-host regular file 644 0 0",
        "hi",
        "/etc/passwd",
        "end",
    ]
    # On the host: plain files owned by us; the guest's view is in one xattr.
    assert sorted(os.listdir(share)) == [
        "abs",
        "d",
        "fifo",
        "from-host",
        "g",
        "hard",
        "link",
        "null",
    ]
    assert (share / "link").read_bytes() == b"g" and (share / "null").read_bytes() == b""
    assert os.getxattr(share / "g", "user.cofs.meta")[:4] == b"cfs1"
    assert not (share / "abs").is_symlink()


def test_boot_with_root_on_a_meta_share(colinux: Colinux, tmp_path: Path) -> None:
    root = tmp_path / "rootfs"
    subprocess.run([sys.executable, "-m", "colinux.cofs.populate", str(root)], check=True,
                   capture_output=True)  # fmt: skip
    script = "grep ' / ' /proc/mounts; stat -c '%F %a' /bin/sh /dev/console; echo made > /root/f"
    result = run_sh(colinux, script, f"cofs0={root},meta", "root=cofs0", "rw", "--no-share")
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().splitlines() == [
        "cofs0 / virtiofs rw,relatime 0 0",
        "symbolic link 777",
        "character special file 600",
    ]
    assert (root / "root" / "f").read_bytes() == b"made\n"
    assert not (root / "bin" / "sh").is_symlink()  # on the host, metadata lives in xattrs


def test_host_and_guest_see_each_others_changes(colinux: Colinux, tmp_path: Path) -> None:
    """What the guest cached of a file (its data, its name, a symlink) gives way within
    1 s to a host rewrite, rename, delete or new symlink; a guest's write is on the host
    once the writing command has closed it."""
    share = tmp_path / "both"
    share.mkdir()
    (share / "f").write_bytes(b"first version\n")
    (share / "old-name").write_bytes(b"renamed\n")
    (share / "doomed").write_bytes(b"doomed\n")
    os.symlink("first-target", share / "link")
    script = r"""
    cat f; readlink link; cat old-name doomed >/dev/null; echo from-guest > g
    while [ ! -e go ]; do usleep 50000; done
    usleep 1500000   # names and attributes are cached for 1 s
    cat f; readlink link; ls; cat doomed 2>/dev/null || echo doomed-gone
    """
    guest = colinux.popen("run", "--", "sh", "-c", script, cwd=share,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    try:
        assert guest.stdout is not None
        assert guest.stdout.readline() == b"first version\n"
        assert guest.stdout.readline() == b"first-target\n"
        assert wait_until(lambda: (share / "g").exists(), 10)
        assert (share / "g").read_bytes() == b"from-guest\n"  # written through at once
        (share / "f").write_bytes(b"second version, longer\n")
        (share / "new-on-host").write_bytes(b"")
        (share / "link").unlink()
        os.symlink("second-target", share / "link")  # symlinks are cached in the guest
        (share / "old-name").rename(share / "new-name")
        (share / "doomed").unlink()
        (share / "go").write_bytes(b"")
        out, err = guest.communicate(timeout=60)
    finally:
        if guest.poll() is None:
            guest.kill()
    assert guest.returncode == 0, err
    assert out.decode().split("\n")[:2] == ["second version, longer", "second-target"]
    words = out.decode().split()
    assert "new-on-host" in words and "new-name" in words and words[-1] == "doomed-gone"
    assert "old-name" not in words and "doomed" not in words


@pytest.mark.parametrize("mode", ["flat", "meta"])
def test_what_fsync_acknowledged_survives_a_guest_crash(
    colinux: Colinux, tmp_path: Path, mode: str
) -> None:
    """A file fsync'ed in the guest is whole on the host after the guest kernel panics
    at once (sysrq c): cofs writes through, and FSYNC syncs the host file."""
    share = tmp_path / "share"
    share.mkdir()
    script = r"""
    mkdir -p /mnt/m && mount -t cofs cofs0 /mnt/m && cd /mnt/m
    head -c 1048576 /dev/zero | tr '\0' x > /tmp/data
    dd if=/tmp/data of=synced bs=4096 conv=fsync 2>/dev/null
    echo c > /proc/sysrq-trigger
    echo survived
    """
    result = run_sh(colinux, script, f"cofs0={share},{mode}", "--no-share", "mem=128")
    assert b"survived" not in result.stdout
    assert (share / "synced").read_bytes() == b"x" * 1048576


def test_100k_files_in_one_directory_and_guest_links(colinux: Colinux, tmp_path: Path) -> None:
    """A directory of 100k files lists whole in the guest; a guest's hard link is to a file
    it reached inside the share (host symlinks out of it are refused as link sources)."""
    share = tmp_path / "share"
    many = share / "many"
    many.mkdir(parents=True)
    for i in range(100_000):
        os.close(os.open(many / f"f{i}", os.O_CREAT | os.O_WRONLY, 0o644))
    (tmp_path / "secret").write_bytes(SECRET)
    os.symlink(str(tmp_path / "secret"), share / "abs")
    script = r"""
    mkdir -p /mnt/m && mount -t cofs cofs0 /mnt/m && cd /mnt/m
    echo new > many/g && ls -a many | wc -l
    ls -l many/f99999 | awk '{ print $5 }'
    ln abs hard 2>/dev/null || echo link-refused
    ln many/g many/h && cat many/h
    """
    result = run_sh(colinux, script, f"cofs0={share},meta", "--no-share", "mem=256")
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().split() == ["100003", "0", "link-refused", "new"]
    assert not (share / "hard").exists() and (tmp_path / "secret").stat().st_nlink == 1
    assert os.path.samefile(many / "g", many / "h")


LONG_NAME_OPS = ["touch", "mkdir", "mv-to", "mv-from", "ln-s", "ln", "rm", "rmdir", "chmod",
                 "chown", "truncate", "cat", "mkfifo"]  # fmt: skip


@pytest.mark.parametrize("mode", ["flat", "meta"])
def test_names_longer_than_255_bytes(colinux: Colinux, tmp_path: Path, mode: str) -> None:
    """A 255-byte name (NAME_MAX) is made; a 256-byte one is "File name too long" in every
    command, as the last component and in the middle of a path, as on the guest's own
    tmpfs; and the daemon does not warn of a malformed request (it said EINVAL and did)."""
    share = tmp_path / "share"
    share.mkdir()
    script = r"""
    set -u
    l255=$(printf '%0255d' 0 | tr 0 a); m255=$(printf '%0255d' 0 | tr 0 m)
    n255=$(printf '%0255d' 0 | tr 0 n); l256=$(printf '%0256d' 0 | tr 0 z)
    try() {  # LABEL COMMAND...: LABEL ok | ENAMETOOLONG | the error
        label=$1; shift
        if out=$("$@" 2>&1); then echo "$label ok"
        else case $out in
            *"File name too long"*) echo "$label ENAMETOOLONG" ;;
            *) echo "$label error: $out" | sed 's/\([azmn]\)\1\{254,\}/<\1...>/g' ;;
        esac fi
    }
    names() {
        try touch255 touch "$l255"; try mkdir255 mkdir "$m255"; try inside255 touch "$m255/x"
        for p in "last $l256" "mid $l256/x"; do
            at=${p%% *}; p=${p#* }
            try $at-touch touch "$p"; try $at-mkdir mkdir "$p"
            try $at-mv-to mv "$l255" "$p"; try $at-mv-from mv "$p" y
            try $at-ln-s ln -s t "$p"; try $at-ln ln "$l255" "$p"
            try $at-rm rm "$p"; try $at-rmdir rmdir "$p"
            try $at-chmod chmod 644 "$p"; try $at-chown chown 1:1 "$p"
            try $at-truncate truncate -s 0 "$p"; try $at-cat cat "$p"; try $at-mkfifo mkfifo "$p"
        done
        try mv255 mv "$l255" "$n255"; try chmod255 chmod 600 "$n255"
    }
    stat -f -c 'tmp %T' /tmp
    mkdir /tmp/names && cd /tmp/names && names | sed 's/^/tmp /'
    mkdir -p /mnt/s && mount -t cofs cofs0 /mnt/s && cd /mnt/s && names | sed 's/^/cofs /'
    """
    settings = [f"cofs0={share}" + (",meta" if mode == "meta" else ""), "--no-share"]
    result = run_sh(colinux, script, *settings)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.decode().splitlines()
    assert lines[0] == "tmp tmpfs"
    expected = ["touch255 ok", "mkdir255 ok", "inside255 ok"]
    expected += [f"{at}-{op} ENAMETOOLONG" for at in ("last", "mid") for op in LONG_NAME_OPS]
    expected += ["mv255 ok", "chmod255 ok"]
    on_tmpfs = [line[4:] for line in lines if line.startswith("tmp ")][1:]
    on_cofs = [line[5:] for line in lines if line.startswith("cofs ")]
    assert on_tmpfs == expected
    assert on_cofs == on_tmpfs
    assert b"refused" not in result.stderr and b"bad file name" not in result.stderr
    assert sorted(os.listdir(share)) == ["m" * 255, "n" * 255]  # nothing else was made
    assert os.listdir(share / ("m" * 255)) == ["x"]
