"""The key=value command line and @FILE (colinux.config.cmdline)."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest
from seed_config import SEED_WORDS

from colinux.config.cmdline import (
    display_word,
    expand_at_files,
    format_cmdline,
    parse_cmdline,
    parse_cmdline_text,
    setting_key,
    write_cmdline,
)
from colinux.config.fields import split_fields
from colinux.config.model import (
    BlockDevice,
    CofsShare,
    CofsType,
    HostPath,
    Machine,
    NetworkCard,
    NetworkType,
    Redirection,
    Userspace,
)
from colinux.config.values import BadValue
from colinux.config.xml import parse_xml
from colinux.errors import UserError

SEED_MACHINE = Machine(
    kernel=HostPath("vmlinux"),
    memory_mb=128,
    initrd=HostPath("initrd.gz"),
    bootparams=("root=/dev/cobd0",),
    block_devices=(BlockDevice(0, HostPath("root.img")), BlockDevice(1, HostPath("swap.img"))),
    cofs=(CofsShare(0, HostPath("c:\\")),),
    networks=(NetworkCard(0, NetworkType.TAP, name="TAP-Win32"),),
)


CPUS_EXPECTED = "expected a whole number of CPUs from 1 to 8"
USERSPACE_EXPECTED = "expected auto, seccomp or ptrace"
NEEDS_SECCOMP = "more than one CPU needs the seccomp userspace (userspace=ptrace runs one CPU)"


def error_of(*words: str, base: Machine | None = None) -> str:
    with pytest.raises(UserError) as caught:
        parse_cmdline(words, base=base)
    return str(caught.value)


def test_seed_command_line() -> None:
    assert parse_cmdline(SEED_WORDS) == SEED_MACHINE


def test_seed_command_line_after_a_posix_shell() -> None:
    # The quotes are gone after a POSIX shell; the meaning is the same.
    words = [w.replace('"', "") for w in SEED_WORDS]
    assert words[-1] == "eth0=tuntap,TAP-Win32"
    assert parse_cmdline(words) == SEED_MACHINE


def test_seed_writes_as_the_seed_words() -> None:
    assert write_cmdline(SEED_MACHINE) == SEED_WORDS


def test_seed_formats_for_a_posix_shell() -> None:
    # c:\ must be quoted for a POSIX shell (a bare backslash would escape the
    # space after it); the NAME's double quotes stay, as in the seed.
    assert format_cmdline(SEED_MACHINE) == (
        "kernel=vmlinux mem=128 cobd0=root.img cobd1=swap.img 'cofs0=c:\\' "
        'root=/dev/cobd0 initrd=initrd.gz eth0=tuntap,"TAP-Win32"'
    )


def test_seed_network_card_is_the_xml_one() -> None:
    xml_card = parse_xml(
        '<colinux><network index="0" name="TAP-Win32" type="tap"></network></colinux>',
        source="x",
        warn=print,
    ).networks
    assert parse_cmdline(['eth0=tuntap,"TAP-Win32"']).networks == xml_card


def test_unknown_words_go_to_the_guest_kernel_in_order() -> None:
    machine = parse_cmdline(["ro", "root=/dev/cobd0", "mem=64", "init=/bin/sh", "console=tty0"])
    assert machine.bootparams == ("ro", "root=/dev/cobd0", "init=/bin/sh", "console=tty0")
    assert machine.memory_mb == 64


def test_setting_key() -> None:
    assert setting_key("cobd0=x") == "cobd0"
    assert setting_key("hda1=:cobd0") == "hda1"
    assert setting_key("root=/dev/cobd0") is None
    assert setting_key("cobd0") is None
    assert setting_key("cobdx=1") is None
    assert setting_key("cpus=2") == "cpus"
    assert setting_key("userspace=ptrace") == "userspace"


@pytest.mark.parametrize(
    ("word", "megabytes"),
    [("mem=128", 128), ("mem=128M", 128), ("mem=2g", 2048), ("mem=4096", 4096)],
)
def test_memory(word: str, megabytes: int) -> None:
    assert parse_cmdline([word]).memory_mb == megabytes


def test_scalar_keys_last_wins() -> None:
    machine = parse_cmdline(["mem=64", "kernel=a", "mem=256", "kernel=b"])
    assert (machine.memory_mb, machine.kernel) == (256, HostPath("b"))
    machine = parse_cmdline(["cpus=4", "userspace=ptrace", "cpus=1", "userspace=seccomp"])
    assert (machine.cpus, machine.userspace) == (1, Userspace.SECCOMP)


@pytest.mark.parametrize(
    ("words", "cpus", "userspace"),
    [
        ([], 1, Userspace.AUTO),
        (["cpus=1"], 1, Userspace.AUTO),
        (["cpus=2"], 2, Userspace.AUTO),
        (["cpus=08"], 8, Userspace.AUTO),
        (["userspace=auto"], 1, Userspace.AUTO),
        (["userspace=seccomp", "cpus=8"], 8, Userspace.SECCOMP),
        (["userspace=PTRACE"], 1, Userspace.PTRACE),
        (["cpus=1", "userspace=ptrace"], 1, Userspace.PTRACE),
        # Only the last word counts, so an earlier one cannot clash.
        (["cpus=2", "userspace=ptrace", "cpus=1"], 1, Userspace.PTRACE),
    ],
)
def test_cpus_and_userspace(words: list[str], cpus: int, userspace: Userspace) -> None:
    machine = parse_cmdline(words)
    assert (machine.cpus, machine.userspace) == (cpus, userspace)
    assert machine.bootparams == ()  # colinux's own settings, not the guest kernel's


def test_windows_paths_survive_as_raw_text() -> None:
    machine = parse_cmdline(
        [
            r"cobd0=\DosDevices\c:\coLinux\root.img",
            r"cofs1=c:\Users\me,meta",
            r"kernel=c:\k\vmlinux",
        ]
    )
    assert machine.block_devices[0].path == HostPath(r"\DosDevices\c:\coLinux\root.img")
    assert machine.cofs[0] == CofsShare(1, HostPath(r"c:\Users\me"), CofsType.META)
    assert machine.kernel == HostPath(r"c:\k\vmlinux")


def test_quoted_single_paths() -> None:
    machine = parse_cmdline(['cobd0="C:\\My Disk\\root,1.img"', 'initrd=""""'])
    assert machine.block_devices[0].path.raw == "C:\\My Disk\\root,1.img"
    assert machine.initrd == HostPath('"')


def test_cofs_options() -> None:
    machine = parse_cmdline(
        ['cofs0="/srv/a,b",meta', "cofs1=/x,ro", "cofs2=/y,flat,rw", "cofs3=/z"]
    )
    assert machine.cofs == (
        CofsShare(0, HostPath("/srv/a,b"), CofsType.META),
        CofsShare(1, HostPath("/x"), readonly=True),
        CofsShare(2, HostPath("/y")),
        CofsShare(3, HostPath("/z")),
    )


def test_network_forms() -> None:
    machine = parse_cmdline(
        [
            "eth0=slirp,,tcp:2222:22",
            "eth1=slirp,00:FF:AA:BB:CC:DD,tcp:8080:80:2/udp:5353:53",
            "eth2=tuntap",
            "eth3=tuntap,tap3,00:ff:00:00:00:03",
            'eth4=pcap-bridge,"Local Area Connection",,nopromisc',
            "eth5=pcap-bridge,eth0,,promisc",
            "eth6=slirp",
            "eth7=slirp,,tcp:0.0.0.0:2222:22/udp:192.0.2.7:5353:53:2",
        ]
    )
    assert machine.networks == (
        NetworkCard(0, NetworkType.SLIRP, redirections=(Redirection("tcp", 2222, 22),)),
        NetworkCard(
            1,
            NetworkType.SLIRP,
            mac="00:ff:aa:bb:cc:dd",
            redirections=(Redirection("tcp", 8080, 80, 2), Redirection("udp", 5353, 53)),
        ),
        NetworkCard(2, NetworkType.TAP),
        NetworkCard(3, NetworkType.TAP, name="tap3", mac="00:ff:00:00:00:03"),
        NetworkCard(4, NetworkType.BRIDGED, name="Local Area Connection", promisc=False),
        NetworkCard(5, NetworkType.BRIDGED, name="eth0"),
        NetworkCard(6, NetworkType.SLIRP),
        NetworkCard(
            7,
            NetworkType.SLIRP,
            redirections=(
                Redirection("tcp", 2222, 22, address="0.0.0.0"),
                Redirection("udp", 5353, 53, 2, address="192.0.2.7"),
            ),
        ),
    )


def test_aliases() -> None:
    machine = parse_cmdline(["hda1=:cobd2", "cobd2=root.img", "sdb=data.img", "cobd0=boot.img"])
    assert machine.block_devices == (
        BlockDevice(0, HostPath("boot.img")),
        BlockDevice(1, HostPath("data.img"), alias="sdb"),  # the first free index
        BlockDevice(2, HostPath("root.img"), alias="hda1"),
    )


def test_alias_with_path_does_not_depend_on_word_order() -> None:
    assert parse_cmdline(["hda1=a.img", "cobd0=b.img"]) == parse_cmdline(
        ["cobd0=b.img", "hda1=a.img"]
    )


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        (["mem=abc"], "command line: mem=abc: expected a size in megabytes"),
        (["mem=128K"], "command line: mem=128K: expected a size in megabytes"),
        (["mem=0"], "command line: mem=0: expected a size in megabytes of at least 1"),
        (["mem="], "command line: mem=: expected a size in megabytes"),
        (["kernel="], "command line: kernel=: expected a path"),
        (["cobd0="], "command line: cobd0=: expected a path"),
        (["cobd32=x"], "command line: cobd32=x: index 32 is out of range (0..31)"),
        (["cofs40=x"], "command line: cofs40=x: index 40 is out of range (0..31)"),
        (["eth32=slirp"], "command line: eth32=slirp: index 32 is out of range (0..31)"),
        (["cofs0=,meta"], "command line: cofs0=,meta: expected a host directory"),
        (
            ["cofs0=/srv/a,b"],
            "command line: cofs0=/srv/a,b: unknown option 'b': expected flat, meta or ro "
            '(quote a path holding a comma: cofs0="/srv/a,b")',
        ),
        (["cofs0=/x,flat,meta"], "command line: cofs0=/x,flat,meta: give flat or meta, not both"),
        (['cofs0="/x'], 'command line: cofs0="/x: unterminated double quote'),
        (
            ['cofs0="/x"y'],
            'command line: cofs0="/x"y: text follows a closing quote; quote the whole field',
        ),
        (
            ['cobd0="a",b'],
            "command line: cobd0=\"a\",b: unknown option 'b': expected ro or cow=FILE",
        ),
        (["eth0=wifi"], "command line: eth0=wifi: expected tuntap, pcap-bridge or slirp"),
        (
            ["eth0=tuntap,a,00:ff:00:00:00:01,x"],
            "command line: eth0=tuntap,a,00:ff:00:00:00:01,x: too many fields: expected "
            'eth0=tuntap[,"NAME"][,MAC]',
        ),
        (
            ["eth0=slirp,00:ff:00:00:00:01,tcp:1:2,x"],
            "command line: eth0=slirp,00:ff:00:00:00:01,tcp:1:2,x: too many fields: expected "
            "eth0=slirp[,MAC][,REDIRS]",
        ),
        (
            ["eth0=pcap-bridge,br0,,always"],
            "command line: eth0=pcap-bridge,br0,,always: expected promisc or nopromisc, not "
            "'always' (eth0=pcap-bridge[,\"NAME\"][,MAC][,promisc|nopromisc])",
        ),
        (
            ["eth0=tuntap,tap0,00:ff"],
            "command line: eth0=tuntap,tap0,00:ff: expected a MAC address such as "
            "00:ff:12:34:56:78",
        ),
        (
            ["eth0=slirp,,tcp:2222"],
            "command line: eth0=slirp,,tcp:2222: redirection 'tcp:2222': expected "
            "tcp|udp:[ADDRESS:]HOSTPORT:GUESTPORT[:COUNT], e.g. tcp:2222:22",
        ),
        (
            ["eth0=slirp,,sctp:1:2"],
            "command line: eth0=slirp,,sctp:1:2: redirection 'sctp:1:2': expected "
            "tcp|udp:[ADDRESS:]HOSTPORT:GUESTPORT[:COUNT], e.g. tcp:2222:22",
        ),
        (
            ["eth0=slirp,,tcp:0.0.0:2222:22"],
            "command line: eth0=slirp,,tcp:0.0.0:2222:22: redirection 'tcp:0.0.0:2222:22': "
            "'0.0.0' is not an IPv4 address such as 0.0.0.0",
        ),
        (
            ["eth0=slirp,,tcp:0.0.0.0:2222"],
            "command line: eth0=slirp,,tcp:0.0.0.0:2222: redirection 'tcp:0.0.0.0:2222': "
            "expected tcp|udp:[ADDRESS:]HOSTPORT:GUESTPORT[:COUNT], e.g. tcp:2222:22",
        ),
        (
            ["eth0=slirp,,tcp:1:2:0"],
            "command line: eth0=slirp,,tcp:1:2:0: redirection 'tcp:1:2:0': expected a COUNT of "
            "at least 1",
        ),
        (["hda1=:cobd0"], "command line: hda1=:cobd0: cobd0 is not defined"),
        (["hda1=:hdb"], "command line: hda1=:hdb: expected :cobdN to name an existing device"),
        (["hda1=:cobd99"], "command line: hda1=:cobd99: index 99 is out of range (0..31)"),
        (["hda1="], "command line: hda1=: expected a path"),
        *(
            ([f"cpus={bad}"], f"command line: cpus={bad}: {CPUS_EXPECTED}")
            for bad in ("0", "-1", "abc", "2.5", "", "9", "+2", " 2", "1_0", "99999999999999999999")
        ),
        (["userspace=fast"], f"command line: userspace=fast: {USERSPACE_EXPECTED}"),
        (["userspace="], f"command line: userspace=: {USERSPACE_EXPECTED}"),
        (
            ["userspace=ptrace,seccomp"],
            f"command line: userspace=ptrace,seccomp: {USERSPACE_EXPECTED}",
        ),
        (["cpus=2", "userspace=ptrace"], f"command line: cpus=2: {NEEDS_SECCOMP}"),
        (["userspace=ptrace", "cpus=8"], f"command line: cpus=8: {NEEDS_SECCOMP}"),
        (
            ["cpus=2", "userspace=seccomp", "userspace=ptrace"],
            f"command line: cpus=2: {NEEDS_SECCOMP}",
        ),
    ],
)
def test_errors_name_the_word_and_expectation(words: list[str], expected: str) -> None:
    assert error_of(*words) == expected


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        (["cobd0=a", "cobd0=b"], "command line: cobd0=b: cobd0 is already given by cobd0=a"),
        (["cobd1=a", "cobd01=b"], "command line: cobd01=b: cobd1 is already given by cobd1=a"),
        (["cofs0=a", "cofs0=b"], "command line: cofs0=b: cofs0 is already given by cofs0=a"),
        (
            ["eth0=slirp", "eth0=tuntap"],
            "command line: eth0=tuntap: eth0 is already given by eth0=slirp",
        ),
        (["hda1=a", "hda1=b"], "command line: hda1=b: hda1 is already given by hda1=a"),
        (
            ["cobd0=a", "hda1=:cobd0", "hda1=:cobd0"],
            "command line: hda1=:cobd0: hda1 is already given by hda1=:cobd0",
        ),
        (
            ["cobd0=a", "hda1=:cobd0", "sda1=:cobd0"],
            "command line: sda1=:cobd0: a name for cobd0 is already given by hda1=:cobd0",
        ),
        (
            ["hda1=a.img", "sda1=:cobd0"],
            "command line: sda1=:cobd0: a name for cobd0 is already given by hda1=a.img",
        ),
    ],
)
def test_duplicate_devices_name_both_words(words: list[str], expected: str) -> None:
    assert error_of(*words) == expected


def test_no_free_index_for_an_alias() -> None:
    words = [f"cobd{i}=d{i}" for i in range(32)] + ["hda1=x"]
    assert error_of(*words) == "command line: hda1=x: no free cobd index for hda1 (all 32 used)"


def test_source_names_messages() -> None:
    with pytest.raises(UserError, match=r"^colinux\.service: mem=x: expected"):
        parse_cmdline(["mem=x"], source="colinux.service")


BASE = Machine(
    kernel=HostPath("vmlinux"),
    memory_mb=128,
    bootparams=("root=/dev/cobd0",),
    block_devices=(
        BlockDevice(0, HostPath("root.img"), alias="hda1"),
        BlockDevice(1, HostPath("swap.img"), enabled=False),
    ),
    cofs=(CofsShare(0, HostPath("/srv")),),
    networks=(NetworkCard(0, NetworkType.TAP, name="tap0"),),
    source="my.xml",
)


def test_words_override_a_base() -> None:
    machine = parse_cmdline(
        ["mem=256", "cobd1=other.img", "eth0=slirp", "ro", "cofs3=/home"], base=BASE
    )
    assert machine == Machine(
        kernel=HostPath("vmlinux"),
        memory_mb=256,
        bootparams=("root=/dev/cobd0", "ro"),
        block_devices=(
            BlockDevice(0, HostPath("root.img"), alias="hda1"),
            BlockDevice(1, HostPath("other.img")),
        ),
        cofs=(CofsShare(0, HostPath("/srv")), CofsShare(3, HostPath("/home"))),
        networks=(NetworkCard(0, NetworkType.SLIRP),),
    )
    assert machine.source == "my.xml"


def test_alias_words_override_a_base() -> None:
    # hda1=PATH replaces the base device that had the name hda1.
    replaced = parse_cmdline(["hda1=new.img"], base=BASE)
    assert replaced.block_devices[0] == BlockDevice(0, HostPath("new.img"), alias="hda1")
    # hda1=:cobd1 moves the name from cobd0 to cobd1.
    moved = parse_cmdline(["hda1=:cobd1"], base=BASE)
    assert [d.alias for d in moved.block_devices] == [None, "hda1"]
    # cobd0=... replaces the device, name and all; hda1=PATH then takes a free index.
    both = parse_cmdline(["cobd0=x.img", "hda1=y.img"], base=BASE)
    assert both.block_devices == (
        BlockDevice(0, HostPath("x.img")),
        BlockDevice(1, HostPath("swap.img"), enabled=False),
        BlockDevice(2, HostPath("y.img"), alias="hda1"),
    )


def test_cpus_and_userspace_over_a_base() -> None:
    two = replace(BASE, cpus=2)
    assert parse_cmdline(["userspace=seccomp"], base=two).cpus == 2
    assert parse_cmdline(["cpus=1", "userspace=ptrace"], base=two).userspace == Userspace.PTRACE
    strict = replace(BASE, userspace=Userspace.PTRACE)
    assert parse_cmdline(["userspace=auto", "cpus=4"], base=strict).cpus == 4
    # The clash is found whichever side each setting comes from, naming the word given.
    assert error_of("userspace=ptrace", base=two) == (
        f"command line: userspace=ptrace: cpus=2 (my.xml): {NEEDS_SECCOMP}"
    )
    assert error_of("cpus=3", base=strict) == f"command line: cpus=3: {NEEDS_SECCOMP}"


def test_cpus_and_userspace_clash_in_a_file_names_its_line() -> None:
    with pytest.raises(UserError) as caught:
        parse_cmdline_text("userspace=ptrace\nmem=128 cpus=2\n", source="my.conf", base_dir="/")
    assert str(caught.value) == f"my.conf:2: cpus=2: {NEEDS_SECCOMP}"


def test_duplicates_within_the_words_are_still_errors_over_a_base() -> None:
    assert error_of("cobd0=a", "cobd0=b", base=BASE) == (
        "command line: cobd0=b: cobd0 is already given by cobd0=a"
    )


def test_split_fields() -> None:
    assert split_fields('tuntap,"TAP-Win32"') == ["tuntap", "TAP-Win32"]
    assert split_fields('"a,b","c""d",,e,') == ["a,b", 'c"d', "", "e", ""]
    assert split_fields("") == [""]
    with pytest.raises(BadValue):
        split_fields('"abc')


def test_writer_quotes_what_it_must() -> None:
    machine = Machine(
        kernel=HostPath('"quoted"'),
        cofs=(CofsShare(0, HostPath("/srv/a,b"), CofsType.META, readonly=True),),
        networks=(
            NetworkCard(0, NetworkType.TAP, name='my "tap", 2'),
            NetworkCard(1, NetworkType.SLIRP, redirections=(Redirection("tcp", 2222, 22),)),
            NetworkCard(2, NetworkType.BRIDGED, mac="00:ff:00:00:00:01", promisc=False),
        ),
    )
    words = write_cmdline(machine)
    assert words == [
        'kernel="""quoted"""',
        "mem=64",
        'cofs0="/srv/a,b",meta,ro',
        'eth0=tuntap,"my ""tap"", 2"',
        "eth1=slirp,,tcp:2222:22",
        "eth2=pcap-bridge,,00:ff:00:00:00:01,nopromisc",
    ]
    assert parse_cmdline(words) == machine


def test_writer_leaves_out_disabled_devices() -> None:
    assert write_cmdline(BASE) == [
        "kernel=vmlinux",
        "mem=128",
        "cobd0=root.img",
        "hda1=:cobd0",
        "cofs0=/srv",
        "root=/dev/cobd0",
        'eth0=tuntap,"tap0"',
    ]


def test_writer_writes_cpus_and_userspace_only_when_not_the_default() -> None:
    assert write_cmdline(Machine(cpus=1, userspace=Userspace.AUTO)) == ["mem=64"]
    machine = Machine(memory_mb=128, cpus=4, userspace=Userspace.SECCOMP, bootparams=("ro",))
    assert write_cmdline(machine) == ["mem=128", "cpus=4", "userspace=seccomp", "ro"]
    assert parse_cmdline(write_cmdline(machine)) == machine
    strict = Machine(userspace=Userspace.PTRACE)
    assert write_cmdline(strict) == ["mem=64", "userspace=ptrace"]
    assert parse_cmdline(write_cmdline(strict)) == strict


def test_writer_refuses_boot_parameters_it_would_misread() -> None:
    with pytest.raises(UserError, match="boot parameter 'mem=64' cannot be written"):
        write_cmdline(Machine(bootparams=("mem=64",)))
    with pytest.raises(UserError, match="boot parameter '@x' cannot be written"):
        write_cmdline(Machine(bootparams=("@x",)))
    with pytest.raises(UserError, match="boot parameter 'cpus=2' cannot be written"):
        write_cmdline(Machine(bootparams=("cpus=2",)))


@pytest.mark.parametrize(
    ("word", "shown"),
    [
        ("mem=128", "mem=128"),
        ('eth0=tuntap,"TAP-Win32"', 'eth0=tuntap,"TAP-Win32"'),
        ('eth0=tuntap,"a,b"', "'eth0=tuntap,\"a,b\"'"),
        ('eth0=tuntap,"a b"', "'eth0=tuntap,\"a b\"'"),
        ('init="/bin/sh"', "'init=\"/bin/sh\"'"),
        ("cofs0=c:\\", "'cofs0=c:\\'"),
        ("cobd0=it's.img", "'cobd0=it'\"'\"'s.img'"),
        ("", "''"),
    ],
)
def test_display_word(word: str, shown: str) -> None:
    assert display_word(word) == shown


# --- @FILE -----------------------------------------------------------------------------


def test_expand_at_files(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "base.conf").write_text(
        "# the seed's machine\n"
        "kernel=vmlinux mem=128   # comment after words\n"
        "\n"
        'cofs0="/srv/my dir",meta  cobd0=disk#1.img\n'
        "@sub/net.conf\n"
        "'init=/bin/sh -c x'\n"
    )
    (tmp_path / "sub" / "net.conf").write_text('eth0=tuntap,"TAP Win32"\n@more.conf\n')
    (tmp_path / "sub" / "more.conf").write_text("ro\n")
    words = expand_at_files(["root=/dev/cobd0", "@base.conf", "mem=256"], cwd=str(tmp_path))
    assert words == [
        "root=/dev/cobd0",
        "kernel=vmlinux",
        "mem=128",
        'cofs0="/srv/my dir",meta',
        "cobd0=disk#1.img",
        'eth0=tuntap,"TAP Win32"',
        "ro",
        "init=/bin/sh -c x",
        "mem=256",
    ]
    machine = parse_cmdline(words)
    assert machine.memory_mb == 256
    assert machine.cofs[0].path.raw == "/srv/my dir"
    assert machine.networks[0].name == "TAP Win32"


def test_expand_absolute_and_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a.conf").write_text("mem=64")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert expand_at_files([f"@{tmp_path}/a.conf", "@~/a.conf"], cwd="/") == ["mem=64", "mem=64"]


def test_expand_missing_file(tmp_path: Path) -> None:
    with pytest.raises(UserError) as caught:
        expand_at_files(["@nope.conf"], cwd=str(tmp_path))
    assert str(caught.value) == "@nope.conf: no such file"


def test_expand_missing_nested_file_names_where(tmp_path: Path) -> None:
    (tmp_path / "a.conf").write_text("\nmem=64 @gone.conf\n")
    with pytest.raises(UserError) as caught:
        expand_at_files(["@a.conf"], cwd=str(tmp_path))
    assert str(caught.value) == "a.conf:2: @gone.conf: no such file"


def test_expand_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"^@: expected a file name after @$"):
        expand_at_files(["@"], cwd=str(tmp_path))
    with pytest.raises(UserError, match="is a directory"):
        expand_at_files([f"@{tmp_path}"], cwd="/")
    (tmp_path / "bad.conf").write_bytes(b"mem=\xff")
    with pytest.raises(UserError, match=r"^@bad\.conf: not UTF-8 text"):
        expand_at_files(["@bad.conf"], cwd=str(tmp_path))
    (tmp_path / "quote.conf").write_text('\n\ncofs0="/x\n')
    with pytest.raises(UserError, match=r'^quote\.conf:3: unterminated " quote$'):
        expand_at_files(["@quote.conf"], cwd=str(tmp_path))


def test_expand_loop(tmp_path: Path) -> None:
    (tmp_path / "a.conf").write_text("@b.conf")
    (tmp_path / "b.conf").write_text("@a.conf")
    with pytest.raises(UserError) as caught:
        expand_at_files(["@a.conf"], cwd=str(tmp_path))
    a, b = os.path.realpath(tmp_path / "a.conf"), os.path.realpath(tmp_path / "b.conf")
    assert str(caught.value) == f"b.conf:1: @a.conf: the file includes itself ({a} -> {b} -> {a})"


def test_expand_depth_limit(tmp_path: Path) -> None:
    for i in range(12):
        (tmp_path / f"{i}.conf").write_text(f"@{i + 1}.conf")
    (tmp_path / "12.conf").write_text("mem=1")
    with pytest.raises(UserError, match=r"^7\.conf:1: @8\.conf: @FILE nested more than 8 deep$"):
        expand_at_files(["@0.conf"], cwd=str(tmp_path))
    assert expand_at_files(["@5.conf"], cwd=str(tmp_path)) == ["mem=1"]


def test_file_text_errors_name_file_and_line() -> None:
    with pytest.raises(UserError) as caught:
        parse_cmdline_text("kernel=vmlinux\n# mem\n  mem=abc\n", source="my.conf", base_dir="/")
    assert str(caught.value) == "my.conf:3: mem=abc: expected a size in megabytes"
    with pytest.raises(UserError) as caught:
        parse_cmdline_text("cobd0=a\n\ncobd0=b\n", source="my.conf", base_dir="/")
    assert str(caught.value) == "my.conf:3: cobd0=b: cobd0 is already given by cobd0=a (my.conf:1)"


def test_file_and_command_line_duplicates_name_both(tmp_path: Path) -> None:
    (tmp_path / "a.conf").write_text("cobd0=a.img\n")
    words = expand_at_files(["@a.conf", "cobd0=b.img"], cwd=str(tmp_path))
    assert error_of(*words) == "command line: cobd0=b.img: cobd0 is already given by cobd0=a.img"
