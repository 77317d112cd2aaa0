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
from typing import Any, TypeVar
from xml.sax.handler import ContentHandler
from xml.sax.xmlreader import AttributesImpl, Locator

from defusedxml import sax as defused_sax
from defusedxml.common import (
    DefusedXmlException,
    DTDForbidden,
    EntitiesForbidden,
    ExternalReferenceForbidden,
)

from colinux.config import devices, settings, values
from colinux.config.model import Machine, NetworkCard
from colinux.config.settings import BootParams, Devices, Scalar
from colinux.errors import UserError

T = TypeVar("T")

ROOT = "colinux"

# The elements in the order the writer writes them: the seed's layout.
XML_LAYOUT = (
    "block_device",
    "cofs_device",
    "bootparams",
    "initrd",
    "image",
    "memory",
    "cpus",
    "userspace",
    "network",
    "serial",
)


def _vocabulary(setting: settings.Setting) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """An element's (required, optional) attributes, from its row of the settings table."""
    if isinstance(setting, Scalar):
        return (setting.attribute,), ()
    if isinstance(setting, Devices):
        required = ("index", *(a.name for a in setting.attributes if a.required))
        return required, tuple(a.name for a in setting.attributes if not a.required)
    return (), ()


# element -> (required attributes, optional attributes): the XML vocabulary,
# from the settings table; the reader checks against it.
ELEMENTS = {s.element: _vocabulary(s) for s in settings.SETTINGS}
SINGLETONS = tuple(s.element for s in settings.SETTINGS if not isinstance(s, Devices))
TEXT_ELEMENTS = (settings.BOOT_PARAMS.element,)

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
    def __init__(self, source: str, warn: Callable[[str], None], base: Machine) -> None:
        self.source = source
        self.warn = warn
        self.singletons: dict[str, _Node] = {}  # singleton element -> its node
        self.collected = settings.collect(base)
        self.lines: dict[str, dict[int, int]] = {s.field: {} for s in settings.DEVICES}
        self.aliases: dict[str, int] = {}  # alias -> line

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
        return settings.assemble(self.collected, source=self.source)

    def warn_text(self, node: _Node) -> None:
        if "".join(node.text).strip():
            self.warn(f"{self.where(node)}: text inside <{node.tag}> ignored")

    def element(self, node: _Node) -> None:
        setting = settings.BY_ELEMENT.get(node.tag)
        if setting is None:
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
        if isinstance(setting, Scalar):
            self.collected[setting.field] = self.value(node, setting.attribute, setting.parse)
        elif isinstance(setting, Devices):
            self.device(setting, node)
        elif isinstance(setting, BootParams):
            self.collected[setting.field] = "".join(node.text).split()

    def device(self, setting: Devices, node: _Node) -> None:
        lines = self.lines[setting.field]
        index = self.value(node, "index", lambda text: values.parse_index(text, setting.max_index))
        if index in lines:
            raise self.error(
                node,
                f'index="{node.attrs["index"]}": {setting.label}{index} is already defined '
                f"on line {lines[index]}",
            )
        given: dict[str, Any] = {}
        typed = [a for a in setting.attributes if setting.typed and a.types != devices.ALL_TYPES]
        for attribute in setting.attributes:
            if attribute not in typed:
                given[attribute.field] = self.optional(
                    node, attribute.name, attribute.parse, attribute.default
                )
        for attribute in typed:  # once the card's type is known
            kind = given["type"]
            if attribute.applies_to(kind):
                given[attribute.field] = self.optional(
                    node, attribute.name, attribute.parse, attribute.default
                )
            elif attribute.name in node.attrs:
                self.warn(
                    f"{self.where(node)}: <{node.tag}> attribute {attribute.name} does not "
                    f'apply to type="{kind.value}"; ignored'
                )
        device = setting.kind(index=index, **given)
        try:
            devices.check_device(device)
        except values.BadValue as error:
            raise self.error(node, str(error)) from None
        alias = getattr(device, "alias", None)
        if alias is not None:
            if alias in self.aliases:
                raise self.error(
                    node,
                    f'alias="{alias}": {alias} is already defined on line {self.aliases[alias]}',
                )
            self.aliases[alias] = node.line
        self.collected[setting.field][index] = device
        lines[index] = node.line

    def check_cpus(self) -> None:
        cpus = self.collected[settings.CPUS.field]
        if not values.cpus_need_seccomp(cpus, self.collected[settings.USERSPACE.field]):
            return
        cpus_node = self.singletons[settings.CPUS.element]
        userspace = self.singletons[settings.USERSPACE.element]
        raise self.error(
            cpus_node,
            f'count="{cpus_node.attrs["count"]}": more than one CPU needs the seccomp '
            f'userspace (<userspace mode="{userspace.attrs["mode"]}"> on line '
            f"{userspace.line} runs one CPU)",
        )


def parse_xml(
    data: bytes | str,
    *,
    source: str,
    warn: Callable[[str], None],
    base: Machine = settings.COLINUX_PROFILE,
) -> Machine:
    """Read XML configuration text; ``source`` names it in messages.

    What the text does not set is ``base``'s (its profile, see
    ``settings.profile_for``). Text given as ``str`` is parsed as UTF-8,
    whatever its declaration says.
    """
    if isinstance(data, str):
        data = data.encode("utf-8", errors="surrogatepass")
    return _Reader(source, warn, base).read(_parse_tree(data, source))


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
    wherever it is read. A setting or attribute at its default is not written
    unless the seed writes it (``<memory>``, ``enabled="true"``), nor network
    attributes that do not apply to the card's type, so a machine that does not
    set ``<cpus>`` and ``<userspace>`` is written as coLinux 0.6 would have.
    Raises ``UserError`` for what XML cannot express: a boot parameter holding
    whitespace, a control character in a value.
    """
    lines = ['<?xml version="1.0" encoding="UTF-8"?>', f"<{ROOT}>"]
    for element in XML_LAYOUT:
        setting = settings.BY_ELEMENT[element]
        value: Any = getattr(machine, setting.field)
        if isinstance(setting, Scalar):
            if setting.written(value):
                lines.append(_element(element, [(setting.attribute, setting.format(value))]))
        elif isinstance(setting, BootParams):
            if value:
                lines.append(_bootparams(value))
        elif isinstance(setting, Devices):
            for device in sorted(value, key=lambda d: d.index):
                lines.append(_element(element, _device_attributes(setting, device)))
    lines.append(f"</{ROOT}>")
    return "\n".join(lines) + "\n"


def _device_attributes(setting: Devices, device: devices.Device) -> list[tuple[str, str]]:
    attrs = [("index", str(device.index))]
    for attribute in setting.attributes:
        if isinstance(device, NetworkCard) and not attribute.applies_to(device.type):
            continue
        value = getattr(device, attribute.field)
        if attribute.always or value != attribute.default:
            attrs.append((attribute.name, attribute.format(value)))
    return attrs


def _bootparams(words: tuple[str, ...]) -> str:
    for word in words:
        if word == "" or any(c.isspace() for c in word):
            raise UserError(
                f"boot parameter {word!r} cannot be written in XML, whose "
                "<bootparams> are split on whitespace"
            )
    return _element("bootparams", [], _check_text(" ".join(words), "<bootparams>"))
