"""The coLinux XML reader and writer (colinux.config.xml)."""

from __future__ import annotations

from pathlib import Path

import pytest
from seed_config import SEED_XML

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
from colinux.config.xml import parse_xml, read_xml, write_xml
from colinux.errors import UserError

SEED_MACHINE = Machine(
    kernel=HostPath("vmlinux"),
    memory_mb=128,
    initrd=HostPath("initrd.gz"),
    bootparams=("root=/dev/cobd0",),
    block_devices=(
        BlockDevice(0, HostPath(r"\DosDevices\c:\coLinux\root.img")),
        BlockDevice(1, HostPath(r"\DosDevices\c:\coLinux\swap.img")),
    ),
    cofs=(CofsShare(0, HostPath("\\DosDevices\\c:\\"), CofsType.FLAT),),
    networks=(NetworkCard(0, NetworkType.TAP, name="TAP-Win32"),),
)


def parse(body: str, warnings: list[str] | None = None) -> Machine:
    """Parse a <colinux> document whose first body line is line 2."""
    sink = warnings if warnings is not None else []
    return parse_xml(f"<colinux>\n{body}\n</colinux>\n", source="my.xml", warn=sink.append)


def error_of(body: str) -> str:
    with pytest.raises(UserError) as caught:
        parse(body)
    return str(caught.value)


def test_seed_xml_reads_as_the_seed_machine(tmp_path: Path) -> None:
    path = tmp_path / "my.colinux.xml"
    path.write_text(SEED_XML)
    warnings: list[str] = []
    machine = read_xml(path, warn=warnings.append)
    assert machine == SEED_MACHINE
    assert machine.source == str(path)
    assert warnings == []


def test_seed_machine_writes_as_the_seed_xml() -> None:
    assert write_xml(SEED_MACHINE) == SEED_XML


def test_image_absent_means_the_engine_kernel() -> None:
    assert parse('<memory size="64"></memory>') == Machine(memory_mb=64)


def test_empty_file_body_gives_defaults() -> None:
    assert parse("") == Machine()


def test_devices_come_out_sorted_by_index() -> None:
    machine = parse(
        '<block_device index="3" path="b"/>\n<block_device index="1" path="a" alias="hda1"/>'
    )
    assert machine.block_devices == (
        BlockDevice(1, HostPath("a"), alias="hda1"),
        BlockDevice(3, HostPath("b")),
    )


def test_disabled_entries_are_kept() -> None:
    machine = parse(
        '<block_device index="0" path="a" enabled="false"/>\n'
        '<cofs_device index="2" path="/srv" enabled="FALSE" readonly="true" type="meta"/>'
    )
    assert machine.block_devices == (BlockDevice(0, HostPath("a"), enabled=False),)
    assert machine.cofs == (CofsShare(2, HostPath("/srv"), CofsType.META, True, False),)


def test_network_types_and_attributes() -> None:
    machine = parse(
        '<network index="0" type="slirp" mac="00:FF:12:34:56:78" '
        'redir="tcp:2222:22/udp:0.0.0.0:53:53:2"/>\n'
        '<network index="1" name="eth0"/>\n'
        '<network index="2" type="bridged" name="br0" promisc="false"/>\n'
        '<network index="3" type="tap" name=""/>'
    )
    assert machine.networks == (
        NetworkCard(
            0,
            NetworkType.SLIRP,
            mac="00:ff:12:34:56:78",
            redirections=(
                Redirection("tcp", 2222, 22),
                Redirection("udp", 53, 53, 2, address="0.0.0.0"),
            ),
        ),
        NetworkCard(1, NetworkType.BRIDGED, name="eth0"),  # bridged is the default type
        NetworkCard(2, NetworkType.BRIDGED, name="br0", promisc=False),
        NetworkCard(3, NetworkType.TAP),
    )


def test_network_attributes_for_another_type_warn_and_drop() -> None:
    warnings: list[str] = []
    machine = parse('<network index="0" type="slirp" name="TAP-Win32" promisc="false"/>', warnings)
    assert machine.networks == (NetworkCard(0, NetworkType.SLIRP),)
    assert warnings == [
        'my.xml:2: <network> attribute name does not apply to type="slirp"; ignored',
        'my.xml:2: <network> attribute promisc does not apply to type="slirp"; ignored',
    ]


def test_bootparams_split_on_whitespace() -> None:
    machine = parse("<bootparams>\n  root=/dev/cobd0\tro  init=/bin/sh\n</bootparams>")
    assert machine.bootparams == ("root=/dev/cobd0", "ro", "init=/bin/sh")


def test_memory_sizes() -> None:
    assert parse('<memory size="2048"/>').memory_mb == 2048  # no cap below 1 GB
    assert parse('<memory size="4G"/>').memory_mb == 4096
    assert parse('<memory size="96M"/>').memory_mb == 96


@pytest.mark.parametrize(
    ("body", "cpus", "userspace"),
    [
        ("", 1, Userspace.AUTO),
        ('<cpus count="1"></cpus>', 1, Userspace.AUTO),
        ('<cpus count="2"></cpus>', 2, Userspace.AUTO),
        ('<cpus count="08"/>', 8, Userspace.AUTO),
        ('<userspace mode="auto"></userspace>', 1, Userspace.AUTO),
        ('<userspace mode="seccomp"/>\n<cpus count="4"/>', 4, Userspace.SECCOMP),
        ('<userspace mode="ptrace"></userspace>', 1, Userspace.PTRACE),
        ('<cpus count="1"/><userspace mode="PTrace"/>', 1, Userspace.PTRACE),
    ],
)
def test_cpus_and_userspace(body: str, cpus: int, userspace: Userspace) -> None:
    warnings: list[str] = []
    machine = parse(body, warnings)
    assert (machine.cpus, machine.userspace) == (cpus, userspace)
    assert warnings == []


def test_cpus_and_userspace_clash_names_both_lines() -> None:
    assert error_of('<cpus count="2"/>\n<memory size="64"/>\n<userspace mode="ptrace"/>') == (
        'my.xml:2: <cpus> count="2": more than one CPU needs the seccomp userspace '
        '(<userspace mode="ptrace"> on line 4 runs one CPU)'
    )
    assert error_of('<userspace mode="ptrace"/>\n<cpus count="8"/>') == (
        'my.xml:3: <cpus> count="8": more than one CPU needs the seccomp userspace '
        '(<userspace mode="ptrace"> on line 2 runs one CPU)'
    )


def test_non_ascii_paths_survive() -> None:
    machine = parse('<cofs_device index="1" path="/srv/日本語 フォルダ"/>')
    assert machine.cofs[0].path.raw == "/srv/日本語 フォルダ"
    assert parse_xml(write_xml(machine), source="x", warn=print) == machine


def test_declared_encoding_is_honoured() -> None:
    data = '<?xml version="1.0" encoding="ISO-8859-1"?>\n<colinux><image path="caf\xe9"/></colinux>'
    machine = parse_xml(data.encode("latin-1"), source="f.xml", warn=print)
    assert machine.kernel == HostPath("café")


def test_unknown_element_warns_with_its_line() -> None:
    warnings: list[str] = []
    machine = parse('<memory size="64"/>\n\n<sound index="0"/>', warnings)
    assert machine.memory_mb == 64
    assert warnings == ["my.xml:4: unknown element <sound> ignored"]


def test_unknown_attribute_warns_with_its_line() -> None:
    warnings: list[str] = []
    parse('\n<block_device index="0" path="a" size="10"/>', warnings)
    assert warnings == ["my.xml:3: unknown attribute size on <block_device> ignored"]


def test_stray_text_and_children_warn() -> None:
    warnings: list[str] = []
    parse('<memory size="64">lots<extra/></memory>\nhello', warnings)
    assert warnings == [
        "my.xml:1: text inside <colinux> ignored",
        "my.xml:2: unknown element <extra> inside <memory> ignored",
        "my.xml:2: text inside <memory> ignored",
    ]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            '<block_device index="32" path="a"/>',
            'my.xml:2: <block_device> index="32": index 32 is out of range (0..31)',
        ),
        (
            '<block_device index="-1" path="a"/>',
            'my.xml:2: <block_device> index="-1": expected an index from 0 to 31',
        ),
        (
            '<cofs_device index="x" path="a"/>',
            'my.xml:2: <cofs_device> index="x": expected an index from 0 to 31',
        ),
        ('<block_device path="a"/>', "my.xml:2: <block_device> is missing the attribute index"),
        ('<block_device index="0"/>', "my.xml:2: <block_device> is missing the attribute path"),
        ('<block_device index="0" path=""/>', 'my.xml:2: <block_device> path="": expected a path'),
        ('<network type="tap"/>', "my.xml:2: <network> is missing the attribute index"),
        ("<image/>", "my.xml:2: <image> is missing the attribute path"),
        ("<memory/>", "my.xml:2: <memory> is missing the attribute size"),
        (
            '<block_device index="0" path="a" enabled="yes"/>',
            'my.xml:2: <block_device> enabled="yes": expected true or false',
        ),
        (
            '<cofs_device index="0" path="a" readonly="1"/>',
            'my.xml:2: <cofs_device> readonly="1": expected true or false',
        ),
        ('<memory size="abc"/>', 'my.xml:2: <memory> size="abc": expected a size in megabytes'),
        (
            '<memory size="0"/>',
            'my.xml:2: <memory> size="0": expected a size in megabytes of at least 1',
        ),
        ('<memory size="-5"/>', 'my.xml:2: <memory> size="-5": expected a size in megabytes'),
        (
            '<memory size="99999999999"/>',
            'my.xml:2: <memory> size="99999999999": expected a size in megabytes of at most '
            "1048576 (1 TiB)",
        ),
        (
            '<network index="0" type="wifi"/>',
            'my.xml:2: <network> type="wifi": expected tap, bridged or slirp',
        ),
        (
            '<cofs_device index="0" path="a" type="fat"/>',
            'my.xml:2: <cofs_device> type="fat": expected flat or meta',
        ),
        (
            '<network index="0" mac="00:ff:12"/>',
            'my.xml:2: <network> mac="00:ff:12": expected a MAC address such as 00:ff:12:34:56:78',
        ),
        (
            '<network index="0" mac="01:00:5e:00:00:01"/>',
            'my.xml:2: <network> mac="01:00:5e:00:00:01": a network card needs a unicast MAC '
            "address (an even first byte)",
        ),
        (
            '<network index="0" type="slirp" redir="tcp:22"/>',
            "my.xml:2: <network> redir=\"tcp:22\": redirection 'tcp:22': expected "
            "tcp|udp:[ADDRESS:]HOSTPORT:GUESTPORT[:COUNT], e.g. tcp:2222:22",
        ),
        (
            '<network index="0" type="slirp" redir="tcp:0:22"/>',
            "my.xml:2: <network> redir=\"tcp:0:22\": redirection 'tcp:0:22': host port '0' is "
            "not a port number (1..65535)",
        ),
        (
            '<network index="0" type="slirp" redir="udp:65535:1:2"/>',
            "my.xml:2: <network> redir=\"udp:65535:1:2\": redirection 'udp:65535:1:2': the ports "
            "run past 65535",
        ),
        (
            '<network index="32"/>',
            'my.xml:2: <network> index="32": index 32 is out of range (0..31)',
        ),
        (
            '<block_device index="0" path="a" alias="hdA1"/>',
            'my.xml:2: <block_device> alias="hdA1": expected an alias such as hda1 or sdb2',
        ),
        *(
            (
                f'<cpus count="{bad}"></cpus>',
                f'my.xml:2: <cpus> count="{bad}": expected a whole number of CPUs from 1 to 8',
            )
            for bad in ("0", "-1", "abc", "2.5", "", "9", "+2", " 2", "99999999999999999999")
        ),
        ("<cpus></cpus>", "my.xml:2: <cpus> is missing the attribute count"),
        (
            '<userspace mode="fast"></userspace>',
            'my.xml:2: <userspace> mode="fast": expected auto, seccomp or ptrace',
        ),
        (
            '<userspace mode=""/>',
            'my.xml:2: <userspace> mode="": expected auto, seccomp or ptrace',
        ),
        ("<userspace/>", "my.xml:2: <userspace> is missing the attribute mode"),
    ],
)
def test_errors_name_line_element_attribute_and_expectation(body: str, expected: str) -> None:
    assert error_of(body) == expected


def test_duplicate_index_names_both_lines() -> None:
    message = error_of('<block_device index="0" path="a"/>\n<block_device index="0" path="b"/>')
    assert message == 'my.xml:3: <block_device> index="0": cobd0 is already defined on line 2'
    message = error_of('<network index="1"/>\n\n<network index="01"/>')
    assert message == 'my.xml:4: <network> index="01": eth1 is already defined on line 2'


def test_duplicate_alias_names_both_lines() -> None:
    message = error_of(
        '<block_device index="0" path="a" alias="hda1"/>\n'
        '<block_device index="1" path="b" alias="hda1"/>'
    )
    assert message == 'my.xml:3: <block_device> alias="hda1": hda1 is already defined on line 2'


def test_duplicate_singleton_is_an_error() -> None:
    message = error_of('<memory size="64"/>\n<memory size="128"/>')
    assert message == "my.xml:3: <memory> appears twice (first on line 2)"
    message = error_of('<cpus count="2"/>\n<cpus count="4"/>')
    assert message == "my.xml:3: <cpus> appears twice (first on line 2)"
    message = error_of('<userspace mode="auto"/>\n\n<userspace mode="auto"/>')
    assert message == "my.xml:4: <userspace> appears twice (first on line 2)"


def test_wrong_root_element() -> None:
    with pytest.raises(
        UserError, match=r"^f\.xml:2: the root element is <coLinux>, expected <colinux>$"
    ):
        parse_xml("\n<coLinux/>", source="f.xml", warn=print)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<colinux>\n<memory size='1'>\n</colinux>", "f.xml:3: malformed XML: mismatched tag"),
        ("<colinux>", "f.xml:1: malformed XML: no element found"),
        ("", "f.xml:1: malformed XML: no element found"),
        ("<colinux/>\n<colinux/>", "f.xml:2: malformed XML: junk after document element"),
        (
            "<colinux>\n<image path='a' path='b'/></colinux>",
            "f.xml:2: malformed XML: duplicate attribute",
        ),
        ("<colinux>&undefined;</colinux>", "f.xml:1: malformed XML: undefined entity"),
    ],
)
def test_malformed_xml_names_the_line(text: str, expected: str) -> None:
    with pytest.raises(UserError) as caught:
        parse_xml(text, source="f.xml", warn=print)
    assert str(caught.value) == expected


BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE colinux [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
]>
<colinux><bootparams>&lol4;</bootparams></colinux>
"""

EXTERNAL_ENTITY = """<?xml version="1.0"?>
<!DOCTYPE colinux [<!ENTITY secret SYSTEM "file:///etc/passwd">]>
<colinux><bootparams>&secret;</bootparams></colinux>
"""

EXTERNAL_DTD = """<?xml version="1.0"?>
<!DOCTYPE colinux SYSTEM "http://example.invalid/colinux.dtd">
<colinux/>
"""


@pytest.mark.parametrize("text", [BILLION_LAUGHS, EXTERNAL_ENTITY, EXTERNAL_DTD])
def test_entities_and_doctypes_are_refused(text: str) -> None:
    with pytest.raises(UserError) as caught:
        parse_xml(text, source="evil.xml", warn=print)
    assert str(caught.value) == (
        "evil.xml:2: XML entities and <!DOCTYPE> are not allowed in a colinux configuration"
    )


def test_read_xml_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.xml"
    with pytest.raises(UserError, match=r"nope\.xml: no such file$"):
        read_xml(missing, warn=print)
    with pytest.raises(UserError, match="is a directory"):
        read_xml(tmp_path, warn=print)


def test_writer_escapes_what_xml_needs() -> None:
    machine = Machine(
        kernel=HostPath('/k/"a" & <b>\t\n\r'),
        bootparams=("a&b", "<c>"),
        networks=(NetworkCard(0, NetworkType.TAP, name="x\"y'z"),),
    )
    text = write_xml(machine)
    assert '<image path="/k/&quot;a&quot; &amp; &lt;b&gt;&#9;&#10;&#13;"></image>' in text
    assert "<bootparams>a&amp;b &lt;c&gt;</bootparams>" in text
    assert parse_xml(text, source="x", warn=print) == machine


def test_writer_refuses_what_xml_cannot_hold() -> None:
    with pytest.raises(UserError, match="boot parameter 'init=/bin/sh -c x' cannot be written"):
        write_xml(Machine(bootparams=("init=/bin/sh -c x",)))
    with pytest.raises(UserError, match="control character"):
        write_xml(Machine(kernel=HostPath("a\x01b")))


def test_writer_writes_cpus_and_userspace_only_when_not_the_default() -> None:
    assert "cpus" not in write_xml(SEED_MACHINE) and "userspace" not in write_xml(SEED_MACHINE)
    machine = Machine(memory_mb=128, cpus=4, userspace=Userspace.SECCOMP)
    assert write_xml(machine) == (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        "<colinux>\n"
        '    <memory size="128"></memory>\n'
        '    <cpus count="4"></cpus>\n'
        '    <userspace mode="seccomp"></userspace>\n'
        "</colinux>\n"
    )
    assert parse_xml(write_xml(machine), source="x", warn=print) == machine
    strict = Machine(userspace=Userspace.PTRACE)
    assert '<userspace mode="ptrace"></userspace>' in write_xml(strict)
    assert parse_xml(write_xml(strict), source="x", warn=print) == strict


def test_writer_writes_only_the_attributes_a_type_uses() -> None:
    machine = Machine(
        networks=(
            NetworkCard(0, NetworkType.SLIRP, name="ignored", promisc=False),
            NetworkCard(1, NetworkType.BRIDGED, name="br0", promisc=False),
        )
    )
    text = write_xml(machine)
    assert '<network index="0" type="slirp"></network>' in text
    assert '<network index="1" name="br0" type="bridged" promisc="false"></network>' in text
