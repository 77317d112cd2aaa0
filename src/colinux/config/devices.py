"""The four device settings, cobdN, cofsN, ethN and ttysN, as each form spells them.

A device is one element in the XML form and one word in the key=value form::

    <block_device index="0" path="root.img" readonly="true"/>    cobd0=root.img,ro
    <network index="1" type="slirp" redir="tcp:2222:22"/>         eth1=slirp,,tcp:2222:22

For each device this module declares its XML attributes (``Attribute``: the
model field it sets, its parser and writer, its default, and for ``<network>``
the card types it applies to) and the parser and writer of its key=value value.
``config.settings`` puts them in the settings table, which the readers and
writers of both forms walk. A rule on a whole device (``ro`` and ``cow=`` do
not go together) is checked here, once, for both forms (``check_device``).

A card's key=value fields come from the same attributes: those with a
``metavar`` that apply to the card's type, in order, so
``ethN=pcap-bridge[,"NAME"][,MAC][,promisc|nopromisc]`` and ``<network
type="bridged" name=... mac=... promisc=...>`` cannot disagree on what a
bridged card has.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from colinux.config import values
from colinux.config.fields import quote_field, quote_single, single_value, split_fields
from colinux.config.model import (
    BlockDevice,
    CofsShare,
    CofsType,
    HostPath,
    NetworkCard,
    NetworkType,
    SerialLine,
)

Device = BlockDevice | CofsShare | NetworkCard | SerialLine

ALL_TYPES = frozenset(NetworkType)
SERIAL_DAEMON = "daemon"  # ttysN=daemon: the daemon serves the line


@dataclass(frozen=True, kw_only=True)
class Attribute:
    """One XML attribute of a device element, and the model field it sets."""

    name: str
    field: str
    parse: Callable[[str], Any]
    format: Callable[[Any], str] = str
    default: Any = None  # when the attribute is absent; not written at it...
    always: bool = False  # ...unless always (the seed writes enabled="true")
    required: bool = False
    types: frozenset[NetworkType] = ALL_TYPES  # the card types it applies to (<network>)
    # Its field in ethN=TYPE,FIELD,... ("": it has none), and its spelling there
    # where that is not XML's (nopromisc, where XML says promisc="false").
    metavar: str = ""
    cmdline_parse: Callable[[str], Any] | None = None
    cmdline_format: Callable[[Any], str] | None = None

    def applies_to(self, kind: NetworkType) -> bool:
        return kind in self.types


def _name(text: str) -> str | None:
    return text or None  # name="" is no name, as in the original


# Attributes block devices and cofs shares share.
_PATH = Attribute(
    name="path", field="path", parse=values.parse_path, format=values.format_path, required=True
)
_ENABLED = Attribute(
    name="enabled",
    field="enabled",
    parse=values.parse_bool,
    format=values.format_bool,
    default=True,
    always=True,
)
_READONLY = Attribute(
    name="readonly",
    field="readonly",
    parse=values.parse_bool,
    format=values.format_bool,
    default=False,
)

BLOCK_ATTRIBUTES = (
    _PATH,
    _ENABLED,
    Attribute(name="alias", field="alias", parse=values.parse_alias),
    _READONLY,
    Attribute(name="cow", field="cow", parse=values.parse_path, format=values.format_path),
)

COFS_ATTRIBUTES = (
    _PATH,
    Attribute(
        name="type",
        field="type",
        parse=values.parse_cofs_type,
        format=lambda kind: kind.value,
        default=CofsType.FLAT,
        always=True,
    ),
    _ENABLED,
    _READONLY,
)

NETWORK_ATTRIBUTES = (
    Attribute(
        name="name",
        field="name",
        parse=_name,
        types=frozenset({NetworkType.TAP, NetworkType.BRIDGED}),
        metavar='"NAME"',
        # Always quoted, as in the seed: eth0=tuntap,"TAP-Win32"
        cmdline_format=lambda name: quote_field(name, always=True),
    ),
    Attribute(
        name="type",
        field="type",
        parse=values.parse_xml_network_type,
        format=lambda kind: kind.value,
        default=NetworkType.BRIDGED,  # as in the original
        always=True,
    ),
    Attribute(name="mac", field="mac", parse=values.parse_mac, metavar="MAC"),
    Attribute(
        name="redir",
        field="redirections",
        parse=values.parse_redirections,
        format=values.format_redirections,
        default=(),
        types=frozenset({NetworkType.SLIRP}),
        metavar="REDIRS",
    ),
    Attribute(
        name="promisc",
        field="promisc",
        parse=values.parse_bool,
        format=values.format_bool,
        default=True,
        types=frozenset({NetworkType.BRIDGED}),
        metavar="promisc|nopromisc",
        cmdline_parse=values.parse_promisc_flag,
        cmdline_format=values.format_promisc_flag,
    ),
)

SERIAL_ATTRIBUTES = (
    Attribute(name="device", field="device", parse=values.parse_path, format=values.format_path),
    Attribute(name="mode", field="mode", parse=values.parse_serial_mode),
)


def check_device(device: Device) -> None:
    """The rules on a whole device, whichever form gave it; a BadValue breaks one."""
    if isinstance(device, BlockDevice) and device.readonly and device.cow is not None:
        raise values.BadValue(
            "read-only and cow= do not go together: the COW file takes the writes"
        )
    if isinstance(device, SerialLine) and device.mode is not None and device.device is None:
        raise values.BadValue("a line the daemon serves (no device) has no mode")


# --- cobdN=PATH[,ro][,cow=FILE] --------------------------------------------------------


def _is_disk_option(option: str) -> bool:
    return option.lower() in ("ro", "rw") or option.lower().startswith("cow=")


def _path(value: str) -> HostPath:
    return values.parse_path(single_value(value))


def parse_block_value(index: int, value: str) -> BlockDevice:
    """``PATH[,ro][,cow=FILE]``. An unquoted path may hold commas as before,
    unless what follows its last commas reads as options."""
    fields = split_fields(value) if value.startswith('"') else value.split(",")
    options = fields[1:]
    if not value.startswith('"') and not all(_is_disk_option(o) for o in options):
        return BlockDevice(index, _path(value))
    readonly, cow = False, None
    for option in options:
        lowered = option.lower()
        if lowered in ("ro", "rw"):
            readonly = lowered == "ro"
        elif lowered.startswith("cow="):
            cow = option[4:]
            if cow == "":
                raise values.BadValue("cow= needs a file (the COW file for this disk)")
        elif option != "":
            raise values.BadValue(f"unknown option {option!r}: expected ro or cow=FILE")
    return BlockDevice(
        index,
        values.parse_path(fields[0]),
        readonly=readonly,
        cow=HostPath(cow) if cow else None,
    )


def format_block_value(device: BlockDevice) -> str:
    raw = device.path.raw
    if not device.readonly and device.cow is None:
        # Quoted only when needed to read back as one path.
        parts = raw.split(",")
        plain = len(parts) == 1 or not all(_is_disk_option(p) for p in parts[1:])
        return quote_single(raw) if plain else quote_field(raw, always=True)
    options = (["ro"] if device.readonly else []) + (
        [quote_field("cow=" + device.cow.raw)] if device.cow is not None else []
    )
    # A quoted path makes the reader split the fields honouring quotes; an
    # unquoted one is split on every comma, which only plain fields survive.
    plain = not any("," in f or '"' in f for f in [raw, *options])
    return ",".join([raw if plain else quote_field(raw, always=True), *options])


# --- cofsN=PATH[,flat|meta][,ro] -------------------------------------------------------


def parse_cofs_value(index: int, value: str) -> CofsShare:
    path, *options = split_fields(value)
    if path == "":
        raise values.BadValue("expected a host directory")
    kind: CofsType | None = None
    readonly = False
    for option in options:
        lowered = option.lower()
        if lowered in ("flat", "meta"):
            if kind is not None and kind.value != lowered:
                raise values.BadValue("give flat or meta, not both")
            kind = CofsType(lowered)
        elif lowered in ("ro", "rw"):
            readonly = lowered == "ro"
        elif option != "":
            raise values.BadValue(
                f"unknown option {option!r}: expected flat, meta or ro "
                f'(quote a path holding a comma: cofs{index}="/srv/a,b")'
            )
    return CofsShare(index, HostPath(path), type=kind or CofsType.FLAT, readonly=readonly)


def format_cofs_value(share: CofsShare) -> str:
    value = quote_field(share.path.raw)
    if share.type != CofsType.FLAT:
        value += f",{share.type.value}"
    if share.readonly:
        value += ",ro"
    return value


# --- ethN=TYPE,... ---------------------------------------------------------------------


def network_fields(kind: NetworkType) -> tuple[Attribute, ...]:
    """The fields after TYPE in ``ethN=TYPE,...`` for a card of ``kind``, in order."""
    return tuple(a for a in NETWORK_ATTRIBUTES if a.metavar and a.applies_to(kind))


def network_syntax(kind: NetworkType) -> str:
    """``slirp[,MAC][,REDIRS]``: the value of ``ethN=`` for a card of ``kind``."""
    return kind.cmdline_name + "".join(f"[,{a.metavar}]" for a in network_fields(kind))


def parse_network_value(index: int, value: str) -> NetworkCard:
    kind_text, *texts = split_fields(value)
    kind = values.parse_cmdline_network_type(kind_text)
    layout = network_fields(kind)
    syntax = f"eth{index}={network_syntax(kind)}"
    if len(texts) > len(layout):
        raise values.BadValue(f"too many fields: expected {syntax}")
    given: dict[str, Any] = {}
    for attribute, text in zip(layout, texts, strict=False):
        if text == "":
            continue  # an empty field: the default
        if attribute.cmdline_parse is None:
            given[attribute.field] = attribute.parse(text)
            continue
        # Spelled here unlike in XML: the message says how it is spelled.
        try:
            given[attribute.field] = attribute.cmdline_parse(text)
        except values.BadValue as error:
            raise values.BadValue(f"{error} ({syntax})") from None
    return NetworkCard(index, kind, **given)


def format_network_value(card: NetworkCard) -> str:
    fields = [card.type.cmdline_name]
    for attribute in network_fields(card.type):
        value = getattr(card, attribute.field)
        write = attribute.cmdline_format or attribute.format
        fields.append("" if value == attribute.default else write(value))
    while len(fields) > 1 and fields[-1] == "":
        fields.pop()
    return ",".join(fields)


# --- ttysN=DEVICE[,"MODE"] | ttysN=daemon ----------------------------------------------


def parse_serial_value(index: int, value: str) -> SerialLine:
    if value in ("", SERIAL_DAEMON):
        return SerialLine(index)  # as the original, no device: the daemon's own terminal
    fields = split_fields(value)  # ttysN="daemon" is a device of that name
    if len(fields) > 2:
        raise values.BadValue(
            f'too many fields: expected ttys{index}=DEVICE[,"MODE"] or ttys{index}=daemon '
            '(quote a MODE holding commas: "baud=9600,data=7")'
        )
    if fields[0] == "":
        raise values.BadValue("expected a host device (a tty or pty) before the MODE")
    if value.startswith(SERIAL_DAEMON + ","):
        raise values.BadValue('the daemon\'s line takes no MODE (quote "daemon" for a file)')
    mode = values.parse_serial_mode(fields[1]) if len(fields) == 2 else None
    return SerialLine(index, HostPath(fields[0]), mode)


def format_serial_value(line: SerialLine) -> str:
    if line.device is None:
        return SERIAL_DAEMON
    # A device literally named "daemon" is quoted, so as not to read back as the keyword.
    value = quote_field(line.device.raw, always=line.device.raw == SERIAL_DAEMON)
    if line.mode is not None:
        value += f",{quote_field(line.mode, always=True)}"  # MODE quoted, as the original
    return value
