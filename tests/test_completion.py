"""Shell completion: the scripts `colinux completion bash|zsh|fish` prints, run by the real
shells, complete verbs, options, machine settings from the settings table, and the names
of running guests."""

from __future__ import annotations

import os
import pty
import re
import select
import shlex
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import BIN, Colinux

from colinux.cli import build_parser
from colinux.completion import GUEST, GUEST_VERBS, SHELLS, commands, script
from colinux.config import settings
from colinux.version import __version__

ON_PATH = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}


def written(tmp_path: Path, shell: str) -> Path:
    path = tmp_path / f"colinux.{shell}"
    path.write_text(script(shell, build_parser(), __version__))
    return path


def needs(shell: str) -> None:
    if shutil.which(shell) is None:
        pytest.skip(f"{shell} is not installed (setup.sh installs it)")


def bash_completes(script_path: Path, line: str, env: dict[str, str] = ON_PATH) -> list[str]:
    """COMPREPLY of the script's function in a real bash, for the command line ``line``
    with the cursor at its end, as bash's programmable completion calls it."""
    program = f"""
source {shlex.quote(str(script_path))}
COMP_LINE={shlex.quote(line)}; COMP_POINT=${{#COMP_LINE}}
read -ra COMP_WORDS <<<"$COMP_LINE"; COMP_CWORD=${{#COMP_WORDS[@]}}
[[ $COMP_LINE == *' ' ]] || COMP_CWORD=$((COMP_CWORD - 1))
COMPREPLY=()
_colinux colinux "${{COMP_WORDS[COMP_CWORD]-}}" "${{COMP_WORDS[COMP_CWORD-1]}}"
printf '%s\\n' "${{COMPREPLY[@]}}"
"""
    result = subprocess.run(
        ["bash", "--norc", "-c", program], capture_output=True, text=True, env=env, timeout=30
    )
    assert result.returncode == 0, result.stderr
    return [word for word in result.stdout.splitlines() if word]


def fish_completes(script_path: Path, line: str, env: dict[str, str] = ON_PATH) -> list[str]:
    """What fish offers for ``line`` (`complete -C`), descriptions dropped."""
    program = f"source {shlex.quote(str(script_path))}; complete -C {shlex.quote(line)}"
    result = subprocess.run(
        ["fish", "--no-config", "-c", program], capture_output=True, text=True, env=env, timeout=30
    )
    assert result.returncode == 0, result.stderr
    return [entry.split("\t")[0] for entry in result.stdout.splitlines()]


def zsh_completes(script_path: Path, line: str, env: dict[str, str] = ON_PATH) -> str:
    """The command line after TAB in a real interactive zsh (compinit, the script): the
    word it completes to, where there is one."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: an interactive zsh on the pty
        os.execvpe("zsh", ["zsh", "-f", "-i"], env)
    try:
        # TAB completes; then Ctrl-A and a print at the start of the line show it.
        typed = (
            f"autoload -U compinit; compinit -u -D; source {shlex.quote(str(script_path))}\n"
            f"{line}\t\x01print -r -- COMPLETED:\n"
        )
        os.write(fd, typed.encode())
        seen = b""
        deadline = time.monotonic() + 30
        while (found := re.search(rb"\nCOMPLETED: ?(.*?)\r?\n", seen)) is None:
            assert time.monotonic() < deadline, seen
            if select.select([fd], [], [], 1)[0]:
                seen += os.read(fd, 4096)
        return found.group(1).decode()
    finally:
        os.write(fd, b"exit\n")
        for _ in range(100):
            if os.waitpid(pid, os.WNOHANG)[0]:
                break
            time.sleep(0.05)
        else:  # a zsh that did not end: no process outlives the test
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        os.close(fd)


# --- what the scripts hold ------------------------------------------------------------


@pytest.mark.parametrize("shell", SHELLS)
def test_scripts_are_valid_in_their_shell(tmp_path: Path, shell: str) -> None:
    needs(shell)
    result = subprocess.run([shell, "-n", str(written(tmp_path, shell))], capture_output=True)
    assert (result.returncode, result.stderr) == (0, b"")


def test_every_verb_and_setting_is_in_the_scripts(tmp_path: Path) -> None:
    verbs = [
        name for name, _ in next(c for c in commands(build_parser()) if c.path == "").subcommands
    ]
    assert {"run", "start", "console", "stop", "config", "completion"} <= set(verbs)
    keys = settings.completion_keys()
    assert {"mem=", "cobd0=", "cofs31=", "eth0=", "ttys3=", "userspace="} <= set(keys)
    for shell in SHELLS:
        text = written(tmp_path, shell).read_text()
        for word in [*verbs, *keys]:
            assert word in text, (shell, word)


# --- bash ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("colinux st", ["start", "stop"]),
        ("colinux config ", ["check", "convert"]),
        ("colinux config convert m.xml --to ", ["cmdline", "xml"]),
        ("colinux stop --", ["--help", "--force", "--timeout"]),
        ("colinux completion ", ["bash", "zsh", "fish"]),
        ("colinux run me", ["mem="]),
        ("colinux start web us", ["userspace="]),
        ("colinux run co", ["cobd0=", "cofs0="]),
        ("colinux run ttys", ["ttys0=", "ttys1=", "ttys2=", "ttys3="]),
        # bash replaces what follows the last = (COMP_WORDBREAKS): the values alone.
        ("colinux run userspace=", ["auto", "seccomp", "ptrace"]),
        ("colinux run eth1=s", ["slirp"]),
        ("colinux run cpus=", [str(n) for n in range(1, 9)]),
    ],
)
def test_bash_completes(tmp_path: Path, line: str, expected: list[str]) -> None:
    assert bash_completes(written(tmp_path, "bash"), line) == expected


def test_bash_completes_every_verb_and_files_where_files_go(tmp_path: Path) -> None:
    completion = written(tmp_path, "bash")
    verbs = bash_completes(completion, "colinux ")
    assert {"run", "start", "list", "console", "stop", "config", "image", "completion"} <= set(
        verbs
    )
    (tmp_path / "disk one.img").touch()
    (tmp_path / "share").mkdir()
    base = f"{tmp_path}/"
    assert bash_completes(completion, f"colinux run cobd0={base}disk") == [f"{base}disk one.img"]
    assert bash_completes(completion, f"colinux run cofs0={base}s") == [f"{base}share"]
    assert bash_completes(completion, f"colinux run -c {base}di") == [f"{base}disk one.img"]
    assert bash_completes(completion, f"colinux run @{base}di") == [f"{base}disk one.img"]
    # After --, the guest's command: files, as a shell would.
    assert bash_completes(completion, f"colinux run -- cat {base}di") == [f"{base}disk one.img"]
    # Many keys, but only once a device is begun.
    assert "cobd31=" in bash_completes(completion, "colinux run cobd")
    assert "cobd31=" not in bash_completes(completion, "colinux run ")


def test_bash_registers_the_function(tmp_path: Path) -> None:
    completion = written(tmp_path, "bash")
    result = subprocess.run(
        ["bash", "--norc", "-c", f"source {completion}; complete -p colinux"],
        capture_output=True,
        text=True,
    )
    assert result.stdout.strip() == "complete -F _colinux colinux"


# --- zsh and fish --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "completed"),
    [
        ("colinux comp", "colinux completion"),
        ("colinux run me", "colinux run mem="),
        ("colinux run userspace=pt", "colinux run userspace=ptrace"),
        ("colinux stop --ti", "colinux stop --timeout"),
        ("colinux config convert f --to x", "colinux config convert f --to xml"),
    ],
)
def test_zsh_completes(tmp_path: Path, line: str, completed: str) -> None:
    needs("zsh")
    assert zsh_completes(written(tmp_path, "zsh"), line).rstrip() == completed


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("colinux st", ["start", "stop"]),
        ("colinux run me", ["mem="]),
        ("colinux run eth0=", ["eth0=pcap-bridge", "eth0=slirp", "eth0=tuntap"]),
        ("colinux config convert f --to ", ["cmdline", "xml"]),
        ("colinux stop --t", ["--timeout"]),
    ],
)
def test_fish_completes(tmp_path: Path, line: str, expected: list[str]) -> None:
    needs("fish")
    assert fish_completes(written(tmp_path, "fish"), line) == expected


# --- the command, and running guests -------------------------------------------------


def test_completion_command(colinux: Colinux) -> None:
    for shell in SHELLS:
        result = colinux.run("completion", shell)
        assert result.returncode == 0, result.stderr
        assert result.stdout.decode() == script(shell, build_parser(), __version__)
    for bad, message in (((), b"name the shell"), (("tcsh",), b"invalid choice: 'tcsh'")):
        result = colinux.run("completion", *bad)
        assert result.returncode == 2
        assert message in result.stderr and result.stderr.count(b"\n") == 1


def test_running_guests_names_are_completed(colinux: Colinux, tmp_path: Path) -> None:
    env = {**colinux.env, "PATH": f"{BIN}:{os.environ['PATH']}"}
    assert colinux.run("completion", "--guests").stdout == b""
    started = colinux.run("start", "web")
    assert started.returncode == 0, started.stderr
    try:
        assert colinux.run("completion", "--guests").stdout == b"web\n"
        bash, zsh, fish = (written(tmp_path, shell) for shell in SHELLS)
        verbs = {c.path for c in commands(build_parser()) if GUEST in c.positionals}
        assert {"console", "stop", "debug", "serial", "exec", "shell"} <= verbs <= GUEST_VERBS
        for verb in sorted(verbs):
            assert bash_completes(bash, f"colinux {verb} ", env) == ["web"], verb
        assert bash_completes(bash, "colinux start ", env) == []  # a new guest's name
        if shutil.which("zsh"):
            assert zsh_completes(zsh, "colinux console w", env).rstrip() == "colinux console web"
        if shutil.which("fish"):
            assert fish_completes(fish, "colinux stop ", env) == ["web"]
    finally:
        assert colinux.run("stop", "web").returncode == 0
