"""What the paths in a configuration mean on a Linux host.

coLinux configurations come from Windows: ``\\DosDevices\\c:\\coLinux\\root.img``,
``c:\\``. A Linux host has no drive C:, so colinux gives drive letters an
explicit meaning, a ``DriveMap`` from letters to host directories, set with
``--drive c=/srv/windows-c`` or ``COLINUX_DRIVE_C=/srv/windows-c``; a drive
path whose letter has no mapping is an error that says how to add one, never a
guess::

    drives = DriveMap.from_sources(args.drive, os.environ)
    machine = resolve_machine(machine, drives=drives, base_dir=config_dir)

How a raw path is read (``resolve_path``):

- Drive paths: ``C:\\x``, ``c:/x``, ``c:\\``, ``c:`` and the NT forms
  ``\\DosDevices\\c:\\x``, ``\\??\\c:\\x``, ``\\\\?\\c:\\x``: the letter's host
  directory joined with the rest, backslashes read as separators, case kept
  (Linux file names are case-sensitive; we do not guess). ``..`` may not
  climb out of the mapped directory.
- UNC paths (``\\\\server\\share``) and rooted paths without a drive
  (``\\coLinux\\root.img``) are errors: they have no host meaning.
- Anything else is a host path: ``~`` expands, a relative path resolves
  against ``base_dir`` (the configuration file's directory, or the current
  directory for the command line). A backslash in it is read as a separator
  too (``images\\root.img``), as the configuration's Windows author meant.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace

from colinux.config.model import HostPath, Machine
from colinux.errors import UserError

ENVIRONMENT_PREFIX = "COLINUX_DRIVE_"

_DRIVE_PATH = re.compile(
    r"(?:[\\/](?:DosDevices|\?\?)[\\/]|[\\/]{2}[?.][\\/])?([A-Za-z]):(.*)",
    re.IGNORECASE | re.DOTALL,
)
_DRIVE_ARGUMENT = re.compile(r"([A-Za-z]):?=(.+)", re.DOTALL)
_ENVIRONMENT_NAME = re.compile(re.escape(ENVIRONMENT_PREFIX) + r"([A-Za-z])")


class DriveMap:
    """Drive letters (any case) to host directories (absolute, normalised)."""

    def __init__(self, mapping: Mapping[str, str] | None = None) -> None:
        self._dirs: dict[str, str] = {}
        for letter, directory in (mapping or {}).items():
            if len(letter) != 1 or not letter.isascii() or not letter.isalpha():
                raise ValueError(f"not a drive letter: {letter!r}")
            self._dirs[letter.upper()] = os.path.normpath(
                os.path.abspath(os.path.expanduser(directory))
            )

    @classmethod
    def from_sources(cls, args: Sequence[str], environ: Mapping[str, str]) -> DriveMap:
        """From ``--drive LETTER=DIR`` values and ``COLINUX_DRIVE_<LETTER>`` variables.

        The options win over the environment; an empty variable counts as unset.
        """
        mapping: dict[str, str] = {}
        for name, value in environ.items():
            match = _ENVIRONMENT_NAME.fullmatch(name)
            if match and value:
                mapping[match.group(1).upper()] = value
        for arg in args:
            match = _DRIVE_ARGUMENT.fullmatch(arg)
            if match is None:
                raise UserError(
                    f"--drive {arg}: expected LETTER=DIR, e.g. --drive c=/srv/windows-c"
                )
            mapping[match.group(1).upper()] = match.group(2)
        return cls(mapping)

    def get(self, letter: str) -> str | None:
        return self._dirs.get(letter.upper())

    def __contains__(self, letter: object) -> bool:
        return isinstance(letter, str) and letter.upper() in self._dirs

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._dirs))

    def __len__(self) -> int:
        return len(self._dirs)

    def items(self) -> list[tuple[str, str]]:
        return sorted(self._dirs.items())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DriveMap) and self._dirs == other._dirs

    def __hash__(self) -> int:
        return hash(tuple(self.items()))

    def __repr__(self) -> str:
        return f"DriveMap({dict(self.items())!r})"


def resolve_path(raw: str, *, drives: DriveMap, base_dir: str, what: str) -> str:
    """The absolute, normalised host path that ``raw`` means.

    ``what`` names the setting in messages: ``"cobd0 (my.colinux.xml)"``.
    """
    if raw == "":
        raise UserError(f"{what}: the path is empty")
    match = _DRIVE_PATH.fullmatch(raw)
    if match is not None:
        letter, rest = match.group(1).upper(), match.group(2)
        directory = drives.get(letter)
        if directory is None:
            raise UserError(
                f"{what}: path '{raw}' uses drive {letter}:, which has no mapping; "
                f"add --drive {letter.lower()}=DIR or set {ENVIRONMENT_PREFIX}{letter}=DIR"
            )
        parts: list[str] = []
        for part in re.split(r"[\\/]", rest):
            if part in ("", "."):
                continue
            if part == "..":
                if not parts:
                    raise UserError(
                        f"{what}: path '{raw}' climbs above drive {letter}: "
                        f"(mapped to {directory}) with '..'"
                    )
                parts.pop()
            else:
                parts.append(part)
        return os.path.join(directory, *parts)
    if raw.startswith(("\\\\", "//")) and "\\" in raw:
        raise UserError(
            f"{what}: path '{raw}' is a Windows network (UNC) path; "
            "mount the share on the host and give its host path"
        )
    if raw.startswith("\\"):
        raise UserError(
            f"{what}: path '{raw}' has no drive letter; write it as c:{raw} "
            "(with --drive c=DIR) or as a host path"
        )
    path = os.path.expanduser(raw.replace("\\", "/"))
    return os.path.normpath(os.path.join(os.path.abspath(base_dir), path))


def source_label(name: str, machine: Machine) -> str:
    """A setting's name for messages, with the file it came from."""
    return f"{name} ({machine.source})" if machine.source else name


def resolve_machine(machine: Machine, *, drives: DriveMap, base_dir: str) -> Machine:
    """The machine with ``host`` filled in every path it holds.

    A disabled device whose path cannot be resolved keeps ``host`` None rather
    than stopping a machine that will not use it.
    """

    def resolve(path: HostPath, name: str, enabled: bool = True) -> HostPath:
        try:
            host = resolve_path(
                path.raw, drives=drives, base_dir=base_dir, what=source_label(name, machine)
            )
        except UserError:
            if enabled:
                raise
            return HostPath(path.raw)
        return HostPath(path.raw, host)

    return replace(
        machine,
        kernel=resolve(machine.kernel, "kernel") if machine.kernel is not None else None,
        initrd=resolve(machine.initrd, "initrd") if machine.initrd is not None else None,
        block_devices=tuple(
            replace(
                d,
                path=resolve(d.path, f"cobd{d.index}", d.enabled),
                cow=resolve(d.cow, f"cobd{d.index}", d.enabled) if d.cow is not None else None,
            )
            for d in machine.block_devices
        ),
        cofs=tuple(
            replace(s, path=resolve(s.path, f"cofs{s.index}", s.enabled)) for s in machine.cofs
        ),
        serials=tuple(
            replace(line, device=resolve(line.device, f"ttys{line.index}"))
            if line.device is not None
            else line
            for line in machine.serials
        ),
    )
