"""The coLinux XML configuration file: reader and writer.

``read_xml`` turns a file such as the seed's ``my.colinux.xml`` into a
``Machine``; ``write_xml`` turns a ``Machine`` back into that file's text, and
``read_xml`` of what ``write_xml`` wrote gives an equal ``Machine``::

    machine = read_xml("my.colinux.xml", warn=print)
    text = write_xml(machine)

The format is coLinux 0.6's: a ``<colinux>`` root holding ``<block_device>``,
``<cofs_device>``, ``<bootparams>``, ``<initrd>``, ``<image>``, ``<memory>``
and ``<network>`` elements, and colinux's own:

- ``<serial index="0" device="/dev/ttyUSB0" mode="baud=115200"/>`` (the
  original's ``ttysN=`` had no XML form; without ``device`` the daemon serves
  the line);
- ``<cpus count="2"/>``, the guest's CPUs (1..8; 1 when absent): ``cpus=``;
- ``<userspace mode="auto|seccomp|ptrace"/>``, how the engine runs guest
  processes (auto when absent): ``userspace=``. ``mode="ptrace"`` runs one
  CPU, so with a ``count`` above 1 it is an error.

Where the original was lax, this reader is not:

- A mistake is a ``UserError`` naming ``FILE:LINE``, the element, the
  attribute and what was expected; the original ignored most of them.
- An unknown element or attribute is ignored, as in the original, but
  reported through ``warn`` with its line, so a typo is not silent.
- ``<!DOCTYPE>`` (and so entity declarations: the "billion laughs" bomb,
  external entities) is refused; the file is parsed with ``defusedxml``.
- ``<image>`` absent leaves ``Machine.kernel`` None: the engine's own kernel.
  (The original defaulted to a file named ``vmlinux``, a coLinux kernel that
  cannot run on a Linux host anyway.)
- ``enabled="false"`` devices are kept with ``enabled=False``; the engine
  skips them.
- ``<network>`` attributes that do not apply to its type (``redir`` on a tap
  card, ``name`` on slirp...) are reported and dropped, so the ``Machine``
  holds only what the engine will use.
- Devices come out sorted by index, whatever the file's order.
"""

from __future__ import annotations

import os
import re
import xml.sax
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar
from xml.sax.handler import ContentHandler
from xml.sax.xmlreader import AttributesImpl, Locator

from defusedxml import sax as defused_sax
from defusedxml.common import (
    DefusedXmlException,
    DTDForbidden,
    EntitiesForbidden,
    ExternalReferenceForbidden,
)

from colinux.config import values
from colinux.config.model import (
    DEFAULT_CPUS,
    DEFAULT_MEMORY_MB,
    MAX_INDEX,
    MAX_NETWORK_INDEX,
    MAX_SERIAL_INDEX,
    BlockDevice,
    CofsShare,
    CofsType,
    HostPath,
    Machine,
    NetworkCard,
    NetworkType,
    SerialLine,
    Userspace,
)
from colinux.errors import UserError

T = TypeVar("T")

ROOT = "colinux"

# element -> (required attributes, optional attributes). The one place the
# XML vocabulary is declared; the reader checks against it, the writer follows it.
ELEMENTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "block_device": (("index", "path"), ("enabled", "alias", "readonly", "cow")),
    "cofs_device": (("index", "path"), ("type", "enabled", "readonly")),
    "bootparams": ((), ()),
    "initrd": (("path",), ()),
    "image": (("path",), ()),
    "memory": (("size",), ()),
    "cpus": (("count",), ()),
    "userspace": (("mode",), ()),
    "network": (("index",), ("type", "name", "mac", "redir", "promisc")),
    "serial": (("index",), ("device", "mode")),
}
SINGLETONS = ("bootparams", "initrd", "image", "memory", "cpus", "userspace")
TEXT_ELEMENTS = ("bootparams",)

# Which <network> attributes each type uses (index, type and mac: all of them).
NETWORK_ATTRIBUTES: dict[NetworkType, tuple[str, ...]] = {
    NetworkType.TAP: ("name",),
    NetworkType.BRIDGED: ("name", "promisc"),
    NetworkType.SLIRP: ("redir",),
}

# Characters XML 1.0 cannot hold at all, even as character references.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")


# --- parsing into a small tree with line numbers -------------------------------------


@dataclass
class _Node:
    tag: str
    attrs: dict[str, str]
    line: int
    text: list[str] = field(default_factory=list)
    children: list[_Node] = field(default_factory=list)


class _TreeBuilder(ContentHandler):
    """SAX handler building ``_Node``s; SAX, because it gives line numbers."""

    def __init__(self) -> None:
        super().__init__()
        self.locator: Locator | None = None
        self.stack: list[_Node] = []
        self.root: _Node | None = None

    def line(self) -> int:
        line = self.locator.getLineNumber() if self.locator is not None else None
        return line or 0

    def setDocumentLocator(self, locator: Locator) -> None:
        self.locator = locator

    def startElement(self, name: str, attrs: AttributesImpl) -> None:
        node = _Node(name, dict(attrs.items()), self.line())
        if self.stack:
            self.stack[-1].children.append(node)
        else:
            self.root = node
        self.stack.append(node)

    def endElement(self, name: str) -> None:
        self.stack.pop()

    def characters(self, content: str) -> None:
        if self.stack:
            self.stack[-1].text.append(content)


def _parse_tree(data: bytes, source: str) -> _Node:
    builder = _TreeBuilder()
    try:
        defused_sax.parseString(
            data, builder, forbid_dtd=True, forbid_entities=True, forbid_external=True
        )
    except xml.sax.SAXParseException as error:
        raise UserError(
            f"{source}:{error.getLineNumber()}: malformed XML: {error.getMessage()}"
        ) from error
    except (DTDForbidden, EntitiesForbidden, ExternalReferenceForbidden) as error:
        # A colinux file never needs a DTD; refusing <!DOCTYPE> outright also
        # refuses every entity trick (billion laughs, external files) it could carry.
        raise UserError(
            f"{source}:{builder.line()}: XML entities and <!DOCTYPE> are not allowed "
            "in a colinux configuration"
        ) from error
    except DefusedXmlException as error:  # any other refusal of defusedxml's
        raise UserError(f"{source}:{builder.line()}: refused XML: {error}") from error
    assert builder.root is not None  # expat reports "no element found" otherwise
    return builder.root


# --- interpreting the tree -------------------------------------------------------------


class _Reader:
    def __init__(self, source: str, warn: Callable[[str], None]) -> None:
        self.source = source
        self.warn = warn
        self.singletons: dict[str, _Node] = {}  # singleton element -> its node
        self.block_devices: dict[int, tuple[BlockDevice, int]] = {}
        self.aliases: dict[str, int] = {}  # alias -> line
        self.cofs: dict[int, tuple[CofsShare, int]] = {}
        self.networks: dict[int, tuple[NetworkCard, int]] = {}
        self.serials: dict[int, tuple[SerialLine, int]] = {}
        self.kernel: HostPath | None = None
        self.initrd: HostPath | None = None
        self.memory_mb = DEFAULT_MEMORY_MB
        self.cpus = DEFAULT_CPUS
        self.userspace = Userspace.AUTO
        self.bootparams: tuple[str, ...] = ()

    def where(self, node: _Node) -> str:
        return f"{self.source}:{node.line}"

    def error(self, node: _Node, message: str) -> UserError:
        return UserError(f"{self.where(node)}: <{node.tag}> {message}")

    def value(self, node: _Node, attr: str, parse: Callable[[str], T]) -> T:
        text = node.attrs[attr]
        try:
            return parse(text)
        except values.BadValue as error:
            raise self.error(node, f'{attr}="{text}": {error}') from None

    def optional(self, node: _Node, attr: str, parse: Callable[[str], T], default: T) -> T:
        return self.value(node, attr, parse) if attr in node.attrs else default

    def path(self, node: _Node, attr: str = "path") -> HostPath:
        text = node.attrs[attr]
        if text == "":
            raise self.error(node, f'{attr}="": expected a path')
        return HostPath(text)

    def read(self, root: _Node) -> Machine:
        if root.tag != ROOT:
            raise UserError(
                f"{self.where(root)}: the root element is <{root.tag}>, expected <{ROOT}>"
            )
        for attr in root.attrs:
            self.warn(f"{self.where(root)}: unknown attribute {attr} on <{ROOT}> ignored")
        self.warn_text(root)
        for node in root.children:
            self.element(node)
        self.check_cpus()
        return Machine(
            kernel=self.kernel,
            memory_mb=self.memory_mb,
            cpus=self.cpus,
            userspace=self.userspace,
            initrd=self.initrd,
            bootparams=self.bootparams,
            block_devices=tuple(d for _, (d, _) in sorted(self.block_devices.items())),
            cofs=tuple(c for _, (c, _) in sorted(self.cofs.items())),
            networks=tuple(n for _, (n, _) in sorted(self.networks.items())),
            serials=tuple(s for _, (s, _) in sorted(self.serials.items())),
            source=self.source,
        )

    def warn_text(self, node: _Node) -> None:
        if "".join(node.text).strip():
            self.warn(f"{self.where(node)}: text inside <{node.tag}> ignored")

    def element(self, node: _Node) -> None:
        if node.tag not in ELEMENTS:
            self.warn(f"{self.where(node)}: unknown element <{node.tag}> ignored")
            return
        required, optional = ELEMENTS[node.tag]
        for attr in node.attrs:
            if attr not in required and attr not in optional:
                self.warn(f"{self.where(node)}: unknown attribute {attr} on <{node.tag}> ignored")
        for attr in required:
            if attr not in node.attrs:
                raise self.error(node, f"is missing the attribute {attr}")
        for child in node.children:
            self.warn(
                f"{self.where(child)}: unknown element <{child.tag}> inside <{node.tag}> ignored"
            )
        if node.tag not in TEXT_ELEMENTS:
            self.warn_text(node)
        if node.tag in SINGLETONS:
            if node.tag in self.singletons:
                first = self.singletons[node.tag].line
                raise self.error(node, f"appears twice (first on line {first})")
            self.singletons[node.tag] = node
        getattr(self, f"on_{node.tag}")(node)

    def claim_index(
        self, node: _Node, table: dict[int, tuple[T, int]], name: str, maximum: int
    ) -> int:
        index = self.value(node, "index", lambda text: values.parse_index(text, maximum))
        if index in table:
            text = node.attrs["index"]
            raise self.error(
                node, f'index="{text}": {name}{index} is already defined on line {table[index][1]}'
            )
        return index

    def on_block_device(self, node: _Node) -> None:
        index = self.claim_index(node, self.block_devices, "cobd", MAX_INDEX)
        alias = self.optional(node, "alias", values.parse_alias, None)
        if alias is not None:
            if alias in self.aliases:
                raise self.error(
                    node,
                    f'alias="{alias}": {alias} is already defined on line {self.aliases[alias]}',
                )
            self.aliases[alias] = node.line
        device = BlockDevice(
            index=index,
            path=self.path(node),
            alias=alias,
            enabled=self.optional(node, "enabled", values.parse_bool, True),
            readonly=self.optional(node, "readonly", values.parse_bool, False),
            cow=self.path(node, "cow") if "cow" in node.attrs else None,
        )
        if device.readonly and device.cow is not None:
            raise self.error(node, 'readonly="true" and cow= do not go together')
        self.block_devices[index] = (device, node.line)

    def on_cofs_device(self, node: _Node) -> None:
        index = self.claim_index(node, self.cofs, "cofs", MAX_INDEX)
        share = CofsShare(
            index=index,
            path=self.path(node),
            type=self.optional(node, "type", values.parse_cofs_type, CofsType.FLAT),
            readonly=self.optional(node, "readonly", values.parse_bool, False),
            enabled=self.optional(node, "enabled", values.parse_bool, True),
        )
        self.cofs[index] = (share, node.line)

    def on_bootparams(self, node: _Node) -> None:
        self.bootparams = tuple("".join(node.text).split())

    def on_initrd(self, node: _Node) -> None:
        self.initrd = self.path(node)

    def on_image(self, node: _Node) -> None:
        self.kernel = self.path(node)

    def on_memory(self, node: _Node) -> None:
        self.memory_mb = self.value(node, "size", values.parse_memory)

    def on_cpus(self, node: _Node) -> None:
        self.cpus = self.value(node, "count", values.parse_cpus)

    def on_userspace(self, node: _Node) -> None:
        self.userspace = self.value(node, "mode", values.parse_userspace)

    def check_cpus(self) -> None:
        if self.cpus == 1 or self.userspace != Userspace.PTRACE:
            return
        cpus, userspace = self.singletons["cpus"], self.singletons["userspace"]
        raise self.error(
            cpus,
            f'count="{cpus.attrs["count"]}": more than one CPU needs the seccomp userspace '
            f'(<userspace mode="{userspace.attrs["mode"]}"> on line {userspace.line} '
            "runs one CPU)",
        )

    def on_network(self, node: _Node) -> None:
        index = self.claim_index(node, self.networks, "eth", MAX_NETWORK_INDEX)
        # type defaults to bridged, as in the original
        kind = self.optional(node, "type", values.parse_xml_network_type, NetworkType.BRIDGED)
        used = NETWORK_ATTRIBUTES[kind]
        for attr in ("name", "redir", "promisc"):
            if attr in node.attrs and attr not in used:
                self.warn(
                    f"{self.where(node)}: <network> attribute {attr} does not apply to "
                    f'type="{kind.value}"; ignored'
                )
        name = node.attrs.get("name") if "name" in used else None
        card = NetworkCard(
            index=index,
            type=kind,
            name=name or None,
            mac=self.optional(node, "mac", values.parse_mac, None),
            redirections=(
                self.optional(node, "redir", values.parse_redirections, ())
                if "redir" in used
                else ()
            ),
            promisc=(
                self.optional(node, "promisc", values.parse_bool, True)
                if "promisc" in used
                else True
            ),
        )
        self.networks[index] = (card, node.line)

    def on_serial(self, node: _Node) -> None:
        index = self.claim_index(node, self.serials, "ttyS", MAX_SERIAL_INDEX)
        device = self.path(node, "device") if "device" in node.attrs else None
        mode = self.optional(node, "mode", values.parse_serial_mode, None)
        if mode is not None and device is None:
            raise self.error(node, 'mode="...": a line the daemon serves (no device) has no mode')
        self.serials[index] = (SerialLine(index, device, mode), node.line)


def parse_xml(data: bytes | str, *, source: str, warn: Callable[[str], None]) -> Machine:
    """Read XML configuration text; ``source`` names it in messages.

    Text given as ``str`` is parsed as UTF-8, whatever its declaration says.
    """
    if isinstance(data, str):
        data = data.encode("utf-8", errors="surrogatepass")
    return _Reader(source, warn).read(_parse_tree(data, source))


def read_xml(path: str | os.PathLike[str], *, warn: Callable[[str], None]) -> Machine:
    """Read a coLinux XML file; ``warn`` receives "FILE:LINE: ..." notes."""
    source = os.fspath(path)
    return parse_xml(read_source(source), source=source, warn=warn)


def read_source(source: str) -> bytes:
    """A configuration file's bytes; a missing or unreadable file is a UserError."""
    try:
        return Path(source).read_bytes()
    except FileNotFoundError:
        raise UserError(f"{source}: no such file") from None
    except IsADirectoryError:
        raise UserError(f"{source}: is a directory, not a configuration file") from None
    except OSError as error:
        raise UserError(f"{source}: cannot read: {error.strerror}") from None


# --- writing ---------------------------------------------------------------------------

_ATTRIBUTE_ESCAPES = str.maketrans(
    {
        "&": "&amp;",
        "<": "&lt;",
        ">": "&gt;",
        '"': "&quot;",
        # Written as references because a parser turns literal ones into spaces.
        "\t": "&#9;",
        "\n": "&#10;",
        "\r": "&#13;",
    }
)
_TEXT_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;"})


def _check_text(text: str, what: str) -> str:
    if _NOT_XML.search(text):
        raise UserError(f"{what}: {text!r} holds a control character XML cannot hold")
    return text


def _element(tag: str, attrs: list[tuple[str, str]], text: str = "") -> str:
    rendered = "".join(
        f' {name}="{_check_text(value, f"<{tag}> {name}").translate(_ATTRIBUTE_ESCAPES)}"'
        for name, value in attrs
    )
    return f"    <{tag}{rendered}>{text.translate(_TEXT_ESCAPES)}</{tag}>"


def write_xml(machine: Machine) -> str:
    """The machine as coLinux XML text, in the seed's layout, ending in a newline.

    Raw paths are written (not resolved host paths), so the file means the same
    wherever it is read. Network attributes that do not apply to the card's
    type are not written, nor ``<cpus>`` and ``<userspace>`` at their defaults, so
    a machine that does not set them is written as coLinux 0.6 would have. Raises
    ``UserError`` for what XML cannot express: a boot parameter holding
    whitespace, a control character in a value.
    """
    lines = ['<?xml version="1.0" encoding="UTF-8"?>', f"<{ROOT}>"]
    for device in sorted(machine.block_devices, key=lambda d: d.index):
        attrs = [
            ("index", str(device.index)),
            ("path", device.path.raw),
            ("enabled", values.format_bool(device.enabled)),
        ]
        if device.alias is not None:
            attrs.append(("alias", device.alias))
        if device.readonly:
            attrs.append(("readonly", values.format_bool(device.readonly)))
        if device.cow is not None:
            attrs.append(("cow", device.cow.raw))
        lines.append(_element("block_device", attrs))
    for share in sorted(machine.cofs, key=lambda s: s.index):
        attrs = [
            ("index", str(share.index)),
            ("path", share.path.raw),
            ("type", share.type.value),
            ("enabled", values.format_bool(share.enabled)),
        ]
        if share.readonly:
            attrs.append(("readonly", "true"))
        lines.append(_element("cofs_device", attrs))
    if machine.bootparams:
        for word in machine.bootparams:
            if word == "" or any(c.isspace() for c in word):
                raise UserError(
                    f"boot parameter {word!r} cannot be written in XML, whose "
                    "<bootparams> are split on whitespace"
                )
        text = _check_text(" ".join(machine.bootparams), "<bootparams>")
        lines.append(_element("bootparams", [], text))
    if machine.initrd is not None:
        lines.append(_element("initrd", [("path", machine.initrd.raw)]))
    if machine.kernel is not None:
        lines.append(_element("image", [("path", machine.kernel.raw)]))
    lines.append(_element("memory", [("size", str(machine.memory_mb))]))
    if machine.cpus != DEFAULT_CPUS:
        lines.append(_element("cpus", [("count", str(machine.cpus))]))
    if machine.userspace != Userspace.AUTO:
        lines.append(_element("userspace", [("mode", machine.userspace.value)]))
    for card in sorted(machine.networks, key=lambda n: n.index):
        attrs = [("index", str(card.index))]
        used = NETWORK_ATTRIBUTES[card.type]
        if card.name is not None and "name" in used:
            attrs.append(("name", card.name))
        attrs.append(("type", card.type.value))
        if card.mac is not None:
            attrs.append(("mac", card.mac))
        if card.redirections and "redir" in used:
            attrs.append(("redir", values.format_redirections(card.redirections)))
        if not card.promisc and "promisc" in used:
            attrs.append(("promisc", "false"))
        lines.append(_element("network", attrs))
    for line in sorted(machine.serials, key=lambda s: s.index):
        attrs = [("index", str(line.index))]
        if line.device is not None:
            attrs.append(("device", line.device.raw))
        if line.mode is not None:
            attrs.append(("mode", line.mode))
        lines.append(_element("serial", attrs))
    lines.append(f"</{ROOT}>")
    return "\n".join(lines) + "\n"
