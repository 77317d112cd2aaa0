"""The debug collector (coLinux's colinux-debug-daemon): structured events from every part.

Off by default, and then free: the ``colinux`` loggers stay at WARNING, so a
``log.debug(...)`` anywhere costs one level check. Switched on (at start with
``--debug-collector``, or at run time by ``colinux debug NAME``), the daemon
turns every log record of its components (daemon, engine, hub, cofs, net)
and every guest kernel message into a ``Record`` and passes it to whoever
follows::

    collector = DebugCollector()
    collector.enable()
    unsubscribe = collector.subscribe(print)       # print(Record) for each event
    log.info("started", extra={"facility": "blockdev", "fields": {"disk": "cobd0"}})

Facilities and levels are the original's: facilities ``misc``, ``network``,
``messages``, ``prints`` (guest kernel messages), ``blockdev``,
``allocations``, ``context_switch``, ``pipe``, ``filesystem``; levels 0..15,
lower is more important (error 1, warning 3, info 5, debug 10). A filter
``-s misc=5,filesystem=15`` keeps records at or under each facility's level.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field

from colinux.errors import UserError

FACILITIES = (
    "misc", "network", "messages", "prints", "blockdev", "allocations", "context_switch",
    "pipe", "filesystem",
)  # fmt: skip
MAX_LEVEL = 15
HISTORY_RECORDS = 2000  # replayed to a follower that attaches late

# Where a logger's records belong when the caller does not say (extra={"facility": ...}).
_COMPONENT_FACILITY = {
    "daemon": "misc",
    "engine": "context_switch",
    "hub": "pipe",
    "cofs": "filesystem",
    "net": "network",
    "guest": "prints",
    "image": "blockdev",
}


def level_of(levelno: int) -> int:
    """A Python logging level as a coLinux debug level (0..15, lower is more important)."""
    if levelno >= logging.ERROR:
        return 1
    if levelno >= logging.WARNING:
        return 3
    if levelno >= logging.INFO:
        return 5
    return 10


@dataclass(frozen=True)
class Record:
    """One debug event, with the original's fields (module, file, function, line)."""

    time: float
    component: str
    facility: str
    level: int
    message: str
    fields: dict[str, object] = field(default_factory=dict)
    module: str = ""
    file: str = ""
    function: str = ""
    line: int = 0

    def to_json(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> Record:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)  # type: ignore[arg-type]

    def to_text(self) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(self.time))
        extra = "".join(f" {k}={v}" for k, v in self.fields.items())
        text = (
            f"{stamp}.{int(self.time % 1 * 1000):03d} {self.component}/{self.facility}"
            f"[{self.level}] {self.message}{extra}"
        )
        return text.replace("\r", "\\r").replace("\n", "\\n")  # one line per record

    def to_xml(self) -> str:
        """The original's ``-p`` record: timestamp, module, file, function, facility, level."""
        attrs = {
            "timestamp": f"{self.time:.6f}",
            "module": self.module or self.component,
            "file": self.file,
            "function": self.function,
            "facility": self.facility,
            "line": str(self.line),
            "level": str(self.level),
            "component": self.component,
        }
        # Imported here: xml.sax pulls in urllib and email, 15 ms of every daemon's start.
        from xml.sax.saxutils import escape, quoteattr

        rendered = " ".join(f"{k}={quoteattr(v)}" for k, v in attrs.items())
        return f"<record {rendered}>{escape(self.message)}</record>"


def record_from_log(record: logging.LogRecord) -> Record:
    # colinux.daemon.hub -> hub; colinux.cofs -> cofs; colinux.engine.uml -> engine
    parts = record.name.split(".")
    component = parts[-1] if parts[-1] == "hub" else (parts[1] if len(parts) > 1 else "daemon")
    facility = getattr(record, "facility", None) or _COMPONENT_FACILITY.get(component, "misc")
    fields = getattr(record, "fields", None) or {}
    return Record(
        time=record.created,
        component=component,
        facility=facility,
        level=level_of(record.levelno),
        message=record.getMessage(),
        fields=dict(fields),
        module=record.name,
        file=record.pathname,
        function=record.funcName,
        line=record.lineno or 0,
    )


# Kernel log priorities (KERN_EMERG 0 .. KERN_DEBUG 7) as debug levels.
_KMSG_LEVELS = (1, 1, 1, 1, 3, 5, 5, 10)


def record_from_kmsg(line: bytes, boot_time: float) -> Record | None:
    """One ``/dev/kmsg`` line, ``PRIO,SEQ,USEC,FLAGS;MESSAGE``, as a record (None if not one)."""
    header, sep, message = line.decode(errors="replace").rstrip("\n").partition(";")
    parts = header.split(",")
    if not sep or len(parts) < 3 or not all(p.isdigit() for p in parts[:3]):
        return None
    priority, sequence, usec = (int(p) for p in parts[:3])
    return Record(
        time=boot_time + usec / 1e6,
        component="guest",
        facility="prints",
        level=_KMSG_LEVELS[priority & 7],
        message=message,
        fields={"seq": sequence},
        module="kernel",
    )


@dataclass(frozen=True)
class Filter:
    """Which records a follower wants."""

    components: frozenset[str] = frozenset()  # empty: all
    facilities: Mapping[str, int] = field(default_factory=dict)  # facility -> max level
    level: int = MAX_LEVEL

    def __call__(self, record: Record) -> bool:
        if self.components and record.component not in self.components:
            return False
        if record.level > self.level:
            return False
        if self.facilities:
            limit = self.facilities.get(record.facility)
            return limit is not None and record.level <= limit
        return True


def parse_facility_levels(text: str) -> dict[str, int]:
    """The original's ``-s FACILITY=LEVEL,...`` (``all=LEVEL`` sets every facility)."""
    levels: dict[str, int] = {}
    for item in text.split(","):
        name, eq, value = item.strip().partition("=")
        if not eq or not value.isdigit() or int(value) > MAX_LEVEL:
            raise UserError(
                f"-s {text}: {item!r}: expected FACILITY=LEVEL with LEVEL 0..{MAX_LEVEL}"
            )
        if name == "all":
            levels.update(dict.fromkeys(FACILITIES, int(value)))
        elif name in FACILITIES:
            levels[name] = int(value)
        else:
            raise UserError(
                f"-s {text}: unknown facility {name!r}: expected one of {', '.join(FACILITIES)}"
            )
    return levels


Subscriber = Callable[[Record], None]


class _Handler(logging.Handler):
    def __init__(self, collector: DebugCollector) -> None:
        super().__init__(logging.DEBUG)
        self.collector = collector

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.collector.emit(record_from_log(record))
        except Exception:  # a broken record must never take the daemon down
            self.handleError(record)


class DebugCollector:
    """One guest's collector: on or off, recent history, followers."""

    def __init__(self, logger: str = "colinux") -> None:
        self.logger = logging.getLogger(logger)
        self.enabled = False
        self.history: collections.deque[Record] = collections.deque(maxlen=HISTORY_RECORDS)
        self._subscribers: list[Subscriber] = []
        self._handler = _Handler(self)
        self._saved_level = self.logger.level
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0

    def bind_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Deliver records on ``loop``'s thread (the caller's): subscribers write to
        asyncio streams, and the cofs servers and relays log from threads of their own."""
        self._loop, self._loop_thread = loop, threading.get_ident()

    def enable(self) -> None:
        if self.enabled:
            return
        self.enabled = True
        self._saved_level = self.logger.level
        self.logger.setLevel(logging.DEBUG)
        self.logger.addHandler(self._handler)
        self.logger.info("debug collector on")

    def disable(self) -> None:
        if not self.enabled:
            return
        self.logger.info("debug collector off")
        self.enabled = False
        self.logger.removeHandler(self._handler)
        self.logger.setLevel(self._saved_level)

    def emit(self, record: Record) -> None:
        if not self.enabled:
            return
        if self._loop is not None and threading.get_ident() != self._loop_thread:
            with contextlib.suppress(RuntimeError):  # the loop has closed: the daemon ends
                self._loop.call_soon_threadsafe(self._deliver, record)
            return
        self._deliver(record)

    def _deliver(self, record: Record) -> None:
        self.history.append(record)
        for subscriber in list(self._subscribers):
            subscriber(record)

    def subscribe(self, subscriber: Subscriber, *, replay: bool = True) -> Callable[[], None]:
        if replay:
            for record in list(self.history):
                subscriber(record)
        self._subscribers.append(subscriber)

        def unsubscribe() -> None:
            if subscriber in self._subscribers:
                self._subscribers.remove(subscriber)

        return unsubscribe


def write_records(records: Iterable[Record], *, xml: bool) -> str:
    return "".join((r.to_xml() if xml else r.to_text()) + "\n" for r in records)


def dumps(record: Record) -> str:
    return json.dumps(record.to_json(), separators=(",", ":"), default=str)
