"""``colinux exec`` on the daemon's side: the guest's exec slots and the sessions on them.

Each engine start brings a set of exec slots (``engine.base.ExecLines``), two
guest serial lines each. A client asks for a session on the control socket::

    {"op": "exec", "argv": ["tar", "x"], "mode": "pipe", "cwd": "/srv",
     "env": {"K": "V"}, "term": "xterm", "rows": 24, "cols": 80, "wait": 60}

(``mode``: ``null`` for an empty stdin, ``pipe`` for the client's, ``tty`` for
a terminal; ``login`` true instead of ``argv`` for root's login shell). The
service waits for the guest agent's HELLO (up to ``wait`` seconds from the
engine's start, or for good on the default guest, whose agent always comes)
and for a free slot, answers ``{"ok": true, "session": ID}``, and sends the
session (``exec_wire.session_payload``) on the slot's IO line, to the slot's
worker in the guest (a slot's first session has the agent start it first:
``EXEC``, then ``READY``). Then it pumps bytes: the client's ``D`` frames into
IO (in pipe mode as ``exec_wire.encode_input``; ``{"op": "eof"}`` is the
end), IO's bytes back as ``D`` frames and ERR's as ``E`` frames, until both
lines have brought the end of the session's output (``exec_wire.OutputEnd``).
The client then gets ``{"exited": STATUS}``, or
``{"ok": false, "error": ...}`` when the guest went away first. A client that
goes away hangs its command up (SIGHUP); ``{"op": "exec-signal", "session":
ID, "signal": "INT"}`` on another connection signals it. Output to a slow
client is not buffered without bound: the slot's lines are left unread, so
the command waits, as a host program does on a full pipe.

    service = ExecService("web")
    service.boot_started(channels.exec_slots, agent_expected=True)
    service.agent_greeted(writer, ("exec",))       # the agent's HELLO flags
    service.message(Free(slot=0))                  # READY and FREE from the guest
    await service.serve(request, reader, writer, decoder)
    service.boot_ended("guest web stopped before the command ended")
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import socket
import time
from dataclasses import dataclass, field
from typing import Any

from colinux.control import protocol
from colinux.daemon.agent_protocol import (
    SIGNALS,
    Exec,
    Free,
    Message,
    Ready,
    Resize,
    Signal,
    encode,
)
from colinux.daemon.exec_wire import (
    ENV_NAME,
    EXEC_MODES,
    INPUT_EOF,
    STATUS_DIGITS,
    OutputEnd,
    encode_input,
    new_nonce,
    output_marker,
    session_payload,
)
from colinux.engine.base import ExecLines

log = logging.getLogger("colinux.daemon")

DEFAULT_AGENT_WAIT = 60.0  # seconds from the engine's start for a root image's agent
WORKER_START = 30.0  # seconds the agent may take to start a slot's worker
_BACKLOG = 256 << 10  # a client's unsent output above which its slot is left unread


class ExecRefused(Exception):
    """Why a session cannot start; ``user``: the request's fault (exit status 2)."""

    def __init__(self, message: str, *, user: bool = False) -> None:
        super().__init__(message)
        self.user = user


class ExecLost(Exception):
    """The guest went away (stopped, rebooted) before the session's command ended."""


@dataclass(frozen=True)
class ExecRequest:
    argv: tuple[str, ...]
    mode: str  # one of exec_wire.EXEC_MODES
    login: bool = False
    cwd: str | None = None
    env: tuple[tuple[str, str], ...] = ()
    term: str | None = None
    rows: int = 0
    cols: int = 0
    wait: float = DEFAULT_AGENT_WAIT

    @classmethod
    def from_message(cls, message: dict[str, object]) -> ExecRequest:
        """The request in a client's ``exec`` message; ValueError naming what is wrong."""
        argv, login = message.get("argv", []), bool(message.get("login", False))
        if not isinstance(argv, list) or not all(isinstance(a, str) for a in argv):
            raise ValueError("argv: expected a list of strings")
        if not argv and not login:
            raise ValueError("no command to run")
        mode = message.get("mode")
        if mode not in EXEC_MODES:
            raise ValueError(f"mode: expected one of {', '.join(EXEC_MODES)}")
        cwd, term = message.get("cwd"), message.get("term")
        if cwd is not None and (not isinstance(cwd, str) or not cwd or "\0" in cwd):
            raise ValueError("cwd: expected a directory")
        if term is not None and not isinstance(term, str):
            raise ValueError("term: expected a string")
        env = message.get("env", {})
        if not isinstance(env, dict) or not all(
            isinstance(k, str) and ENV_NAME.fullmatch(k) and isinstance(v, str)
            for k, v in env.items()
        ):
            raise ValueError("env: expected names and string values")
        rows, cols, wait = message.get("rows", 0), message.get("cols", 0), message.get("wait")
        if not (isinstance(rows, int) and isinstance(cols, int)) or not (
            0 <= rows <= 65535 and 0 <= cols <= 65535
        ):
            raise ValueError("rows, cols: expected 0..65535")
        if wait is None:
            wait = DEFAULT_AGENT_WAIT
        if not isinstance(wait, int | float) or wait < 0:
            raise ValueError("wait: expected seconds")
        return cls(
            argv=tuple(argv), mode=str(mode), login=login, cwd=cwd, env=tuple(env.items()),
            term=term, rows=rows, cols=cols, wait=float(wait),
        )  # fmt: skip


@dataclass(eq=False)
class _Slot:
    index: int
    lines: ExecLines
    io: socket.socket
    err: socket.socket
    session: _Session | None = None
    paused: bool = False
    # Its worker listens on IO (READY, or FREE after a session): a session goes there at once.
    listening: asyncio.Future[None] | None = None


@dataclass(eq=False)
class _Session:
    id: int
    slot: _Slot
    request: ExecRequest
    writer: asyncio.StreamWriter  # the client's connection
    exited: asyncio.Future[int]
    nonce: str = field(default_factory=new_nonce)
    client_gone: bool = False
    ends: dict[bytes, OutputEnd] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.ends = {
            protocol.DATA: OutputEnd(output_marker(self.nonce, "o"), trailer=STATUS_DIGITS),
            protocol.ERR: OutputEnd(output_marker(self.nonce, "e")),
        }

    def receive(self, kind: bytes, data: bytes) -> None:
        """Bytes from the slot's IO (``DATA``) or ERR line: to the client, up to their end."""
        self.send(kind, self.ends[kind].feed(data))
        out, err = self.ends[protocol.DATA].trailer, self.ends[protocol.ERR].trailer
        if out is not None and err is not None and not self.exited.done():
            self.exited.set_result(int(out) if out.isdigit() else 255)

    def lost(self, reason: str) -> None:
        """The guest went away: the client hears it now (the daemon may end right after)."""
        if self.exited.done():
            return
        if not self.client_gone and not self.writer.is_closing():
            self.writer.write(protocol.encode_json({"ok": False, "error": reason, "lost": True}))
        self.exited.set_exception(ExecLost(reason))

    def send(self, kind: bytes, data: bytes) -> None:
        if not data or self.client_gone or self.writer.is_closing():
            return
        frame = protocol.encode_data(data) if kind == protocol.DATA else protocol.encode_err(data)
        self.writer.write(frame)

    @property
    def backlogged(self) -> bool:
        return not self.writer.is_closing() and (
            self.writer.transport.get_write_buffer_size() > _BACKLOG
        )


@dataclass(eq=False)
class _Boot:
    """One engine's slots and agent."""

    slots: list[_Slot]
    free: list[_Slot]  # the last freed first: its worker is warm
    freed: asyncio.Event
    agent: asyncio.Future[tuple[asyncio.StreamWriter, str | None]]  # writer, why no exec
    ended: asyncio.Future[str]  # why (for sessions that were waiting)
    agent_expected: bool
    started: float = field(default_factory=time.monotonic)


class ExecService:
    """The exec sessions of one guest, across its engine starts."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._boot: _Boot | None = None
        self._sessions: dict[int, _Session] = {}
        self._ids = itertools.count(1)
        self._stopping = False
        self._tasks: set[asyncio.Task[None]] = set()

    # -- what the supervisor tells us ---------------------------------------------

    def boot_started(self, slots: tuple[ExecLines, ...], *, agent_expected: bool) -> None:
        loop = asyncio.get_running_loop()
        boot = _Boot(
            slots=[],
            free=[],
            freed=asyncio.Event(),
            agent=loop.create_future(),
            ended=loop.create_future(),
            agent_expected=agent_expected,
        )
        for index, lines in enumerate(slots):
            io, err = socket.socket(fileno=lines.io), socket.socket(fileno=lines.err)
            io.setblocking(False)
            err.setblocking(False)
            slot = _Slot(index, lines, io, err)
            boot.slots.append(slot)
            self._read(slot, True)
        boot.free = boot.slots[::-1]
        self._boot = boot

    def agent_greeted(self, writer: asyncio.StreamWriter, flags: tuple[str, ...]) -> None:
        """The agent's HELLO: exec works if it says ``exec``."""
        boot = self._boot
        if boot is None or boot.agent.done():
            return
        refusal = None
        if "exec" not in flags:
            refusal = (
                f"guest {self.name}'s image was made before colinux exec: its agent only "
                "powers off and reboots (make the image again with colinux image root)"
            )
        boot.agent.set_result((writer, refusal))

    def stopping(self) -> None:
        self._stopping = True

    def boot_ended(self, reason: str) -> None:
        """The engine is gone: every session and every waiting request ends with ``reason``."""
        boot, self._boot = self._boot, None
        if boot is None:
            return
        if not boot.ended.done():
            boot.ended.set_result(reason)
        if self._stopping:
            reason = f"guest {self.name} was stopped before the command ended"
        for slot in boot.slots:
            self._read(slot, False)
            if slot.session is not None:
                slot.session.lost(reason)
            slot.io.close()
            slot.err.close()

    def message(self, message: Message) -> None:
        """READY or FREE from the guest."""
        boot = self._boot
        if boot is None or not isinstance(message, Ready | Free):
            return
        if not 0 <= message.slot < len(boot.slots):
            return
        slot = boot.slots[message.slot]
        if isinstance(message, Ready):
            self._listening(slot)
        elif slot.session is not None:
            session = slot.session
            if not session.exited.done():
                # FREE came on the agent's line before the end of the output on the
                # slot's (they are apart): the slot is free once that has come.
                session.exited.add_done_callback(lambda _: self._free(boot, slot, session))
            else:
                self._free(boot, slot, session)

    def _free(self, boot: _Boot, slot: _Slot, session: _Session) -> None:
        if slot.session is not session or self._boot is not boot:
            return
        self._sessions.pop(session.id, None)
        slot.session = None
        self._listening(slot)
        boot.free.append(slot)
        boot.freed.set()

    def _listening(self, slot: _Slot) -> None:
        if slot.listening is None:
            slot.listening = asyncio.get_running_loop().create_future()
        if not slot.listening.done():
            slot.listening.set_result(None)

    def status(self) -> dict[str, object]:
        boot = self._boot
        return {
            "slots": len(boot.slots) if boot else 0,
            "sessions": sum(1 for s in self._sessions.values() if not s.exited.done()),
            "agent": bool(boot and boot.agent.done() and boot.agent.result()[1] is None),
        }

    def signal(self, session_id: object, name: object) -> dict[str, object]:
        """The ``exec-signal`` request."""
        session = self._sessions.get(session_id) if isinstance(session_id, int) else None
        if session is None or session.exited.done():
            return {"ok": False, "error": f"no running exec session {session_id}"}
        if name not in SIGNALS:
            return {"ok": False, "error": f"signal: expected one of {', '.join(SIGNALS)}"}
        self._signal(session, str(name))
        return {"ok": True}

    # -- a client's session ---------------------------------------------------------

    async def serve(
        self,
        message: dict[str, object],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        decoder: protocol.FrameDecoder,
    ) -> None:
        """Serve an ``exec`` request on its connection, to the command's end."""
        try:
            request = ExecRequest.from_message(message)
            boot, agent = await self._agent(request)
            slot = await self._take_slot(boot)
        except ValueError as e:
            writer.write(protocol.encode_json({"ok": False, "error": str(e), "user": True}))
            return
        except ExecRefused as e:
            writer.write(protocol.encode_json({"ok": False, "error": str(e), "user": e.user}))
            return
        loop = asyncio.get_running_loop()
        session = _Session(next(self._ids), slot, request, writer, loop.create_future())
        try:
            payload = encode_input(self._payload(session)) + INPUT_EOF
        except ValueError as e:
            self._release(boot, slot)
            writer.write(protocol.encode_json({"ok": False, "error": str(e), "user": True}))
            return
        slot.session = session
        self._sessions[session.id] = session
        writer.write(protocol.encode_json({"ok": True, "session": session.id}))
        log.debug(
            "exec session started",
            extra={"fields": {"session": session.id, "slot": slot.index, "mode": request.mode}},
        )
        stdin = asyncio.create_task(self._client_input(session, reader, decoder, agent, payload))
        try:
            status = await session.exited
        except ExecLost:
            pass  # the client has been told (``_Session.lost``)
        else:
            writer.write(protocol.encode_json({"exited": status}))
        finally:
            stdin.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await stdin
        log.debug("exec session ended", extra={"fields": {"session": session.id}})
        if request.mode != "null" and self._boot is boot:
            # The end of what this session left in the slot's input (the agent
            # reads up to it, then says FREE).
            with contextlib.suppress(OSError):
                await loop.sock_sendall(slot.io, session.nonce.encode() + b"\n")

    def _payload(self, session: _Session) -> bytes:
        request = session.request
        return session_payload(
            request.argv, mode=request.mode, nonce=session.nonce, rows=request.rows,
            cols=request.cols, cwd=request.cwd, env=dict(request.env), term=request.term,
            login=request.login,
        )  # fmt: skip

    def _release(self, boot: _Boot, slot: _Slot) -> None:
        boot.free.append(slot)
        boot.freed.set()

    async def _agent(self, request: ExecRequest) -> tuple[_Boot, asyncio.StreamWriter]:
        boot = self._boot
        if boot is None or self._stopping:
            raise ExecRefused(f"guest {self.name} is stopping")
        if not boot.agent.done():
            timeout = None
            if not boot.agent_expected:
                timeout = max(0.0, request.wait - (time.monotonic() - boot.started))
            waiting: set[asyncio.Future[Any]] = {boot.agent, boot.ended}
            await asyncio.wait(waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if boot.ended.done():
            raise ExecRefused(boot.ended.result())
        if not boot.agent.done():
            raise ExecRefused(
                f"guest {self.name} has no colinux agent to run commands: exec works on the "
                "default guest and on images made by colinux image root",
                user=True,
            )
        writer, refusal = boot.agent.result()
        if refusal is not None:
            raise ExecRefused(refusal, user=True)
        return boot, writer

    async def _take_slot(self, boot: _Boot) -> _Slot:
        while not boot.free:
            # All busy: wait for one, as long as the engine lasts.
            boot.freed.clear()
            freed = asyncio.ensure_future(boot.freed.wait())
            waiting: set[asyncio.Future[Any]] = {freed, boot.ended}
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            freed.cancel()
            if boot.ended.done():
                raise ExecRefused(boot.ended.result())
        return boot.free.pop()

    async def _client_input(
        self,
        session: _Session,
        reader: asyncio.StreamReader,
        decoder: protocol.FrameDecoder,
        agent: asyncio.StreamWriter,
        payload: bytes,
    ) -> None:
        """The session to the slot's worker; then the client's frames: stdin, its end, sizes."""
        loop = asyncio.get_running_loop()
        mode = session.request.mode
        ended = False  # stdin has ended: what comes after is not the command's
        slot = session.slot
        try:
            if slot.listening is None:  # the slot's first session: the agent starts its worker
                slot.listening = loop.create_future()
                agent.write(encode(Exec(slot.index, slot.lines.io_device, slot.lines.err_device)))
            try:
                await asyncio.wait_for(asyncio.shield(slot.listening), WORKER_START)
            except TimeoutError:
                session.lost(f"guest {self.name} did not start a worker for the command")
                return
            slot.listening = None  # until FREE
            await loop.sock_sendall(slot.io, payload)
            frames = list(decoder.feed(b""))  # what came with the request
            while True:
                for kind, payload in frames:
                    if kind == protocol.DATA and mode != "null" and not ended:
                        data = encode_input(payload) if mode == "pipe" else payload
                        await loop.sock_sendall(session.slot.io, data)
                    elif kind == protocol.JSON:
                        request = protocol.decode_json(payload)
                        if request.get("op") == "eof" and mode != "null" and not ended:
                            # pipe: the end of input; tty: Ctrl-D, as a terminal's
                            await loop.sock_sendall(session.slot.io, INPUT_EOF)
                            ended = mode == "pipe"
                        elif request.get("op") == "resize" and mode == "tty":
                            rows, cols = request.get("rows"), request.get("cols")
                            if isinstance(rows, int) and isinstance(cols, int):
                                with contextlib.suppress(ValueError):
                                    agent.write(encode(Resize(session.slot.index, rows, cols)))
                data = await reader.read(65536)
                if not data:
                    break
                frames = list(decoder.feed(data))
        except (OSError, protocol.ProtocolError) as e:
            log.debug("exec client: %s", e)
        if not session.exited.done():
            # The client went away before its command ended: hang the command up,
            # as closing its terminal would.
            session.client_gone = True
            self._signal(session, "HUP")
            self._read(session.slot, True)

    def _signal(self, session: _Session, name: str) -> None:
        boot = self._boot
        if boot is None or not boot.agent.done():
            return
        writer, _ = boot.agent.result()
        with contextlib.suppress(OSError):
            writer.write(encode(Signal(session.slot.index, name)))

    # -- the slots' output ------------------------------------------------------------

    def _read(self, slot: _Slot, on: bool) -> None:
        loop = asyncio.get_running_loop()
        for sock, kind in ((slot.io, protocol.DATA), (slot.err, protocol.ERR)):
            if sock.fileno() < 0:
                continue
            if on:
                loop.add_reader(sock, self._readable, slot, sock, kind)
            else:
                loop.remove_reader(sock)
        slot.paused = not on

    def _readable(self, slot: _Slot, sock: socket.socket, kind: bytes) -> None:
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:  # the engine is gone
            asyncio.get_running_loop().remove_reader(sock)
            return
        session = slot.session
        if session is None or session.exited.done():
            return  # after its command ended: nobody's output
        session.receive(kind, data)
        if session.exited.done():
            return
        if session.backlogged and not slot.paused:
            self._read(slot, False)
            task = asyncio.create_task(self._resume(slot, session))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _resume(self, slot: _Slot, session: _Session) -> None:
        try:
            await session.writer.drain()
        except (OSError, RuntimeError):
            session.client_gone = True
        if slot.session is session and self._boot is not None and slot in self._boot.slots:
            self._read(slot, True)
