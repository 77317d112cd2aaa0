"""The settings table: each row round-trips in both forms and is in the usage text and
the README, and one profile rule gives a configuration file the same machine however it
is given (colinux-daemon @f.conf or -c f.conf, colinux run and start, config check and
convert)."""

from __future__ import annotations

import dataclasses
import shlex
import subprocess
from pathlib import Path

import pytest
from conftest import MEMORY_PROBE, Colinux, memory_given
from hypothesis import given
from hypothesis import strategies as st
from machine_strategies import FAST, SETTING_VALUES

from colinux.config import settings
from colinux.config.cmdline import format_cmdline, parse_cmdline, setting_key, write_cmdline
from colinux.config.model import Machine, NetworkCard, NetworkType
from colinux.config.settings import SETTINGS, Devices, Scalar
from colinux.config.xml import XML_LAYOUT, parse_xml, write_xml

README = Path(__file__).resolve().parents[1] / "README.md"


def _no_warning(message: str) -> None:
    raise AssertionError(f"unexpected warning: {message}")


def test_rows_name_fields_the_model_has() -> None:
    machine_fields = {f.name for f in dataclasses.fields(Machine)}
    for setting in SETTINGS:
        assert setting.field in machine_fields
        if isinstance(setting, Devices):
            device_fields = {f.name for f in dataclasses.fields(setting.kind)}
            for attribute in setting.attributes:
                assert attribute.field in device_fields, (setting.element, attribute.name)
    # Every field a configuration can set has its row (source is only for messages).
    assert {s.field for s in SETTINGS} == machine_fields - {"source"}
    assert sorted(XML_LAYOUT) == sorted(s.element for s in SETTINGS)


def test_every_key_reads_as_a_setting() -> None:
    for setting in SETTINGS:
        if isinstance(setting, Scalar):
            assert setting_key(f"{setting.key}=x") == setting.key
        elif isinstance(setting, Devices):
            for key in (setting.indexed_keys()[0], setting.indexed_keys()[-1]):
                assert setting_key(f"{key}=x") == key


def test_every_row_has_a_strategy() -> None:
    # A new row fails here until the round trip below draws its values.
    assert set(SETTING_VALUES) == {s.field for s in SETTINGS}


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: s.field)
@FAST
@given(data=st.data())
def test_every_row_round_trips_in_both_forms(
    setting: settings.Setting, data: st.DataObject
) -> None:
    # XML holds everything, disabled devices too; a command line only enabled ones.
    any_value = data.draw(SETTING_VALUES[setting.field](False), label="XML value")
    in_xml = Machine(**{setting.field: any_value})
    assert parse_xml(write_xml(in_xml), source="m.xml", warn=_no_warning) == in_xml
    value = data.draw(SETTING_VALUES[setting.field](True), label="value")
    machine = Machine(**{setting.field: value})
    assert parse_cmdline(write_cmdline(machine)) == machine
    assert parse_cmdline(shlex.split(format_cmdline(machine))) == machine
    # From one form to the other and back.
    xml_text = write_xml(machine)
    assert write_xml(parse_cmdline(write_cmdline(machine))) == xml_text
    from_xml = parse_xml(xml_text, source="m.xml", warn=_no_warning)
    assert write_cmdline(from_xml) == write_cmdline(machine)


def test_every_form_is_in_the_usage_text(colinux: Colinux) -> None:
    result = colinux.run("--help", program="colinux-daemon")
    assert result.returncode == 0, result.stderr
    usage = result.stdout.decode()
    assert settings.usage_text() in usage
    for setting in SETTINGS:
        for form in setting.forms:
            assert f"  {form.syntax} " in usage or f"  {form.syntax}\n" in usage, form.syntax


def test_the_readme_table_is_the_table() -> None:
    text = README.read_text()
    # Regenerate with: python -m colinux.config.settings
    assert settings.markdown_table() in text
    for setting in SETTINGS:
        for form in setting.forms:
            cell = form.syntax.replace("|", "\\|")  # as a Markdown table holds it
            assert f"`{cell}`" in text, form.syntax


def test_the_profile_rule() -> None:
    def never() -> bool:
        raise AssertionError("a file's profile does not depend on the host's network")

    assert settings.profile_for(from_file=True, network=never) == Machine()
    guest = settings.profile_for(from_file=False, network=lambda: True)
    assert (guest.memory_mb, guest.networks) == (256, (NetworkCard(0, NetworkType.SLIRP),))
    assert settings.profile_for(from_file=False, network=lambda: False).networks == ()


# The drift issue 12 found: a KEY=VALUE file holding only cobd0= ran with 256 MB and a
# slirp card as @FILE, but with 64 MB and none as -c FILE, in config check and convert.
PROBE = f"{MEMORY_PROBE}; ls /sys/class/net | grep -vx lo | tr '\\n' ' '"


def _probe(result: subprocess.CompletedProcess[bytes]) -> tuple[int, list[str]]:
    assert result.returncode == 0, result.stderr
    memory, *cards = result.stdout.decode().split()
    return int(memory), cards


def test_a_file_is_the_same_machine_however_it_is_given(colinux: Colinux) -> None:
    with open(colinux.cwd / "disk.img", "wb") as disk:
        disk.truncate(8 << 20)
    (colinux.cwd / "f.conf").write_text("cobd0=disk.img\n")
    job = ("--", "sh", "-c", PROBE)
    runs = {
        "colinux-daemon @f.conf": colinux.run("@f.conf", *job, program="colinux-daemon"),
        "colinux-daemon -c f.conf": colinux.run("-c", "f.conf", *job, program="colinux-daemon"),
        "colinux run @f.conf": colinux.run("run", "--no-share", "@f.conf", *job),
        "colinux run -c f.conf": colinux.run("run", "--no-share", "-c", "f.conf", *job),
    }
    for how, result in runs.items():
        memory, cards = _probe(result)
        assert memory_given(memory, 64) and cards == [], (how, memory, cards)
    check = colinux.run("config", "check", "f.conf")
    assert (check.returncode, check.stderr) == (0, b"")
    assert check.stdout.decode() == (
        "f.conf: ok (64 MB, 1 CPU(s), userspace=auto, 1 block device(s), "
        "0 cofs share(s), 0 network card(s))\n"
    )
    convert = colinux.run("config", "convert", "f.conf", "--to", "cmdline")
    assert (convert.stdout, convert.returncode) == (b"mem=64 cobd0=disk.img\n", 0)
    started = colinux.run("start", "bg", "@f.conf")
    assert started.returncode == 0, started.stderr
    try:
        listed = colinux.run("list").stdout.decode().splitlines()[1].split()
        assert listed[:4] == ["bg", listed[1], listed[2], "64M"], listed
    finally:
        assert colinux.run("stop", "bg").returncode == 0


def test_words_alone_go_over_the_default_guest(colinux: Colinux) -> None:
    from colinux.net.passt import passt_usable
    from colinux.net.slirp import tun_usable

    with open(colinux.cwd / "disk.img", "wb") as disk:
        disk.truncate(8 << 20)
    result = colinux.run("cobd0=disk.img", "--", "sh", "-c", PROBE, program="colinux-daemon")
    memory, cards = _probe(result)
    assert memory_given(memory, 256), memory
    assert cards == (["eth0"] if tun_usable() or passt_usable() else [])
