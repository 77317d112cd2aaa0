"""Bad input: one line naming what and where, exit status 2, nothing started."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import Colinux

BOMB = """<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<colinux><bootparams>&lol3;</bootparams></colinux>
"""

XML_CASES = {
    "malformed": ("<colinux>\n  <memory size='64'>\n</colinux>\n", ["bad.xml:3", "malformed"]),
    "entity bomb": (BOMB, ["bad.xml:2", "not allowed"]),
    "index out of range": (
        '<colinux>\n<block_device index="32" path="x.img"/>\n</colinux>\n',
        ["bad.xml:2", "out of range"],
    ),
    "duplicate index": (
        '<colinux>\n<block_device index="0" path="a.img"/>\n'
        '<block_device index="0" path="b.img"/>\n</colinux>\n',
        ["bad.xml:3", "cobd0"],
    ),
    "bad memory": ('<colinux>\n<memory size="lots"/>\n</colinux>\n', ["bad.xml:2", "memory"]),
    "too little memory": ('<colinux>\n<memory size="32"/>\n</colinux>\n', ["bad.xml", "32 MB"]),
    "bad cpus": ('<colinux>\n<cpus count="0"/>\n</colinux>\n', ["bad.xml:2", "from 1 to 8"]),
    "too many cpus": (
        '<colinux>\n<cpus count="9"></cpus>\n</colinux>\n',
        ["bad.xml:2", 'count="9"', "CPUs from 1 to 8"],
    ),
    "bad userspace": (
        '<colinux>\n<userspace mode="fast"/>\n</colinux>\n',
        ["bad.xml:2", 'mode="fast"', "expected auto, seccomp or ptrace"],
    ),
    "ptrace with two cpus": (
        '<colinux>\n<cpus count="2"/>\n<userspace mode="ptrace"/>\n</colinux>\n',
        ["bad.xml:2", "more than one CPU needs the seccomp userspace", "on line 3"],
    ),
    "missing image": (
        '<colinux>\n<block_device index="0" path="absent.img"/>\n</colinux>\n',
        ["cobd0", "absent.img", "does not exist"],
    ),
}


def assert_refused(colinux: Colinux, result, *expected: str) -> None:  # type: ignore[no-untyped-def]
    message = result.stderr.decode()
    assert result.returncode == 2, message
    assert message.count("\n") == 1, message
    assert "Traceback" not in message
    for text in expected:
        assert text in message, message
    assert not colinux.run_dir.exists() or not list(colinux.run_dir.iterdir())


@pytest.mark.parametrize("case", list(XML_CASES))
@pytest.mark.parametrize("how", ["daemon", "run", "check"])
def test_bad_xml(colinux: Colinux, case: str, how: str) -> None:
    text, expected = XML_CASES[case]
    xml = colinux.cwd / "bad.xml"
    xml.write_text(text)
    if how == "daemon":
        result = colinux.run("-c", "bad.xml", program="colinux-daemon")
    elif how == "run":
        result = colinux.run("run", "-c", "bad.xml", "--", "true")
    else:
        result = colinux.run("config", "check", "bad.xml")
    assert_refused(colinux, result, *expected)


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        (["mem=abc"], ["mem=abc", "megabytes"]),
        (["mem=32"], ["32 MB is too little", "mem=64"]),  # the kernel would panic
        (["cobd0=a.img", "cobd0=b.img"], ["cobd0=a.img", "cobd0=b.img"]),
        (["cobd40=a.img"], ["cobd40"]),
        (["cobd0=absent.img"], ["absent.img", "does not exist"]),
        (["initrd=absent.gz"], ["absent.gz"]),
        (["eth0=carrier-pigeon"], ["eth0"]),
        (["@absent.conf"], ["absent.conf"]),
        (["@bad.conf"], ["bad.conf:3: mem=abc", "megabytes"]),
        (["cobd0=c:\\root.img"], ["drive C:", "--drive c="]),
        *(
            ([f"cpus={bad}"], [f"cpus={bad}: expected a whole number of CPUs from 1 to 8"])
            for bad in ("0", "-1", "abc", "2.5", "", "9")
        ),
        (["userspace=fast"], ["userspace=fast: expected auto, seccomp or ptrace"]),
        (
            ["cpus=2", "userspace=ptrace"],
            ["cpus=2: more than one CPU needs the seccomp userspace (userspace=ptrace runs one"],
        ),
        (["--bogus"], ["--bogus"]),
        (["-d", "-p", "no-dir/daemon.pid"], ["-p no-dir/daemon.pid", "does not exist"]),
        (["-d", "-p", "."], ["-p .", "is a directory"]),
        (["--"], ["'--' must be followed by a command"]),
    ],
)
def test_bad_command_line(colinux: Colinux, words: list[str], expected: list[str]) -> None:
    for f in ("a.img", "b.img"):
        Path(colinux.cwd / f).write_bytes(b"\0" * 4096)
    (colinux.cwd / "bad.conf").write_text("# more settings\nmem=64\nmem=abc\n")
    assert_refused(colinux, colinux.run(*words, program="colinux-daemon"), *expected)
    if words[0] not in ("--bogus", "-d", "--"):  # colinux-daemon's own switches
        assert_refused(colinux, colinux.run("run", *words, "--", "true"), *expected)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["frobnicate"], ["frobnicate"]),
        (["run", "--frob"], ["--frob"]),
        (["config"], ["check or convert"]),
        (["config", "check", "absent.xml"], ["absent.xml"]),
        (["config", "convert", "absent.xml", "--to", "xml"], ["absent.xml"]),
        (["run", "--name", "bad/name", "--", "true"], ["bad/name"]),
        (["run", "--name", "", "--", "true"], ["guest name ''"]),
        (["run", "--"], ["command"]),
    ],
)
def test_bad_colinux_command(colinux: Colinux, args: list[str], expected: list[str]) -> None:
    assert_refused(colinux, colinux.run(*args), *expected)
