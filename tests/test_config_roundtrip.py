"""Property tests: each writer's output reads back to an equal Machine, and the
readers fail only with UserError, whatever they are given."""

from __future__ import annotations

import contextlib
import shlex

from hypothesis import given
from hypothesis import strategies as st
from machine_strategies import FAST, machines

from colinux.config.cmdline import (
    format_cmdline,
    parse_cmdline,
    parse_cmdline_text,
    tokenize,
    write_cmdline,
)
from colinux.config.model import Machine, Userspace
from colinux.config.xml import parse_xml, write_xml
from colinux.errors import UserError


@FAST
@given(machines())
def test_xml_round_trip(machine: Machine) -> None:
    assert parse_xml(write_xml(machine), source="m.xml", warn=_no_warning) == machine


@FAST
@given(machines(all_enabled=True))
def test_cmdline_round_trip(machine: Machine) -> None:
    assert parse_cmdline(write_cmdline(machine)) == machine


@FAST
@given(machines(all_enabled=True))
def test_xml_to_cmdline_to_xml(machine: Machine) -> None:
    xml_text = write_xml(machine)
    from_xml = parse_xml(xml_text, source="m.xml", warn=_no_warning)
    again = parse_cmdline(write_cmdline(from_xml))
    assert write_xml(again) == xml_text


@FAST
@given(machines(all_enabled=True))
def test_formatted_line_survives_a_shell(machine: Machine) -> None:
    # What format_cmdline prints, pasted into a POSIX shell, means the same machine.
    assert parse_cmdline(shlex.split(format_cmdline(machine))) == machine


@FAST
@given(machines(all_enabled=True))
def test_formatted_line_reads_back_as_a_file(machine: Machine) -> None:
    assert parse_cmdline_text(format_cmdline(machine), source="m.conf", base_dir="/") == machine


_keys = st.sampled_from(
    [
        *("", "kernel=", "mem=", "initrd=", "cobd0=", "cobd99=", "cofs1=", "eth0=", "eth2=slirp,"),
        *("hda1=", "hda1=:", "sdb=:cobd", "eth0=tuntap,", "eth0=pcap-bridge,", "cofs0=x,", "@"),
        *("ttys0=", "ttys9=", "ttys1=daemon", "ttys2=/dev/x,", 'ttys3=/dev/x,"baud='),
        *("cpus=", "cpus=1", "userspace=", "userspace=ptrace", "userspace=seccomp"),
    ]
)
_values = st.text(st.characters(codec="utf-8"), max_size=12) | st.sampled_from(
    [
        *('"', '""', ",", ":cobd0", ":cobd1", "00:ff:00:00:00:01", "tcp:1:2", "meta,ro", 'x,"y'),
        *("0", "2", "8", "9", "auto", "ptrace", "seccomp"),
    ]
)
random_words = st.lists(st.builds(lambda k, v: k + v, _keys, _values), max_size=6)


@FAST
@given(random_words)
def test_parse_cmdline_raises_only_user_error(words: list[str]) -> None:
    with contextlib.suppress(UserError):
        parse_cmdline(words)


@FAST
@given(random_words, machines())
def test_parse_cmdline_over_a_base_raises_only_user_error(words: list[str], base: Machine) -> None:
    with contextlib.suppress(UserError):
        parse_cmdline(words, base=base)


_cpus_words = st.lists(
    st.sampled_from(["cpus=1", "cpus=2", "cpus=8", "userspace=ptrace", "userspace=seccomp"])
    | st.sampled_from(["userspace=auto", "cpus=0", "cpus=9", "userspace=x", "mem=128"]),
    max_size=5,
)


@FAST
@given(_cpus_words, machines())
def test_no_command_line_gives_ptrace_more_than_one_cpu(words: list[str], base: Machine) -> None:
    try:
        machine = parse_cmdline(words, base=base)
    except UserError as error:
        assert str(error).startswith("command line: ")
        return
    assert machine.cpus == 1 or machine.userspace != Userspace.PTRACE
    # Otherwise the last word of each key counts, over the base.
    last = {w.partition("=")[0]: w.partition("=")[2] for w in words}
    assert machine.cpus == int(last.get("cpus", base.cpus))
    assert machine.userspace == Userspace(last.get("userspace", base.userspace))


@FAST
@given(st.text(max_size=60))
def test_tokenize_raises_only_user_error(text: str) -> None:
    with contextlib.suppress(UserError):
        tokenize(text, "f.conf")


_attributes = st.sampled_from(
    [
        *('index="0"', 'index="x"', 'index="99"', 'path="p"', 'path=""', 'enabled="maybe"'),
        *('type="meta"', 'type="slirp"', 'mac="zz"', 'redir="tcp:1"', 'size="0"', 'alias="hdz"'),
        *('name="n"', 'promisc="false"', 'readonly="true"', 'bogus="1"'),
        *('device="/dev/x"', 'device=""', 'mode="baud=9600"', 'mode="baud=1"', 'index="3"'),
        *('count="2"', 'count="1"', 'count="0"', 'count="9"', 'mode="ptrace"', 'mode="seccomp"'),
    ]
)
_elements = st.sampled_from(
    [
        *("block_device", "cofs_device", "bootparams", "initrd", "image", "memory", "network"),
        *("serial", "cpus", "userspace", "x"),
    ]
)


@FAST
@given(st.lists(st.tuples(_elements, st.lists(_attributes, unique=True, max_size=4)), max_size=6))
def test_read_xml_raises_only_user_error(elements: list[tuple[str, list[str]]]) -> None:
    body = "".join(f"<{tag} {' '.join(attrs)}>text</{tag}>\n" for tag, attrs in elements)
    with contextlib.suppress(UserError):
        machine = parse_xml(f"<colinux>\n{body}</colinux>", source="f.xml", warn=lambda _: None)
        assert machine.cpus == 1 or machine.userspace != Userspace.PTRACE


@FAST
@given(st.binary(max_size=80))
def test_read_xml_of_any_bytes_raises_only_user_error(data: bytes) -> None:
    with contextlib.suppress(UserError):
        parse_xml(b"<colinux>" + data, source="f.xml", warn=lambda _: None)


def _no_warning(message: str) -> None:
    raise AssertionError(f"unexpected warning: {message}")
