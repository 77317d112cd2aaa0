"""Property tests of colinux exec's wire formats: the agent's lines, a slot's input and output.

The slot-input test runs the encoding through a real host pty set up by
busybox's stty exactly as the guest sets up a slot (the same Linux line
discipline), and the quoting tests run the payloads through busybox sh and
bash, the two shells that read them.
"""

from __future__ import annotations

import os
import pty
import re
import shutil
import subprocess
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from colinux.daemon import agent_protocol as ap
from colinux.daemon.exec_wire import (
    INPUT_EOF,
    SLOT_STTY,
    OutputEnd,
    encode_input,
    new_nonce,
    output_marker,
    session_payload,
    shell_quote,
)
from colinux.guest.image import guest_file

small = st.integers(0, ap.MAX_NUMBER)
words = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=12)
devices = st.from_regex(r"[A-Za-z0-9]{1,8}", fullmatch=True)
messages = st.one_of(
    st.builds(ap.Hello, words, st.lists(words, max_size=3).map(tuple)),
    st.builds(ap.Exit, small),
    st.builds(ap.Reboot),
    st.builds(ap.Ready, small),
    st.builds(ap.Free, small),
    st.builds(
        ap.Run,
        st.sampled_from(["raw", "tty"]),
        st.text(st.characters(blacklist_characters="\r"), min_size=1, max_size=80),
    ),
    st.builds(ap.Shell, st.sampled_from(["once", "respawn"])),
    st.builds(ap.Refuse),
    st.builds(ap.Poweroff),
    st.builds(ap.Kmsg),
    st.builds(ap.Exec, small, devices, devices),
    st.builds(ap.Signal, small, st.sampled_from(ap.SIGNALS)),
    st.builds(ap.Resize, small, small, small),
)


@given(messages)
def test_agent_messages_round_trip_as_one_line(message: ap.Message) -> None:
    line = ap.encode(message)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert line.isascii() or isinstance(message, ap.Run)  # a command may be any text
    assert ap.decode(line) == message
    assert ap.decode(line.rstrip(b"\n") + b"\r\n") == message  # a tty's CR is no matter


@given(st.binary(max_size=200))
def test_any_line_decodes_to_a_message_or_none(line: bytes) -> None:
    message = ap.decode(line)
    assert message is None or ap.decode(ap.encode(message)) == message


@pytest.mark.parametrize(
    "line",
    [b"", b"HELLO", b"EXIT -1", b"EXIT 99999999", b"FREE 1 2", b"EXEC 0 tty/S4 ttyS5",
     b"SIGNAL 0 SEGV", b"RUN raw !!", b"RUN raw 'open", b"RUN bash 'x'", b"EXIT 07",
     b"hello 1.0", b"KMSG now"],
)  # fmt: skip
def test_malformed_lines_are_no_messages(line: bytes) -> None:
    assert ap.decode(line) is None


def test_the_agents_speak_the_protocol() -> None:
    # The default guest's agent and the images' each greet with what decodes.
    for name, flags in (("agent", ("exec",)), ("debian-agent", ("serve", "exec"))):
        text = guest_file(name).decode()
        hello = re.search(r'echo "HELLO \$version ?([a-z ]*)"', text)
        assert hello is not None, name
        assert ap.decode(f"HELLO 0.1.0 {hello.group(1)}".encode()) == ap.Hello("0.1.0", flags)


# -- a slot's input: canonical mode, ^D and ^V ---------------------------------------------


def _slot_pty() -> tuple[int, int]:
    master, slave = pty.openpty()
    subprocess.run(
        ["/bin/busybox", "stty", "-F", os.ttyname(slave), *SLOT_STTY.split()], check=True
    )
    return master, slave


def _read_to_eof(fd: int) -> tuple[bytes, int]:
    """What read() gives until it returns 0 (the end of input), and how many reads."""
    data, reads = b"", 0
    while chunk := os.read(fd, 65536):
        data += chunk
        reads += 1
    return data, reads


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.binary(max_size=5000), max_size=6))
def test_stdin_reaches_the_reader_byte_for_byte_then_eof(chunks: list[bytes]) -> None:
    master, slave = _slot_pty()
    try:
        wire = b"".join(encode_input(c) for c in chunks) + INPUT_EOF
        writer = threading.Thread(target=os.write, args=(master, wire))  # the reader drains it
        writer.start()
        data, _ = _read_to_eof(slave)
        writer.join()
        assert data == b"".join(chunks)
    finally:
        os.close(master)
        os.close(slave)


def test_a_session_payload_and_its_stdin_are_two_inputs() -> None:
    # The worker reads the payload to its end; the command's stdin follows.
    master, slave = _slot_pty()
    try:
        payload = session_payload(["true"], mode="pipe", nonce=new_nonce())
        os.write(
            master, encode_input(payload) + INPUT_EOF + encode_input(b"\x04\x16\n") + INPUT_EOF
        )
        assert _read_to_eof(slave)[0] == payload
        assert _read_to_eof(slave)[0] == b"\x04\x16\n"
    finally:
        os.close(master)
        os.close(slave)


def test_the_guest_sets_slots_up_as_exec_wire_says() -> None:
    text = guest_file("exec-sessions").decode()
    body = re.search(r"exec_line_mode\(\) \{\n\s+stty -F \"\$1\" (.*?) 2>/dev/null", text, re.S)
    assert body is not None
    words = body.group(1).replace("\\\n", " ").replace("'", "").split()
    assert words == SLOT_STTY.split()


# -- the payload's quoting, read by the shells that read it --------------------------------

SHELLS = [s for s in ("/bin/busybox sh", "/bin/bash") if shutil.which(s.split()[0])]
any_word = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"), max_size=30
)


@settings(max_examples=40, deadline=None)
@given(st.lists(any_word, min_size=1, max_size=5))
def test_quoted_words_come_back_byte_for_byte(argv: list[str]) -> None:
    script = "printf '%s\\0' " + " ".join(shell_quote(w) for w in argv)
    assert script.isascii() and script.isprintable()
    for shell in SHELLS:
        out = subprocess.run([*shell.split(), "-c", script], capture_output=True, check=True)
        assert out.stdout.split(b"\0")[:-1] == [w.encode() for w in argv], shell


def test_a_payload_runs_its_command_with_its_environment(tmp_path: Path) -> None:
    # exec_command, sourced as the worker does, in both shells (setsid and env as in the guest).
    payload = session_payload(
        ["sh", "-c", 'printf "%s|%s|%s|%s" "$1" "$PWD" "$GREETING" "${TERM-none}"', "x",
         "it's\n\"quoted\" $HOME"],
        mode="null", nonce=new_nonce(), cwd=str(tmp_path), env={"GREETING": "héllo wörld"},
    )  # fmt: skip
    (tmp_path / "payload").write_bytes(payload)
    for shell in SHELLS:
        out = subprocess.run(
            [*shell.split(), "-c", f". {tmp_path}/payload && exec_command"],
            capture_output=True, env={"TERM": "leaked", "PATH": os.environ["PATH"]},
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        assert out.stdout.decode() == f'it\'s\n"quoted" $HOME|{tmp_path}|héllo wörld|none'


def test_a_payload_for_a_missing_directory_ends_with_126(tmp_path: Path) -> None:
    payload = session_payload(["true"], mode="null", nonce=new_nonce(), cwd="/no/such/dir")
    (tmp_path / "payload").write_bytes(payload)
    for shell in SHELLS:
        out = subprocess.run(
            [*shell.split(), "-c", f". {tmp_path}/payload && exec_command"], capture_output=True
        )
        assert out.returncode == 126, shell


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [({"mode": "raw"}, "mode"), ({"nonce": "XYZ"}, "nonce"), ({"env": {"1A": "x"}}, "name"),
     ({"rows": 70000}, "rows")],
)  # fmt: skip
def test_a_bad_payload_is_refused(kwargs: dict[str, object], error: str) -> None:
    arguments: dict[str, object] = {"mode": "null", "nonce": new_nonce(), **kwargs}
    with pytest.raises(ValueError, match=error):
        session_payload(["true"], **arguments)  # type: ignore[arg-type]


# -- the end of a session's output -----------------------------------------------------------


@given(
    st.binary(max_size=300),
    st.integers(0, 255),
    st.lists(st.integers(1, 50), min_size=1, max_size=40),
    st.binary(max_size=20),
)
def test_the_end_of_output_is_found_in_any_chunking(
    output: bytes, status: int, cuts: list[int], after: bytes
) -> None:
    nonce = new_nonce()
    marker = output_marker(nonce, "o")
    wire = output + marker + b"%03d" % status + after
    end = OutputEnd(marker, trailer=3)
    passed, i = b"", 0
    for cut in cuts * (len(wire) // sum(cuts) + 1):
        passed += end.feed(wire[i : i + cut])
        i += cut
        if i >= len(wire):
            break
    assert passed == output
    assert end.trailer == b"%03d" % status


@given(st.binary(max_size=300).filter(lambda b: not b.endswith(b"\0")))
def test_output_without_its_end_is_held_back_only_at_a_nul(output: bytes) -> None:
    # Text is passed on at once: only what may start the marker (a NUL...) waits.
    end = OutputEnd(output_marker(new_nonce(), "e"))
    passed = end.feed(output)
    assert output.startswith(passed)
    assert b"\0" in output[len(passed) :] or passed == output
    assert end.trailer is None


# -- the client's run directory: exec_client finds it without control.rundir ----------------


def test_the_exec_client_finds_guests_where_rundir_puts_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from colinux.console.exec_client import _guest_paths
    from colinux.control.rundir import guest_dir

    def agree() -> None:
        gdir = guest_dir("web")
        assert _guest_paths("web") == (str(gdir.control_socket), str(gdir.path / "lock"))

    monkeypatch.setenv("COLINUX_RUN_DIR", str(tmp_path / "run"))
    agree()
    monkeypatch.delenv("COLINUX_RUN_DIR")
    runtime = tmp_path / "xdg"
    runtime.mkdir()
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    if os.getuid() == 0:
        agree()  # /run/colinux for root, whatever XDG_RUNTIME_DIR says
        monkeypatch.setattr(os, "getuid", lambda: 4242)  # ... and for anyone else:
        monkeypatch.setattr("colinux.control.rundir._private_dir", lambda path: path)
        os.chown(runtime, 4242, 4242)
    agree()
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    agree()  # /tmp/colinux-UID


# -- the client's quick reading of its command line, against argparse's -------------------

plain = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=8)
option = st.one_of(
    st.just(["-t"]), st.just(["--tty"]), st.just(["--debug"]),
    st.tuples(st.sampled_from(["-w", "--workdir"]), plain).map(list),
    st.tuples(st.sampled_from(["-e", "--env"]), plain).map(list),
    st.tuples(st.just("--wait"), st.integers(0, 999).map(str)).map(list),
)  # fmt: skip


@given(
    st.lists(option, max_size=5),
    plain.filter(lambda w: not w.startswith("-")),
    st.booleans(),
    st.lists(plain, max_size=4),
)
def test_the_quick_reading_agrees_with_argparse(
    options: list[list[str]], name: str, dashes: bool, command: list[str]
) -> None:
    from colinux.console.exec_client import _parse_quickly, build_parser

    words = [w for o in options for w in o] + [name] + (["--"] if dashes else []) + command
    quick = _parse_quickly("exec", words)
    if quick is None:  # something it leaves to argparse (a value that looks like an option)
        return
    full = build_parser("exec").parse_args(words)
    for field in ("tty", "workdir", "env", "name", "wait", "debug"):
        assert getattr(quick, field) == getattr(full, field), field

    def without_dashes(words: list[str]) -> list[str]:  # as parse_request takes them
        return words[1:] if words[:1] == ["--"] else words

    assert without_dashes(quick.command) == without_dashes(full.command)
