"""Every machine setting, declared once: the table both configuration forms come from.

A machine setting is one row of ``SETTINGS``: its key=value key (``mem``, or
``cobd`` for ``cobdN=``), its XML element and attribute (``<memory size>``), the
``Machine`` field it sets, its parser and writer, and its help lines. The XML
reader and writer (``config.xml``), the key=value reader and writer
(``config.cmdline``), ``colinux config convert``, the key list of
``colinux-daemon --help``, the README's table of keys and shell completion all
walk this table, so the forms cannot drift apart::

    BY_KEY["mem"].parse("128M")                    # 128
    BY_ELEMENT["block_device"]                     # the cobdN row
    print(usage_text())                            # the lines colinux-daemon --help shows
    print(markdown_table())                        # the README's table of keys

Rows are of three kinds: ``Scalar`` (one value: ``mem=128``, ``<memory
size="128">``), ``Devices`` (indexed: ``cobd0=...``, ``<block_device index="0"
...>``; each device's fields are in ``config.devices``) and ``BootParams``
(the words colinux does not know, which go to the guest kernel; ``<bootparams>``).

Defaults are declared once too. A setting a configuration does not give takes
the value of the *profile* it is read over, and one rule picks the profile
(``profile_for``), whatever the form: a configuration file (``-c FILE`` or
``@FILE``, XML or key=value) is read as coLinux read it, over
``COLINUX_PROFILE`` (the model's defaults: 64 MB, no card, see
``config.model``); settings given with no file are read over colinux's
default guest (``default_guest``: 256 MB and ``eth0=slirp``, where the host
has a user-mode network stack).
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from colinux.config import devices, values
from colinux.config.devices import Attribute
from colinux.config.fields import quote_single, single_value
from colinux.config.model import (
    MAX_CPUS,
    MAX_INDEX,
    MAX_NETWORK_INDEX,
    MAX_SERIAL_INDEX,
    MIN_MEMORY_MB,
    BlockDevice,
    CofsShare,
    Machine,
    NetworkCard,
    NetworkType,
    SerialLine,
    Userspace,
)

FILES, DIRECTORIES = "file", "directory"  # what completes a value


@dataclass(frozen=True)
class Form:
    """One way of writing a setting: its key=value syntax, its XML, a help line."""

    syntax: str
    xml: str
    help: str


@dataclass(frozen=True, kw_only=True)
class Setting:
    field: str  # the Machine field it sets
    element: str  # its XML element
    forms: tuple[Form, ...]  # for the usage text and the README
    complete: str = ""  # FILES or DIRECTORIES: what completes its value...
    choices: tuple[str, ...] = ()  # ...or these words

    @property
    def default(self) -> Any:
        """Its value in ``COLINUX_PROFILE``: the model's default."""
        return getattr(COLINUX_PROFILE, self.field)


@dataclass(frozen=True, kw_only=True)
class Scalar(Setting):
    """A setting holding one value: ``mem=128`` / ``<memory size="128">``."""

    key: str
    attribute: str  # the XML attribute that holds the value
    parse: Callable[[str], Any]  # BadValue for text that is not a value
    format: Callable[[Any], str] = str
    always: bool = False  # written at its default too (mem= always is)
    quoted: bool = False  # a path: may be quoted whole on the command line
    none: str = "none"  # what None means, for the README

    def parse_word(self, value: str) -> Any:
        """The value of a key=value word."""
        return self.parse(single_value(value) if self.quoted else value)

    def format_word(self, value: Any) -> str:
        text = self.format(value)
        return quote_single(text) if self.quoted else text

    def written(self, value: Any) -> bool:
        """Whether a writer writes it: not at its default, unless ``always``."""
        return self.always or value != self.default


@dataclass(frozen=True, kw_only=True)
class Devices(Setting):
    """Indexed devices: ``cobd0=...`` / ``<block_device index="0" ...>``."""

    key: str  # cobd: the words are cobdN=
    label: str  # what XML messages call device N: cobd, cofs, eth, ttyS
    max_index: int
    kind: type[devices.Device]
    attributes: tuple[Attribute, ...]  # its XML attributes, in the order written
    parse_value: Callable[[int, str], Any]  # the value of cobdN=..., as a device
    format_value: Callable[[Any], str]
    typed: bool = False  # <network>: an attribute applies by the card's type

    def indexed_keys(self) -> list[str]:
        return [f"{self.key}{index}" for index in range(self.max_index + 1)]


@dataclass(frozen=True, kw_only=True)
class BootParams(Setting):
    """The words for the guest kernel: the key=value words colinux does not know."""


def _xml(element: str, attributes: list[Attribute], first: str = 'index="N"') -> str:
    shown = [first] + [a.name for a in attributes]
    return f"<{element} {' '.join(shown)}>"


_NETWORK_HELP = {
    NetworkType.SLIRP: "user-mode NAT, no root needed; REDIRS: tcp:2222:22/udp:...",
    NetworkType.TAP: "the host TAP device NAME (made if missing)",
    NetworkType.BRIDGED: "bridged onto the host interface NAME",
}


def _network_forms() -> tuple[Form, ...]:
    forms = []
    for kind in (NetworkType.SLIRP, NetworkType.TAP, NetworkType.BRIDGED):
        used = [a for a in devices.NETWORK_ATTRIBUTES if a.name != "type" and a.applies_to(kind)]
        forms.append(
            Form(
                f"ethN={devices.network_syntax(kind)}",
                _xml("network", used, f'index="N" type="{kind.value}"'),
                _NETWORK_HELP[kind],
            )
        )
    return tuple(forms)


KERNEL = Scalar(
    key="kernel",
    field="kernel",
    element="image",
    attribute="path",
    parse=values.parse_path,
    format=values.format_path,
    quoted=True,
    none="colinux's kernel",
    complete=FILES,
    forms=(Form("kernel=PATH", '<image path="PATH">', "the UML kernel (COLINUX_KERNEL: another)"),),
)
MEMORY = Scalar(
    key="mem",
    field="memory_mb",
    element="memory",
    attribute="size",
    parse=values.parse_memory,
    always=True,
    forms=(
        Form(
            "mem=N",
            '<memory size="N">',
            f"guest memory in MB: 128, 128M or 2G; at least {MIN_MEMORY_MB}",
        ),
    ),
)
CPUS = Scalar(
    key="cpus",
    field="cpus",
    element="cpus",
    attribute="count",
    parse=values.parse_cpus,
    choices=tuple(str(n) for n in range(1, MAX_CPUS + 1)),
    forms=(
        Form(
            "cpus=N",
            '<cpus count="N">',
            f"guest CPUs, 1..{MAX_CPUS}; more than one needs the seccomp userspace",
        ),
    ),
)
USERSPACE = Scalar(
    key="userspace",
    field="userspace",
    element="userspace",
    attribute="mode",
    parse=values.parse_userspace,
    format=lambda mode: mode.value,
    choices=tuple(mode.value for mode in Userspace),
    forms=(
        Form(
            "userspace=auto|seccomp|ptrace",
            '<userspace mode="...">',
            "how guest processes run: auto is seccomp where the host allows it, else "
            "ptrace; seccomp or fail; ptrace is strict (every system call trapped: "
            "slower, one CPU), for guests running untrusted code",
        ),
    ),
)
INITRD = Scalar(
    key="initrd",
    field="initrd",
    element="initrd",
    attribute="path",
    parse=values.parse_path,
    format=values.format_path,
    quoted=True,
    none="none (with no root= either: the embedded default guest)",
    complete=FILES,
    forms=(Form("initrd=PATH", '<initrd path="PATH">', "an initial ramdisk"),),
)
BLOCK_DEVICES = Devices(
    key="cobd",
    label="cobd",
    field="block_devices",
    element="block_device",
    max_index=MAX_INDEX,
    kind=BlockDevice,
    attributes=devices.BLOCK_ATTRIBUTES,
    parse_value=devices.parse_block_value,
    format_value=devices.format_block_value,
    complete=FILES,
    forms=(
        Form(
            "cobdN=PATH[,ro][,cow=FILE]",
            _xml("block_device", list(devices.BLOCK_ATTRIBUTES)),
            f"block device N (0..{MAX_INDEX}), /dev/cobdN; ro: read-only; cow=: a COW "
            "file takes its writes",
        ),
        Form("hdXN=PATH", 'alias="hda1"', "the first free cobd, also named hda1, sdb2..."),
        Form("hdXN=:cobdN", 'alias="hda1"', "another name for cobdN (any word order)"),
    ),
)
COFS = Devices(
    key="cofs",
    label="cofs",
    field="cofs",
    element="cofs_device",
    max_index=MAX_INDEX,
    kind=CofsShare,
    attributes=devices.COFS_ATTRIBUTES,
    parse_value=devices.parse_cofs_value,
    format_value=devices.format_cofs_value,
    complete=DIRECTORIES,
    forms=(
        Form(
            "cofsN=PATH[,flat|meta][,ro]",
            _xml("cofs_device", list(devices.COFS_ATTRIBUTES)),
            f"the host directory PATH shared as cofsN (0..{MAX_INDEX})",
        ),
    ),
)
BOOT_PARAMS = BootParams(
    field="bootparams",
    element="bootparams",
    forms=(
        Form(
            "WORD",
            "<bootparams>WORD...</bootparams>",
            "any other word (root=, ro, init=...): for the guest kernel",
        ),
    ),
)
NETWORKS = Devices(
    key="eth",
    label="eth",
    field="networks",
    element="network",
    max_index=MAX_NETWORK_INDEX,
    kind=NetworkCard,
    attributes=devices.NETWORK_ATTRIBUTES,
    parse_value=devices.parse_network_value,
    format_value=devices.format_network_value,
    typed=True,
    choices=tuple(kind.cmdline_name for kind in NetworkType),
    forms=_network_forms(),
)
SERIALS = Devices(
    key="ttys",
    label="ttyS",
    field="serials",
    element="serial",
    max_index=MAX_SERIAL_INDEX,
    kind=SerialLine,
    attributes=devices.SERIAL_ATTRIBUTES,
    parse_value=devices.parse_serial_value,
    format_value=devices.format_serial_value,
    complete=FILES,
    choices=(devices.SERIAL_DAEMON,),
    forms=(
        Form(
            'ttysN=DEVICE[,"MODE"]',
            _xml("serial", list(devices.SERIAL_ATTRIBUTES)),
            f"the guest's ttySN (0..{MAX_SERIAL_INDEX}) on a host tty or pty; "
            'MODE: "baud=115200 data=8 parity=n stop=1"',
        ),
        Form(
            "ttysN=daemon",
            '<serial index="N">',
            "ttySN served by the daemon (colinux serial NAME N)",
        ),
    ),
)

# In the order the key=value writer writes them, the seed's: kernel= mem= cobd0=
# cofs0= root= initrd= eth0= (the XML writer has its own, config.xml.XML_LAYOUT).
SETTINGS: tuple[Setting, ...] = (
    KERNEL,
    MEMORY,
    CPUS,
    USERSPACE,
    BLOCK_DEVICES,
    COFS,
    BOOT_PARAMS,
    INITRD,
    NETWORKS,
    SERIALS,
)
SCALARS: tuple[Scalar, ...] = tuple(s for s in SETTINGS if isinstance(s, Scalar))
DEVICES: tuple[Devices, ...] = tuple(s for s in SETTINGS if isinstance(s, Devices))
_KEYED: tuple[Scalar | Devices, ...] = (*SCALARS, *DEVICES)
BY_KEY = {s.key: s for s in _KEYED}
BY_ELEMENT = {s.element: s for s in SETTINGS}


# --- profiles --------------------------------------------------------------------------

# What a configuration file gets where it says nothing: coLinux 0.6's defaults
# (with its 32 MB raised to the 64 the guest kernel needs, see config.model).
COLINUX_PROFILE = Machine()
# colinux's default guest: room for real work (guest RAM costs the host nothing
# until it is used), and on the network.
DEFAULT_GUEST_MEMORY_MB = 256
DEFAULT_GUEST_SOURCE = "default guest"


def default_guest(*, network: bool) -> Machine:
    """The default guest; ``network``: whether the host has a user-mode stack for slirp."""
    return Machine(
        memory_mb=DEFAULT_GUEST_MEMORY_MB,
        networks=(NetworkCard(0, NetworkType.SLIRP),) if network else (),
        source=DEFAULT_GUEST_SOURCE,
    )


def profile_for(*, from_file: bool, network: Callable[[], bool]) -> Machine:
    """The machine a configuration's settings are read over: the one profile rule.

    ``from_file``: whether a configuration file gives the machine (``-c FILE``
    or an ``@FILE`` word), whatever its form; ``network`` is only asked when
    the answer matters.
    """
    return COLINUX_PROFILE if from_file else default_guest(network=network())


# --- assembling a machine --------------------------------------------------------------


def collect(base: Machine) -> dict[str, Any]:
    """A reader's starting point: ``base`` as field -> value, devices as {index: device}."""
    collected: dict[str, Any] = {}
    for setting in SETTINGS:
        value = getattr(base, setting.field)
        if isinstance(setting, Devices):
            value = {device.index: device for device in value}
        elif isinstance(setting, BootParams):
            value = list(value)
        collected[setting.field] = value
    return collected


def assemble(collected: Mapping[str, Any], *, source: str | None) -> Machine:
    """The one assembly of a Machine from what a reader collected (see ``collect``).

    Devices come out sorted by index, whatever the order they were given in.
    """
    fields: dict[str, Any] = {}
    for setting in SETTINGS:
        value = collected[setting.field]
        if isinstance(setting, Devices):
            value = tuple(value[index] for index in sorted(value))
        elif isinstance(setting, BootParams):
            value = tuple(value)
        fields[setting.field] = value
    return Machine(**fields, source=source)


# --- what the table gives users to read ------------------------------------------------


def usage_text(width: int = 88) -> str:
    """The settings as ``colinux-daemon --help`` lists them: syntax, then help."""
    column = 32
    lines = []
    for setting in SETTINGS:
        for form in setting.forms:
            syntax = f"  {form.syntax}"
            if len(syntax) >= column:
                lines.append(syntax)
                syntax = ""
            wrapped = textwrap.wrap(form.help, width - column - 1)
            lines.append(f"{syntax:<{column}} {wrapped[0]}".rstrip())
            lines += [f"{'':<{column}} {more}" for more in wrapped[1:]]
    return "\n".join(lines) + "\n"


def _default_text(setting: Setting) -> str:
    """A setting's default for the README: coLinux's, and the default guest's where it differs."""

    def shown(value: Any) -> str:
        if value is None:
            return setting.none if isinstance(setting, Scalar) else "none"
        if isinstance(setting, Scalar):
            return f"`{setting.format(value)}`"
        if isinstance(setting, Devices):
            words = [f"`{setting.key}{d.index}={setting.format_value(d)}`" for d in value]
            return ", ".join(words) or "none"
        return " ".join(value) or "none"

    guest = getattr(default_guest(network=True), setting.field)
    text = shown(setting.default)
    if guest != setting.default:
        text += f"; {shown(guest)} without a configuration file"
    return text


def markdown_table() -> str:
    """The README's table of keys, one row per form of each setting."""

    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    rows = [
        "| key=value | XML | default | what it is |",
        "| --- | --- | --- | --- |",
    ]
    for setting in SETTINGS:
        for number, form in enumerate(setting.forms):
            default = _default_text(setting) if number == 0 else ""
            rows.append(
                f"| `{cell(form.syntax)}` | `{cell(form.xml)}` | {cell(default)} | "
                f"{cell(form.help)} |"
            )
    return "\n".join(rows) + "\n"


def completion_keys() -> list[str]:
    """Every ``KEY=`` a machine setting is given by, for shell completion."""
    keys = []
    for setting in SETTINGS:
        if isinstance(setting, Scalar):
            keys.append(f"{setting.key}=")
        elif isinstance(setting, Devices):
            keys += [f"{key}=" for key in setting.indexed_keys()]
    return keys


if __name__ == "__main__":  # python -m colinux.config.settings: the README's table
    print(markdown_table(), end="")
