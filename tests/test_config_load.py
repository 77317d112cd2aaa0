"""Loading either form from a file, and converting between them (colinux.config.load)."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
from seed_config import SEED_XML

from colinux.config.cmdline import parse_cmdline
from colinux.config.load import convert, load_file
from colinux.config.model import BlockDevice, HostPath, Machine
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
