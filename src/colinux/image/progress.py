"""Progress of ``colinux image root``: what mmdebstrap is doing, how far it has come.

``MmdebstrapLog`` reads mmdebstrap's ``--verbose`` output (its ``I:`` stages,
apt's ``N newly installed``, ``Need to get``, ``Get:`` lines and dpkg's
``Setting up``), a pure parser; ``BuildProgress`` shows it: rich's live
display (stage, a bar of packages done of total, bytes, elapsed) when the
output is a terminal, plain lines otherwise, one per stage and a few per
phase::

    log, shown = MmdebstrapLog(), BuildProgress(sys.stdout)
    for line in mmdebstrap_output:
        if log.feed(line):
            shown.update(log.state)
    shown.close()
"""

from __future__ import annotations

import re
import sys
import time
from dataclasses import dataclass, replace
from typing import Any, TextIO

# mmdebstrap's stages (the start of its I: lines) and how we say them.
STAGES = (
    ("I: automatically chosen mode", "choosing how to install"),
    ("I: running apt-get update", "reading Debian's package lists"),
    ("I: downloading packages", "downloading Debian packages"),
    ("I: extracting archives", "extracting"),
    ("I: installing essential", "installing the essential packages"),
    ("I: installing remaining", "installing the other packages"),
    ("I: running --customize-hook", "adding colinux's files, making the ext4 image"),
)
_NEWLY = re.compile(r"\d+ upgraded, (\d+) newly installed")
_NEED = re.compile(r"Need to get ([\d.,]+ [kMG]?B)")
_GET = re.compile(r"Get:\d+ \S+ \S+ \S+ \S+ \S+ \S+ \[([\d.,]+ [kMG]?B)\]")
_UNITS = {"B": 1, "kB": 1000, "MB": 1000**2, "GB": 1000**3}  # apt counts in SI units


def parse_bytes(text: str) -> int:
    """apt's ``29.7 MB``, ``37.6 kB``, ``0 B`` as bytes."""
    number, unit = text.split()
    return int(float(number.replace(",", "")) * _UNITS[unit])


@dataclass(frozen=True)
class BuildState:
    stage: str = ""  # one of STAGES' descriptions
    phase: str = ""  # "downloading" or "installing" while there are packages to count
    done: int = 0  # packages of this phase
    total: int = 0
    bytes_done: int = 0  # downloaded, of what apt said it needs
    bytes_total: int = 0


class MmdebstrapLog:
    """mmdebstrap's verbose output, line by line, as a ``BuildState``."""

    def __init__(self) -> None:
        self.state = BuildState()
        self._downloaded = 0  # packages fetched so far: the essential ones dpkg installs

    def feed(self, line: str) -> bool:
        """Take one line; whether the state changed."""
        before = self.state
        s = self.state
        for prefix, stage in STAGES:
            if line.startswith(prefix):
                if stage != s.stage:
                    s = BuildState(stage=stage)
                    if prefix == "I: installing essential":
                        s = replace(s, phase="installing", total=self._downloaded)
                break
        else:
            if match := _NEWLY.match(line):
                s = replace(s, phase="downloading", done=0, total=int(match.group(1)),
                            bytes_done=0, bytes_total=0)  # fmt: skip
            elif (match := _NEED.match(line)) and s.phase == "downloading":
                s = replace(s, bytes_total=parse_bytes(match.group(1)))
            elif (match := _GET.match(line)) and s.phase == "downloading":
                self._downloaded += 1
                s = replace(s, done=s.done + 1, bytes_done=s.bytes_done + parse_bytes(match[1]))
            elif line.startswith("Setting up ") and s.total:
                if s.phase != "installing":
                    s = replace(s, phase="installing", done=0)
                s = replace(s, done=min(s.done + 1, s.total))
        self.state = s
        return s != before


class BuildProgress:
    """Shows a ``BuildState``: rich's live display on a terminal, else plain lines."""

    def __init__(self, stream: TextIO | None = None, *, start: float | None = None) -> None:
        self.stream = stream or sys.stdout
        self.start = time.monotonic() if start is None else start
        self.state = BuildState()
        self._quarter = 0  # of the phase's packages, last printed (plain lines)
        self._live: Any = None
        self._task: Any = None
        if self.stream.isatty():
            try:
                self._live = _rich_display(self.stream)
            except ImportError:  # plain lines, as for a pipe
                self._live = None
            if self._live is not None:
                self._live.start()
                self._task = self._live.add_task("starting", total=None, bytes="")

    def line(self, text: str) -> None:
        """A line that stays (what is built, where, how long it took)."""
        if self._live is not None:
            self._live.console.print(text, highlight=False, markup=False)
        else:
            print(text, file=self.stream, flush=True)

    def update(self, state: BuildState) -> None:
        previous, self.state = self.state, state
        if state.stage != previous.stage:
            self.line(f"  [{self._elapsed():5.0f} s] {state.stage}")
            self._quarter = 0
        if self._live is not None:
            self._live.update(
                self._task,
                description=state.stage + (f": {state.phase}" if state.phase else ""),
                completed=state.done,
                total=state.total or None,
                bytes=_bytes(state) if state.phase == "downloading" else "",
            )
            return
        if state.total and state.phase:
            quarter = 4 * state.done // state.total
            if state.phase != previous.phase:
                self._quarter = 0
            if quarter > self._quarter:
                self._quarter = quarter
                bytes_ = f", {_bytes(state)}" if state.phase == "downloading" else ""
                self.line(
                    f"  [{self._elapsed():5.0f} s] {state.phase}: {state.done}/{state.total} "
                    f"packages{bytes_}"
                )

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    def _elapsed(self) -> float:
        return time.monotonic() - self.start


def _bytes(state: BuildState) -> str:
    done, total = state.bytes_done / 1e6, state.bytes_total / 1e6
    return f"{done:.1f} of {total:.1f} MB" if total else f"{done:.1f} MB"


def _rich_display(stream: TextIO) -> Any:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    return Progress(
        TextColumn("[progress.description]{task.description}"), BarColumn(),
        MofNCompleteColumn(), TextColumn("packages {task.fields[bytes]}"), TimeElapsedColumn(),
        console=Console(file=stream), transient=True,
    )  # fmt: skip
