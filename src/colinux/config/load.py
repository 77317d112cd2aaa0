"""Loading a configuration file of either form, and converting between the forms.

A configuration file is coLinux XML when its first non-blank character is
``<``; otherwise it holds key=value words, as an ``@FILE`` does::

    machine = load_file("my.colinux.xml", warn=log.warning)
    print(convert("my.colinux.xml", "cmdline", warn=log.warning), end="")

``convert`` backs ``colinux config convert FILE --to cmdline|xml``. It does
not resolve paths: the raw text is carried over, so the converted file means
exactly what the original meant.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import replace
from typing import Literal

from colinux.config import cmdline, settings
from colinux.config.model import Machine
from colinux.config.xml import parse_xml, read_source, write_xml
from colinux.errors import UserError


def _is_xml(data: bytes) -> bool:
    return data.removeprefix(b"\xef\xbb\xbf").lstrip().startswith(b"<")


def load_file(
    path: str | os.PathLike[str],
    *,
    warn: Callable[[str], None],
    base: Machine = settings.COLINUX_PROFILE,
) -> Machine:
    """Read an XML or key=value configuration file over ``base``, the profile
    (``settings.profile_for``); ``Machine.source`` is ``path``."""
    source = os.fspath(path)
    data = read_source(source)
    if _is_xml(data):
        machine = parse_xml(data, source=source, warn=warn, base=base)
    else:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as error:
            raise UserError(f"{source}: not UTF-8 text (byte {error.start})") from None
        base_dir = os.path.dirname(os.path.abspath(source))
        machine = cmdline.parse_cmdline_text(text, source=source, base_dir=base_dir, base=base)
    return replace(machine, source=source)


def convert(
    path: str | os.PathLike[str],
    to: Literal["cmdline", "xml"],
    *,
    warn: Callable[[str], None],
) -> str:
    """The configuration in ``path`` written in the other form, ending in a newline.

    ``"cmdline"`` gives one line to paste after ``colinux-daemon``;
    disabled devices, which a command line cannot express, are left out
    with a warning. A file is read over ``settings.COLINUX_PROFILE``, as
    ``-c FILE`` and ``@FILE`` read it (``settings.profile_for``), so what
    ``convert`` prints is the machine those run.
    """
    machine = load_file(path, warn=warn)  # over COLINUX_PROFILE, the default
    if to == "xml":
        return write_xml(machine)
    if to == "cmdline":
        source = os.fspath(path)
        for setting in settings.DEVICES:
            for device in getattr(machine, setting.field):
                if not getattr(device, "enabled", True):
                    warn(
                        f"{source}: {setting.key}{device.index} is disabled, "
                        "so left out of the command line"
                    )
        return cmdline.format_cmdline(machine) + "\n"
    raise UserError(f"cannot convert to {to!r}: expected cmdline or xml")
