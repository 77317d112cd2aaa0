"""Loading either form from a file, and converting between them (colinux.config.load)."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
from conftest import Colinux
from seed_config import SEED_XML

from colinux.config.cmdline import parse_cmdline
from colinux.config.load import convert, load_file
from colinux.config.model import BlockDevice, HostPath, Machine, Userspace
from colinux.config.xml import parse_xml
from colinux.errors import UserError

SEED_LINE = (
    r"kernel=vmlinux mem=128 cobd0=\DosDevices\c:\coLinux\root.img "
    r"cobd1=\DosDevices\c:\coLinux\swap.img cofs0=\DosDevices\c:\ root=/dev/cobd0 "
    r'initrd=initrd.gz eth0=tuntap,"TAP-Win32"'
)


def test_load_xml(tmp_path: Path) -> None:
    path = tmp_path / "my.colinux.xml"
    path.write_text("\ufeff\n  " + SEED_XML.split("\n", 1)[1])  # BOM, blank, no declaration
    machine = load_file(path, warn=print)
    assert machine == parse_xml(SEED_XML, source="x", warn=print)
    assert machine.source == str(path)


def test_load_key_value_file(tmp_path: Path) -> None:
    (tmp_path / "net.conf").write_text('eth0=tuntap,"TAP-Win32"\n')
    path = tmp_path / "my.conf"
    path.write_text(
        "# the seed's machine, as key=value words\n"
        r"kernel=vmlinux mem=128 cobd0=\DosDevices\c:\coLinux\root.img" + "\n"
        r"cobd1=\DosDevices\c:\coLinux\swap.img cofs0=\DosDevices\c:\ " + "\n"
        "root=/dev/cobd0 initrd=initrd.gz\n"
        "@net.conf\n"  # relative to my.conf's directory, not the current one
    )
    machine = load_file(str(path), warn=print)
    assert machine == parse_xml(SEED_XML, source="x", warn=print)
    assert machine.source == str(path)


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError) as caught:
        load_file(tmp_path / "nope.xml", warn=print)
    assert str(caught.value) == f"{tmp_path}/nope.xml: no such file"
    with pytest.raises(UserError, match="is a directory"):
        load_file(tmp_path, warn=print)
    bad = tmp_path / "bad.conf"
    bad.write_text("kernel=vmlinux\nmem=lots\n")
    with pytest.raises(UserError) as caught:
        load_file(bad, warn=print)
    assert str(caught.value) == f"{bad}:2: mem=lots: expected a size in megabytes"
    bad.write_bytes(b"mem=\xff\n")
    with pytest.raises(UserError, match=r"bad\.conf: not UTF-8 text \(byte 4\)$"):
        load_file(bad, warn=print)
    bad_xml = tmp_path / "bad.xml"
    bad_xml.write_text("<colinux>\n<memory size='x'/>\n</colinux>")
    with pytest.raises(UserError) as caught:
        load_file(bad_xml, warn=print)
    assert str(caught.value) == f'{bad_xml}:2: <memory> size="x": expected a size in megabytes'


def test_load_warns_with_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "w.xml"
    path.write_text("<colinux>\n<memroy size='64'/>\n</colinux>\n")
    warnings: list[str] = []
    assert load_file(path, warn=warnings.append) == Machine()
    assert warnings == [f"{path}:2: unknown element <memroy> ignored"]


def test_convert_seed_xml_to_command_line(tmp_path: Path) -> None:
    path = tmp_path / "my.colinux.xml"
    path.write_text(SEED_XML)
    line = convert(path, "cmdline", warn=print)
    assert line == (
        r"kernel=vmlinux mem=128 'cobd0=\DosDevices\c:\coLinux\root.img' "
        r"'cobd1=\DosDevices\c:\coLinux\swap.img' 'cofs0=\DosDevices\c:\' root=/dev/cobd0 "
        r'initrd=initrd.gz eth0=tuntap,"TAP-Win32"' + "\n"
    )
    # What a POSIX shell makes of the line is the seed's XML machine.
    assert parse_cmdline(shlex.split(line)) == load_file(path, warn=print)
    # So is the seed's own (Windows shell) form of the line.
    assert parse_cmdline(SEED_LINE.split(" ")) == load_file(path, warn=print)


def test_convert_command_line_file_to_xml_and_back(tmp_path: Path) -> None:
    conf = tmp_path / "my.conf"
    conf.write_text(SEED_LINE + "\n")
    xml_text = convert(conf, "xml", warn=print)
    assert xml_text == SEED_XML
    xml_path = tmp_path / "my.colinux.xml"
    xml_path.write_text(xml_text)
    line_path = tmp_path / "again.conf"
    line_path.write_text(convert(xml_path, "cmdline", warn=print))
    assert load_file(line_path, warn=print) == load_file(conf, warn=print)


def test_convert_warns_about_what_a_command_line_drops(tmp_path: Path) -> None:
    path = tmp_path / "d.xml"
    path.write_text(
        "<colinux>\n"
        '<block_device index="0" path="root.img"/>\n'
        '<block_device index="1" path="swap.img" enabled="false"/>\n'
        '<cofs_device index="2" path="/srv" enabled="false"/>\n'
        "</colinux>\n"
    )
    warnings: list[str] = []
    assert convert(path, "cmdline", warn=warnings.append) == "mem=64 cobd0=root.img\n"
    assert warnings == [
        f"{path}: cobd1 is disabled, so left out of the command line",
        f"{path}: cofs2 is disabled, so left out of the command line",
    ]
    # The XML form keeps them.
    assert load_file(path, warn=print).block_devices[1] == BlockDevice(
        1, HostPath("swap.img"), enabled=False
    )


def test_convert_to_an_unknown_form(tmp_path: Path) -> None:
    path = tmp_path / "m.conf"
    path.write_text("mem=64\n")
    with pytest.raises(UserError, match="cannot convert to 'json': expected cmdline or xml"):
        convert(path, "json", warn=print)  # type: ignore[arg-type]


# cpus= and userspace= (<cpus count>, <userspace mode>) carried from one form to the other.
SMP_LINE = "mem=128 cpus=2 userspace=seccomp root=/dev/cobd0"
SMP_XML = """<?xml version="1.0" encoding="UTF-8"?>
<colinux>
    <bootparams>root=/dev/cobd0</bootparams>
    <memory size="128"></memory>
    <cpus count="2"></cpus>
    <userspace mode="seccomp"></userspace>
</colinux>
"""
STRICT_LINE = "mem=64 userspace=ptrace"
STRICT_XML = """<?xml version="1.0" encoding="UTF-8"?>
<colinux>
    <memory size="64"></memory>
    <userspace mode="ptrace"></userspace>
</colinux>
"""


@pytest.mark.parametrize(("line", "xml_text"), [(SMP_LINE, SMP_XML), (STRICT_LINE, STRICT_XML)])
def test_convert_cpus_and_userspace_both_ways(tmp_path: Path, line: str, xml_text: str) -> None:
    conf = tmp_path / "m.conf"
    conf.write_text(line + "\n")
    assert convert(conf, "xml", warn=print) == xml_text
    xml_path = tmp_path / "m.xml"
    xml_path.write_text(xml_text)
    assert convert(xml_path, "cmdline", warn=print) == line + "\n"
    assert load_file(xml_path, warn=print) == load_file(conf, warn=print)


def test_load_refuses_ptrace_with_more_than_one_cpu(tmp_path: Path) -> None:
    conf = tmp_path / "m.conf"
    conf.write_text("cpus=2\nuserspace=ptrace\n")
    with pytest.raises(UserError) as caught:
        load_file(conf, warn=print)
    assert str(caught.value) == (
        f"{conf}:1: cpus=2: more than one CPU needs the seccomp userspace "
        "(userspace=ptrace runs one CPU)"
    )


# The commands themselves: config check and config convert start nothing.


@pytest.mark.parametrize(
    ("name", "text", "summary"),
    [
        ("smp.conf", "cpus=2\n", "64 MB, 2 CPU(s), userspace=auto,"),
        ("smp.xml", '<colinux><cpus count="2"/></colinux>\n', "64 MB, 2 CPU(s), userspace=auto,"),
        ("strict.conf", "userspace=ptrace\n", "64 MB, 1 CPU(s), userspace=ptrace,"),
        (
            "strict.xml",
            '<colinux><userspace mode="ptrace"/></colinux>\n',
            "64 MB, 1 CPU(s), userspace=ptrace,",
        ),
        (
            "both.xml",
            '<colinux><cpus count="8"/><userspace mode="seccomp"/></colinux>\n',
            "64 MB, 8 CPU(s), userspace=seccomp,",
        ),
    ],
)
def test_config_check_accepts_cpus_and_userspace(
    colinux: Colinux, name: str, text: str, summary: str
) -> None:
    (colinux.cwd / name).write_text(text)
    result = colinux.run("config", "check", name)
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().startswith(f"{name}: ok ({summary} ")
    assert result.stderr == b""


@pytest.mark.parametrize(
    ("line", "xml_text", "cpus", "userspace"),
    [(SMP_LINE, SMP_XML, 2, Userspace.SECCOMP), (STRICT_LINE, STRICT_XML, 1, Userspace.PTRACE)],
)
def test_config_convert_carries_cpus_and_userspace_both_ways(
    colinux: Colinux, line: str, xml_text: str, cpus: int, userspace: Userspace
) -> None:
    (colinux.cwd / "m.conf").write_text(line + "\n")
    to_xml = colinux.run("config", "convert", "m.conf", "--to", "xml")
    assert (to_xml.returncode, to_xml.stderr) == (0, b"")
    assert to_xml.stdout.decode() == xml_text
    (colinux.cwd / "m.xml").write_bytes(to_xml.stdout)
    to_line = colinux.run("config", "convert", "m.xml", "--to", "cmdline")
    assert (to_line.returncode, to_line.stderr) == (0, b"")
    assert to_line.stdout.decode() == line + "\n"
    machine = load_file(colinux.cwd / "m.xml", warn=print)
    assert (machine.cpus, machine.userspace) == (cpus, userspace)
    assert parse_cmdline(shlex.split(to_line.stdout.decode())) == machine
