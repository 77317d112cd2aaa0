"""Host meaning of configuration paths, and the checks (colinux.config.paths)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from seed_config import SEED_WORDS, SEED_XML

from colinux.checks import check_machine
from colinux.config.cmdline import parse_cmdline
from colinux.config.model import (
    BlockDevice,
    CofsShare,
    HostPath,
    Machine,
    NetworkCard,
    NetworkType,
)
from colinux.config.paths import DriveMap, resolve_machine, resolve_path
from colinux.config.xml import parse_xml
from colinux.errors import UserError


@pytest.fixture
def drive_c(tmp_path: Path) -> Path:
    directory = tmp_path / "c"
    (directory / "coLinux").mkdir(parents=True)
    return directory


def resolve(raw: str, drives: DriveMap, base_dir: str = "/base") -> str:
    return resolve_path(raw, drives=drives, base_dir=base_dir, what="cobd0 (my.xml)")


def resolve_error(raw: str, drives: DriveMap, base_dir: str = "/base") -> str:
    with pytest.raises(UserError) as caught:
        resolve(raw, drives, base_dir)
    return str(caught.value)


# --- DriveMap -------------------------------------------------------------------------


def test_drive_map_from_sources(tmp_path: Path) -> None:
    drives = DriveMap.from_sources(
        ["c=/srv/c", "D:=/srv/d"],
        {
            "COLINUX_DRIVE_C": "/env/c",
            "COLINUX_DRIVE_e": "/env/e",
            "COLINUX_DRIVE_F": "",
            "HOME": "/h",
        },
    )
    assert drives.items() == [("C", "/srv/c"), ("D", "/srv/d"), ("E", "/env/e")]
    assert drives.get("c") == drives.get("C") == "/srv/c"  # options win over the environment
    assert "d" in drives and "F" not in drives
    assert list(drives) == ["C", "D", "E"] and len(drives) == 3


def test_drive_map_normalises_directories(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", "/home/me")
    drives = DriveMap.from_sources(["c=win/c/", "d=~/d", "e=/a/../b"], {})
    assert drives.get("c") == str(tmp_path / "win" / "c")
    assert drives.get("d") == "/home/me/d"
    assert drives.get("e") == "/b"
    assert drives == DriveMap({"C": str(tmp_path / "win/c"), "d": "/home/me/d", "E": "/b"})


@pytest.mark.parametrize("arg", ["c", "c=", "=/x", "cd=/x", "1=/x", "c/x"])
def test_drive_map_malformed_option(arg: str) -> None:
    with pytest.raises(UserError) as caught:
        DriveMap.from_sources([arg], {})
    assert str(caught.value) == f"--drive {arg}: expected LETTER=DIR, e.g. --drive c=/srv/windows-c"


def test_drive_map_ignores_other_variables() -> None:
    assert len(DriveMap.from_sources([], {"COLINUX_DRIVE_CC": "/x", "COLINUX_DRIVE_": "/y"})) == 0


# --- resolve_path ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (r"\DosDevices\c:\coLinux\root.img", "/srv/c/coLinux/root.img"),
        (r"\dosdevices\C:\coLinux\root.img", "/srv/c/coLinux/root.img"),
        (r"\??\c:\x", "/srv/c/x"),
        (r"\\?\c:\x", "/srv/c/x"),
        (r"c:\coLinux\root.img", "/srv/c/coLinux/root.img"),
        ("c:/x/./y//z", "/srv/c/x/y/z"),
        ("c:\\", "/srv/c"),
        ("C:", "/srv/c"),
        ("c:x", "/srv/c/x"),
        (r"c:\a\..\b", "/srv/c/b"),
        (r"c:\My Documents\日本語", "/srv/c/My Documents/日本語"),
    ],
)
def test_drive_paths(raw: str, expected: str) -> None:
    assert resolve(raw, DriveMap({"c": "/srv/c"})) == expected


def test_unmapped_drive_says_how_to_map_it() -> None:
    message = resolve_error(r"\DosDevices\c:\coLinux\root.img", DriveMap({"d": "/srv/d"}))
    assert message == (
        r"cobd0 (my.xml): path '\DosDevices\c:\coLinux\root.img' uses drive C:, which has "
        "no mapping; add --drive c=DIR or set COLINUX_DRIVE_C=DIR"
    )


def test_dot_dot_cannot_climb_out_of_a_drive() -> None:
    message = resolve_error(r"c:\a\..\..\etc\passwd", DriveMap({"c": "/srv/c"}))
    assert message == (
        r"cobd0 (my.xml): path 'c:\a\..\..\etc\passwd' climbs above drive C: "
        "(mapped to /srv/c) with '..'"
    )


def test_paths_without_host_meaning() -> None:
    assert "Windows network (UNC) path" in resolve_error(r"\\server\share\x", DriveMap())
    assert resolve_error(r"\coLinux\root.img", DriveMap()) == (
        r"cobd0 (my.xml): path '\coLinux\root.img' has no drive letter; write it as "
        r"c:\coLinux\root.img (with --drive c=DIR) or as a host path"
    )
    assert resolve_error("", DriveMap()) == "cobd0 (my.xml): the path is empty"


def test_host_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", "/home/me")
    drives = DriveMap()
    assert resolve("root.img", drives) == "/base/root.img"
    assert resolve("../images/./root.img", drives) == "/images/root.img"  # may leave base_dir
    assert resolve(r"images\root.img", drives) == "/base/images/root.img"
    assert resolve("/abs//x/", drives) == "/abs/x"
    assert resolve("~/root.img", drives) == "/home/me/root.img"
    assert resolve("root.img", drives, base_dir="rel") == os.path.join(os.getcwd(), "rel/root.img")


# --- resolve_machine / check_machine --------------------------------------------------


def test_seed_xml_and_seed_command_line_mean_the_same_machine(drive_c: Path) -> None:
    """The seed's two forms, read on a Linux host with C: mapped, are one machine."""
    drives = DriveMap.from_sources([f"c={drive_c}"], {})
    from_xml = parse_xml(SEED_XML, source=str(drive_c / "coLinux/my.colinux.xml"), warn=print)
    from_line = parse_cmdline(SEED_WORDS)
    config_dir = str(drive_c / "coLinux")  # the seed runs the daemon from C:\coLinux
    xml_resolved = resolve_machine(from_xml, drives=drives, base_dir=config_dir)
    line_resolved = resolve_machine(from_line, drives=drives, base_dir=config_dir)
    assert _hosts(xml_resolved) == _hosts(line_resolved)
    assert xml_resolved.block_devices[0].path.host == str(drive_c / "coLinux/root.img")
    assert xml_resolved.cofs[0].path.host == str(drive_c)
    assert xml_resolved.kernel == HostPath("vmlinux", str(drive_c / "coLinux/vmlinux"))
    for name in ("root.img", "swap.img", "vmlinux", "initrd.gz"):
        (drive_c / "coLinux" / name).write_bytes(b"x")
    check_machine(xml_resolved)
    check_machine(line_resolved)


def _hosts(machine: Machine) -> Machine:
    """The machine with raw paths replaced by host paths, to compare meanings."""

    def host(path: HostPath) -> HostPath:
        return HostPath(str(path.host))

    return Machine(
        kernel=host(machine.kernel) if machine.kernel else None,
        memory_mb=machine.memory_mb,
        initrd=host(machine.initrd) if machine.initrd else None,
        bootparams=machine.bootparams,
        block_devices=tuple(
            BlockDevice(d.index, host(d.path), d.alias, d.enabled) for d in machine.block_devices
        ),
        cofs=tuple(
            CofsShare(s.index, host(s.path), s.type, s.readonly, s.enabled) for s in machine.cofs
        ),
        networks=machine.networks,
    )


def test_resolve_machine_keeps_no_kernel_and_tolerates_disabled(tmp_path: Path) -> None:
    machine = Machine(
        block_devices=(
            BlockDevice(0, HostPath("root.img")),
            BlockDevice(1, HostPath(r"z:\gone.img"), enabled=False),
        ),
        cofs=(CofsShare(0, HostPath(r"z:\share"), enabled=False),),
        source="my.xml",
    )
    resolved = resolve_machine(machine, drives=DriveMap(), base_dir=str(tmp_path))
    assert resolved.kernel is None and resolved.initrd is None
    assert resolved.block_devices[0].path.host == str(tmp_path / "root.img")
    assert resolved.block_devices[1].path == HostPath(r"z:\gone.img")
    assert resolved.cofs[0].path == HostPath(r"z:\share")
    assert resolved.source == "my.xml"


def test_resolve_machine_names_the_setting_and_file() -> None:
    machine = Machine(cofs=(CofsShare(3, HostPath("\\DosDevices\\d:\\")),), source="my.xml")
    with pytest.raises(UserError, match=r"^cofs3 \(my\.xml\): path .* uses drive D:"):
        resolve_machine(machine, drives=DriveMap(), base_dir="/")


def _resolved(tmp_path: Path, **fields: object) -> Machine:
    return resolve_machine(Machine(**fields), drives=DriveMap(), base_dir=str(tmp_path))  # type: ignore[arg-type]


def check_error(machine: Machine) -> str:
    with pytest.raises(UserError) as caught:
        check_machine(machine)
    return str(caught.value)


def test_check_machine_passes_a_good_machine(tmp_path: Path) -> None:
    for name in ("root.img", "vmlinux", "initrd.gz"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "share").mkdir()
    machine = _resolved(
        tmp_path,
        kernel=HostPath("vmlinux"),
        initrd=HostPath("initrd.gz"),
        block_devices=(
            BlockDevice(0, HostPath("root.img"), alias="hda1"),
            BlockDevice(1, HostPath("/dev/null/missing"), alias="hda1", enabled=False),
        ),
        cofs=(CofsShare(0, HostPath("share")), CofsShare(1, HostPath("gone"), enabled=False)),
    )
    check_machine(machine)


def test_check_machine_problems(tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir()
    (tmp_path / "file").write_bytes(b"")
    assert check_error(
        _resolved(tmp_path, block_devices=(BlockDevice(0, HostPath("/x/root.img")),))
    ) == ("cobd0: image '/x/root.img' does not exist")
    assert check_error(_resolved(tmp_path, block_devices=(BlockDevice(2, HostPath("dir")),))) == (
        f"cobd2: image '{tmp_path}/dir' is a directory"
    )
    assert check_error(
        _resolved(tmp_path, block_devices=(BlockDevice(0, HostPath("/dev/null")),))
    ) == ("cobd0: image '/dev/null' is not a regular file or a block device")
    assert check_error(_resolved(tmp_path, kernel=HostPath("vmlinux"))) == (
        f"kernel: kernel '{tmp_path}/vmlinux' does not exist"
    )
    assert check_error(_resolved(tmp_path, initrd=HostPath("dir"))) == (
        f"initrd: initrd '{tmp_path}/dir' is a directory"
    )
    assert check_error(_resolved(tmp_path, cofs=(CofsShare(1, HostPath("file")),))) == (
        f"cofs1: directory '{tmp_path}/file' is not a directory"
    )
    assert check_error(_resolved(tmp_path, cofs=(CofsShare(1, HostPath("nope")),))) == (
        f"cofs1: directory '{tmp_path}/nope' does not exist"
    )
    machine = Machine(
        block_devices=(BlockDevice(0, HostPath("/x/a.img")),), source="my.colinux.xml"
    )
    assert check_error(machine) == "cobd0 (my.colinux.xml): image '/x/a.img' does not exist"


def test_check_machine_aliases_and_macs(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"")
    machine = _resolved(
        tmp_path,
        block_devices=(
            BlockDevice(0, HostPath("a"), alias="hda1"),
            BlockDevice(1, HostPath("a"), alias="hda1"),
        ),
    )
    assert check_error(machine) == "cobd1: alias hda1 is also cobd0's"
    machine = Machine(
        networks=(
            NetworkCard(0, NetworkType.SLIRP, mac="00:ff:00:00:00:01"),
            NetworkCard(1, NetworkType.TAP, mac="00:ff:00:00:00:01"),
        )
    )
    assert check_error(machine) == "eth1: MAC 00:ff:00:00:00:01 is also eth0's"


def test_check_machine_uml_block_device_limit(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"")
    devices = tuple(BlockDevice(i, HostPath("a")) for i in range(17))
    assert check_error(_resolved(tmp_path, block_devices=devices)) == (
        "block devices: 17 are enabled, but User-Mode Linux supports at most 16"
    )
    disabled = (*devices[:16], BlockDevice(20, HostPath("a"), enabled=False))
    check_machine(_resolved(tmp_path, block_devices=disabled))


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads everything")
def test_check_machine_unreadable_image(tmp_path: Path) -> None:
    image = tmp_path / "a.img"
    image.write_bytes(b"")
    image.chmod(0)
    machine = _resolved(tmp_path, block_devices=(BlockDevice(0, HostPath("a.img")),))
    assert check_error(machine) == f"cobd0: image '{image}' is not readable"
