"""The daemon: one guest's supervisor.

It claims the guest's run directory, starts the engine, serves the guest's
console (``ConsoleHub``) on the terminal and on the control socket, answers
the guest agent, turns signals into guest actions (SIGTERM/SIGINT: clean
shutdown; SIGHUP: Ctrl-Alt-Del, as coLinux did) and, whatever happens,
leaves no engine process and no run directory behind::

    status = run_daemon(machine, DaemonOptions(name="web", console="none"))

Stopping walks a ladder: ask the guest agent to power off, then halt through
the engine (disks flushed first), then kill the engine's process group.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import os
import re
import shlex
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from colinux import trace
from colinux.config.model import Machine
from colinux.console.terminal import raw_terminal, read_typed, set_window_size, window_size
from colinux.console.web_listener import WebListener
from colinux.control import protocol
from colinux.control.debug import DebugCollector, Record, dumps, record_from_kmsg
from colinux.control.rundir import ClaimedGuestDir
from colinux.daemon.agent_protocol import (
    Exit,
    Free,
    Hello,
    Kmsg,
    Poweroff,
    Ready,
    Reboot,
    Refuse,
    Run,
    Shell,
    decode,
    encode,
)
from colinux.daemon.backends import backends_for
from colinux.daemon.exec_sessions import ExecService
from colinux.daemon.hub import ConsoleHub
from colinux.daemon.machine_info import describe_machine
from colinux.daemon.notify import Notifier
from colinux.engine.backend import Backend, backend_log, event_fields
from colinux.engine.base import BootSpec, Engine, GuestChannels, Wiring, create_engine
from colinux.engine.resident import resident_kib
from colinux.errors import ColinuxError, UserError
from colinux.guest.image import default_initramfs
from colinux.version import __version__

log = logging.getLogger("colinux.daemon")

ConsoleMode = Literal["terminal", "stdout", "none"]


@dataclass(frozen=True)
class DaemonOptions:
    name: str
    console: ConsoleMode = "none"
    quiet: bool = False  # -k: hide guest kernel messages
    job: tuple[str, ...] | None = None  # `colinux run -- CMD`: run it, exit with its status
    shell: Literal["once", "respawn"] = "respawn"  # default guest: shell again after exit?
    pidfile: str | None = None
    ready_fd: int | None = None  # write "ok" here once serving (for `colinux start`)
    stop_timeout: float = 10.0
    service: bool = False  # --run-service: report to systemd ($NOTIFY_SOCKET)
    debug_collector: bool = False  # collect debug events from the start
    extra_kernel_args: tuple[str, ...] = field(default=())
    web: WebListener | None = None  # --web: a web console, kept up by the daemon


def boot_spec(machine: Machine, options: DaemonOptions, state_dir: str) -> BootSpec:
    """Which initrd to boot: the user's, none (root= on a disk), or the default guest."""
    has_root = any(w.startswith("root=") for w in machine.bootparams)
    # root=cofsN: the default guest's init mounts the share and hands over to it.
    cofs_root = any(re.fullmatch(r"root=(cofs)?\d+", w) for w in machine.bootparams)
    if machine.initrd is not None:
        initrd, default_guest = machine.initrd.host or machine.initrd.raw, False
    elif has_root and not cofs_root:
        initrd, default_guest = None, False
    else:
        initrd, default_guest = str(default_initramfs()), True
    if options.job is not None and initrd is None:
        raise UserError(
            "'-- CMD' needs colinux's guest tools: use the default guest or an initrd "
            f"built by colinux, not root= alone ({' '.join(machine.bootparams)})"
        )
    term = os.environ.get("TERM", "linux") if options.console == "terminal" else "linux"
    extra: tuple[str, ...] = (f"TERM={term}",) if default_guest else ()
    if default_guest and trace.enabled():
        extra += (trace.KERNEL_ARG,)
    return BootSpec(
        machine=machine,
        name=options.name,
        state_dir=state_dir,
        initrd=initrd,
        default_guest=default_guest,
        quiet=options.quiet,
        extra_kernel_args=extra + options.extra_kernel_args,
    )


class Supervisor:
    def __init__(self, machine: Machine, options: DaemonOptions) -> None:
        self.machine = machine
        self.options = options
        self.state = "starting"
        self.agent_version: str | None = None
        self.job_status: int | None = None
        self.failure: ColinuxError | None = None  # reported when the daemon ends
        self.stop_requested = False
        self.stop_signal = signal.SIGTERM  # a job stopped by a signal ends with 128 + it
        self.reboot_requested = False
        self.started = time.time()
        self._agent_writer: asyncio.StreamWriter | None = None
        self._agent_serves = False
        self._kmsg_asked = False
        self._clients: set[asyncio.StreamWriter] = set()
        self._local_output = True  # the local console still shows guest output
        self.notifier = Notifier(None)
        self.debug = DebugCollector()
        self._debug_wanted = options.debug_collector  # on by request, not only for followers
        self._followers = 0
        # Guest kernel messages are few; the recent ones are kept even with the
        # collector off, so switching it on shows how the guest booted.
        self._kernel_messages: collections.deque[Record] = collections.deque(maxlen=500)
        self._engine_started = time.time()
        self._web_url: str | None = None
        self.execs = ExecService(options.name)  # colinux exec sessions
        if options.service:
            self.notifier = Notifier.from_environment()
            # Only the daemon speaks to systemd (NotifyAccess=main): not its children.
            for variable in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
                os.environ.pop(variable, None)

    # -- life cycle ---------------------------------------------------------

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        self.debug.bind_loop(loop)
        if self._debug_wanted:  # from the start: the backends' and engine's start too
            self._set_debug(True)
        gdir = ClaimedGuestDir(self.options.name)
        trace.mark("daemon: run directory claimed")
        try:
            spec = boot_spec(self.machine, self.options, str(gdir.uml_dir))
            async with contextlib.AsyncExitStack() as backends:
                wiring = Wiring()
                self.backends = backends_for(
                    self.machine, name=self.options.name, state_dir=gdir.uml_dir
                )
                for backend in self.backends:
                    started = await backend.start()
                    wiring = wiring + started
                    backends.push_async_callback(self._stop_backend, backend)
                    backend_log(backend).info(
                        "backend started", extra={"fields": event_fields(backend, started)}
                    )
                    trace.mark(f"backend started: {type(backend).__name__}")
                self.engine: Engine = create_engine(dataclasses.replace(spec, wiring=wiring))
                channels = await self._start_engine()
                try:
                    return await self._serve(loop, gdir, channels)
                finally:
                    self.engine.kill()
                    await self.engine.wait()
                    trace.mark("daemon: stopping the backends")
        finally:
            gdir.release()
            trace.mark("daemon: done")
            if self.options.pidfile:
                with contextlib.suppress(OSError):
                    os.unlink(self.options.pidfile)

    async def _stop_backend(self, backend: Backend) -> None:
        await backend.stop()
        backend_log(backend).info(
            "backend stopped", extra={"fields": {"backend": type(backend).__name__}}
        )

    async def _start_engine(self) -> GuestChannels:
        trace.mark("engine: starting")
        channels = await self.engine.start()
        trace.mark("engine: started")
        try:
            for backend in self.backends:
                await backend.engine_started(self.engine.pid or 0)
                fields = event_fields(backend, Wiring())
                if "pids" in fields:  # helpers started for this engine
                    backend_log(backend).debug(
                        "backend joined the engine", extra={"fields": fields}
                    )
        except BaseException:
            self.engine.kill()
            await self.engine.wait()
            raise
        return channels

    async def _serve(
        self, loop: asyncio.AbstractEventLoop, gdir: ClaimedGuestDir, channels: GuestChannels
    ) -> int:
        self.hub = ConsoleHub(channels.console, loop)
        # Serial lines the daemon serves get a hub each, like the console.
        self.serial_hubs = {
            i: ConsoleHub(fd, loop, line=f"ttyS{i}") for i, fd in channels.serials.items()
        }
        if self.options.pidfile:
            with open(self.options.pidfile, "w") as f:
                f.write(f"{os.getpid()}\n")
        old_umask = os.umask(0o177)  # the socket is born 0600: no window for others
        try:
            server = await asyncio.start_unix_server(
                self._serve_client, path=str(gdir.control_socket)
            )
        finally:
            os.umask(old_umask)
        web = await self._start_web(gdir)
        for signum, action in (
            (signal.SIGTERM, self.request_stop),
            (signal.SIGINT, self._interrupted),
            (signal.SIGHUP, self._ctrl_alt_del),
        ):
            loop.add_signal_handler(signum, action)
        interval = self.notifier.watchdog_interval()
        watchdog = asyncio.create_task(self._watchdog(interval)) if interval else None
        try:
            with self._local_console(loop):
                while True:
                    status = await self._boot(gdir, channels)
                    if not self.reboot_requested or self.stop_requested:
                        break
                    # The default guest reboots through us: a fresh engine
                    # with fresh channels, the same consoles attached.
                    self.reboot_requested = False
                    await self.engine.wait()
                    channels = await self._start_engine()
                    self.hub.switch(channels.console)
                    for index, fd in channels.serials.items():
                        self.serial_hubs[index].switch(fd)
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(signum)
            self.state = "stopped"
            if watchdog is not None:
                watchdog.cancel()
            server.close()
            for writer in list(self._clients):
                writer.close()
            self.hub.close()
            for hub in self.serial_hubs.values():
                hub.close()
            await web.aclose()
        return self._exit_status(status)

    async def _start_web(self, gdir: ClaimedGuestDir) -> contextlib.AsyncExitStack:
        """The web console (--web), a client of our own control socket; closed by the stack."""
        stack = contextlib.AsyncExitStack()
        if self.options.web is not None:
            from colinux.console.web import ConsoleTarget, daemon_web_console

            target = ConsoleTarget(self.options.name, gdir.control_socket)
            await stack.enter_async_context(
                daemon_web_console(self.options.web, target, gdir.web_url_file)
            )
            self._web_url = self.options.web.url
        return stack

    async def _boot(self, gdir: ClaimedGuestDir, channels: GuestChannels) -> int:
        """Serve one boot of the engine until it ends; its exit status."""
        gdir.write_info(
            engine_pid=self.engine.pid,
            memory_mb=self.machine.memory_mb,
            source=self.machine.source,
        )
        self.state = "booting" if self.engine.spec.default_guest else "running"
        self._agent_writer = None
        self._agent_serves = False  # a root image's agent: it forwards /dev/kmsg itself
        self._kmsg_asked = False
        self._engine_started = time.time()
        log.info("engine started", extra={"fields": {"pid": self.engine.pid}})
        self.execs.boot_started(channels.exec_slots, agent_expected=self.engine.spec.default_guest)
        agent_task = asyncio.create_task(self._agent(channels.agent))
        errors_task = asyncio.create_task(self._errors_channel(channels.errors))
        output_task = asyncio.create_task(self._output_channel(channels.output))
        kmsg_task = asyncio.create_task(self._kmsg_channel(channels.kmsg))
        if self.state == "running":  # no agent of ours to wait for
            self._notify_running()
        try:
            status = await self.engine.wait()
            trace.mark("engine: ended")
            self.hub.drain()
        finally:
            # The channels reach end-of-file once the engine is gone; what the
            # guest said last (REBOOT, say) is read before we move on.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(agent_task, errors_task), 2.0)
            with contextlib.suppress(TimeoutError):  # a job's last output, to a slow reader
                await asyncio.wait_for(output_task, 30.0)
            for task in (agent_task, errors_task, kmsg_task, output_task):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            what = "rebooted" if self.reboot_requested else "stopped"
            self.execs.boot_ended(f"guest {self.options.name} {what} before the command ended")
        log.info("engine ended", extra={"fields": {"status": status}})
        return status

    def _exit_status(self, engine_status: int) -> int:
        if self.failure is not None:
            raise self.failure
        if self.options.job is not None:
            if self.job_status is not None:
                return self.job_status
            if self.stop_requested:
                return 128 + self.stop_signal
            raise ColinuxError(
                f"guest {self.options.name} ended before the command finished "
                f"(engine status {engine_status}){self._engine_said()}"
            )
        if engine_status == 0 or self.stop_requested:
            return 0
        raise ColinuxError(
            f"engine of guest {self.options.name} exited with {engine_status}{self._engine_said()}"
        )

    def _engine_said(self) -> str:
        tail = self.engine.log_tail(400).strip().splitlines()
        return f"; the engine said: {tail[-1]}" if tail else ""

    def _notify_ready(self, message: str) -> None:
        fd = self.options.ready_fd
        if fd is not None:
            with contextlib.suppress(OSError):
                os.write(fd, message.encode() + b"\n")
                os.close(fd)
            self.options = dataclasses.replace(self.options, ready_fd=None)

    def _notify_running(self) -> None:
        """The guest has booted (its agent said HELLO): `colinux start` returns, and
        systemd hears READY=1."""
        self._notify_ready("ok")
        self.notifier.send(READY=1, STATUS=f"guest {self.options.name} is running")

    async def _watchdog(self, interval: float) -> None:
        # The event loop answering is what systemd's watchdog checks: a stuck
        # daemon gets restarted (Restart=on-failure).
        while True:
            self.notifier.send(WATCHDOG=1)
            await asyncio.sleep(interval)

    # -- stopping -------------------------------------------------------------

    def _interrupted(self) -> None:
        if not self.stop_requested:
            self.stop_signal = signal.SIGINT  # Ctrl-C: 130, as the shell reports it
        self.request_stop()

    def request_stop(self, force: bool = False) -> None:
        if self.stop_requested and not force:
            return
        self.stop_requested = True
        asyncio.get_running_loop().create_task(self.stop(force=force))

    async def stop(self, force: bool = False) -> None:
        """The termination ladder; returns once the engine has ended."""
        self.state = "stopping"
        self.execs.stopping()
        self.notifier.send(STOPPING=1, STATUS=f"stopping guest {self.options.name}")
        timeout = self.options.stop_timeout
        if not force and self._agent_writer is not None:
            log.info("asking the guest agent to power off")
            with contextlib.suppress(OSError):
                self._agent_writer.write(encode(Poweroff()))
            if await self._engine_ends_within(timeout):
                return
        if not force:
            log.info("halting the guest through the engine")
            await self.engine.halt()
            if await self._engine_ends_within(min(timeout, 5.0)):
                return
        log.info("killing the engine")
        self.engine.kill()

    async def _engine_ends_within(self, seconds: float) -> bool:
        try:
            await asyncio.wait_for(asyncio.shield(self.engine.wait()), seconds)
        except TimeoutError:
            return False
        return True

    def _ctrl_alt_del(self) -> None:
        async def cad() -> None:
            try:
                await self.engine.ctrl_alt_del()
            except ColinuxError as e:
                log.warning("Ctrl-Alt-Del: %s", e)

        asyncio.get_running_loop().create_task(cad())

    # -- the guest agent --------------------------------------------------------

    async def _agent(self, fd: int) -> None:
        import socket

        reader, writer = await asyncio.open_connection(sock=socket.socket(fileno=fd))
        try:
            while line := await reader.readline():
                message = decode(line)
                if isinstance(message, Hello):
                    trace.mark("agent: hello received")
                    self._hello(message.version, writer, serve="serve" in message.flags)
                    if self._agent_writer is writer and self.failure is None:
                        self.execs.agent_greeted(writer, message.flags)
                elif isinstance(message, Reboot):
                    self.reboot_requested = self.options.job is None
                elif isinstance(message, Exit):
                    trace.mark("agent: exit received")
                    # Output written before the exit report is already in the
                    # console's buffer: pass it on, then show no more (the
                    # guest's power-off messages are not the command's).
                    self.hub.drain()
                    self._local_output = False
                    self.job_status = message.status
                elif isinstance(message, Ready | Free):
                    self.execs.message(message)
        except ConnectionError:
            pass  # the engine was killed with our words unread: the end, as at end-of-file
        finally:
            writer.close()

    def _hello(self, version: str, writer: asyncio.StreamWriter, *, serve: bool = False) -> None:
        if serve:
            # A root image's agent (colinux image root): it only takes POWEROFF and
            # REBOOT, which every version speaks, and an image outlives the colinux
            # that built it: another version is no reason to refuse the guest.
            if version != __version__:
                log.info("the image's agent is from colinux %s", version)
            self.agent_version = version
            self._agent_writer = writer
            self._agent_serves = True
            if self.options.job is not None:  # root=cofsN of a Debian tree, say
                self.failure = UserError(
                    "'-- CMD' needs the default guest's root: this guest's root is a "
                    "colinux image, whose agent runs no commands (use colinux start and ssh)"
                )
                self.request_stop()
            elif self.stop_requested:
                writer.write(encode(Poweroff()))
            elif self.state == "booting":  # root=cofsN of a Debian tree: booted now
                self.state = "running"
                self._notify_running()
            return
        if version != __version__:
            self.failure = UserError(
                f"guest tools version {version} do not match colinux {__version__}: "
                "rebuild the initrd with this colinux (the guest was stopped)"
            )
            writer.write(encode(Refuse()))
            self.request_stop()
            return
        if self.agent_version is not None and self.options.job is not None:
            self.failure = ColinuxError("guest rebooted before the command finished")
            writer.write(encode(Refuse()))
            return
        self.agent_version = version
        self._agent_writer = writer
        self.state = "running"
        self._notify_running()
        if self.options.job is not None:
            tty = self.options.console == "terminal"
            writer.write(encode(Run("tty" if tty else "raw", shlex.join(self.options.job))))
        else:
            writer.write(encode(Shell(self.options.shell)))
        if self.debug.enabled or trace.enabled():
            self._ask_kernel_messages()
        if self.stop_requested:
            writer.write(encode(Poweroff()))

    async def _errors_channel(self, fd: int, stream: str = "stderr") -> None:
        """tty14: a job's stderr in raw mode (tty12: its stdout, with ``stream="stdout"``);
        anything else joins the console."""
        import socket

        out = sys.stdout if stream == "stdout" else sys.stderr
        reader, writer = await asyncio.open_connection(sock=socket.socket(fileno=fd))
        try:
            while data := await reader.read(65536):
                if self.options.job is not None and self.options.console != "terminal":
                    try:
                        out.buffer.write(data)
                        out.buffer.flush()
                    except BrokenPipeError:
                        if stream == "stdout" and not self.stop_requested:
                            # As in a host pipeline (yes | head): the command's reader
                            # is gone, so the command ends, with SIGPIPE's status.
                            if self.job_status is None:
                                self.job_status = 128 + signal.SIGPIPE
                            self.request_stop()
                    except OSError:
                        pass
                else:
                    for sink in list(self.hub.sinks):
                        sink(data)
        except ConnectionError:
            pass  # the engine was killed: the end, as at end-of-file
        finally:
            writer.close()

    async def _output_channel(self, fd: int | None) -> None:
        if fd is not None:
            await self._errors_channel(fd, "stdout")

    async def _kmsg_channel(self, fd: int | None) -> None:
        """tty13: the guest kernel's /dev/kmsg, one message a line, for the debug collector."""
        if fd is None:
            return
        import socket

        reader, writer = await asyncio.open_connection(sock=socket.socket(fileno=fd))
        try:
            while line := await reader.readline():
                record = record_from_kmsg(line.rstrip(b"\r\n"), self._engine_started)
                if record is None:
                    trace.guest_line(line.decode(errors="replace"))
                else:
                    trace.guest_line(record.message, record.time - self._engine_started)
                    self._kernel_messages.append(record)
                    self.debug.emit(record)
        finally:
            writer.close()

    # -- the debug collector ------------------------------------------------------

    def _set_debug(self, on: bool) -> None:
        if on and not self.debug.enabled:
            self.debug.enable()
            for record in self._kernel_messages:  # how the guest booted, in order
                self.debug.history.append(record)
            self._ask_kernel_messages()
        elif not on:
            self.debug.disable()

    def _ask_kernel_messages(self) -> None:
        """Have the default guest's agent start passing /dev/kmsg on (``KMSG``), once a boot.

        Only when someone wants them: the forwarder is a program the guest would
        otherwise start at every boot, and /dev/kmsg replays the boot's messages
        to it whenever it starts."""
        if self._kmsg_asked or self._agent_writer is None or self._agent_serves:
            return
        self._kmsg_asked = True
        with contextlib.suppress(OSError):
            self._agent_writer.write(encode(Kmsg()))

    def _follow(
        self, writer: asyncio.StreamWriter, request: dict[str, object]
    ) -> Callable[[], None]:
        """Stream debug records to a client (``colinux debug``) until it goes."""
        self._set_debug(True)
        writer.write(protocol.encode_json({"ok": True}))

        def send(record: Record) -> None:
            if writer.is_closing():
                return
            if writer.transport.get_write_buffer_size() > 4 << 20:
                log.warning("dropping a debug follower that does not read")
                writer.close()
                return
            writer.write(protocol.encode_frame(protocol.JSON, dumps(record).encode()))

        if not request.get("live", True):  # what was collected so far, then the end
            for record in list(self.debug.history):
                send(record)
            writer.write(protocol.encode_json({"done": True}))
            if not self._debug_wanted and not self._followers:
                self._set_debug(False)
            return lambda: None
        unsubscribe = self.debug.subscribe(send, replay=bool(request.get("replay", True)))
        self._followers += 1

        def unfollow() -> None:
            unsubscribe()
            self._followers -= 1
            if not self._followers and not self._debug_wanted:
                self._set_debug(False)

        return unfollow

    # -- consoles ---------------------------------------------------------------

    @contextlib.contextmanager
    def _local_console(self, loop: asyncio.AbstractEventLoop):  # type: ignore[no-untyped-def]
        mode = self.options.console
        raw_job = self.options.job is not None and mode != "terminal"
        if mode == "none" or (raw_job and self.options.quiet):
            # A quiet job's output is the command's alone: no console messages
            # (the emergency ones quiet does not hide: a halt, a sysrq).
            yield
            return
        out_fd = sys.stdout.fileno()
        if raw_job:
            # A job's stdout has a line of its own: the console (kernel messages
            # with --verbose) goes to stderr, beside the command's errors.
            out_fd = sys.stderr.fileno()

        def show(data: bytes) -> None:
            if not self._local_output:
                return
            try:
                while data:
                    n = os.write(out_fd, data)
                    data = data[n:]
            except BlockingIOError:
                pass  # a stalled terminal drops output rather than stall the guest
            except OSError:
                self._local_output = False  # stdout closed (e.g. piped into head)

        detach = self.hub.attach(show, replay=True)
        if mode != "terminal":
            try:
                yield
            finally:
                detach()
            return
        in_fd = sys.stdin.fileno()

        def resize() -> None:
            size = window_size(in_fd)
            if size:
                set_window_size(self.hub.fd, *size)

        def typed() -> None:
            data = read_typed(in_fd)
            if not data:
                loop.remove_reader(in_fd)
                return
            self.hub.write(data)

        resize()
        with raw_terminal(in_fd):
            loop.add_reader(in_fd, typed)
            loop.add_signal_handler(signal.SIGWINCH, resize)
            try:
                yield
            finally:
                loop.remove_reader(in_fd)
                loop.remove_signal_handler(signal.SIGWINCH)
                detach()

    async def _serve_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):  # type: ignore[no-untyped-def]
        self._clients.add(writer)
        decoder = protocol.FrameDecoder()
        detach = None
        unfollow = None
        hub = self.hub  # the console, or the serial line the client attached to

        def send(data: bytes) -> None:
            if writer.is_closing():
                return
            if writer.transport.get_write_buffer_size() > 4 << 20:
                log.warning("dropping a console client that does not read")
                writer.close()
                return
            writer.write(protocol.encode_data(data))

        try:
            while data := await reader.read(65536):
                for kind, payload in decoder.feed(data):
                    if kind == protocol.DATA:
                        if detach is not None:
                            hub.write(payload)
                        continue
                    request = protocol.decode_json(payload)
                    op = request.get("op")
                    if op == "attach":
                        line = request.get("line")
                        if line is not None and line not in self.serial_hubs:
                            writer.write(protocol.encode_json(self._no_line(line)))
                            continue
                        replay = detach is None and bool(request.get("replay", True))
                        if detach is None:
                            hub = self.hub if line is None else self.serial_hubs[line]  # type: ignore[index]
                        # How many bytes of history follow: a web page answers no query in them.
                        replayed = len(hub.history) if replay else 0
                        reply = {"ok": True, "name": self.options.name, "replay": replayed}
                        writer.write(protocol.encode_json(reply))
                        if detach is None:
                            detach = hub.attach(send, replay=replay)
                    elif op == "follow" and unfollow is None:
                        unfollow = self._follow(writer, request)
                    elif op == "resize":
                        rows, cols = request.get("rows"), request.get("cols")
                        if isinstance(rows, int) and isinstance(cols, int):
                            set_window_size(hub.fd, rows, cols)
                    elif op == "exec" and detach is None and unfollow is None:
                        # The connection is the session's now, to its command's end.
                        await self.execs.serve(request, reader, writer, decoder)
                        return
                    else:
                        writer.write(protocol.encode_json(await self._request(request)))
        except protocol.ProtocolError as e:
            log.warning("control client: %s", e)
        except ConnectionError as e:  # it went away with output in flight: a detach, Ctrl-C
            log.debug("control client: %s", e)
        finally:
            if detach is not None:
                detach()
            if unfollow is not None:
                unfollow()
            self._clients.discard(writer)
            writer.close()

    def _no_line(self, line: object) -> dict[str, object]:
        served = ", ".join(f"ttyS{i}" for i in sorted(self.serial_hubs)) or "none"
        return {
            "ok": False,
            "error": f"no serial line ttyS{line} served by the daemon "
            f"(lines it serves: {served}; give ttysN=daemon)",
        }

    async def _request(self, request: dict[str, object]) -> dict[str, object]:
        op = request.get("op")
        if op == "status":
            return {"ok": True, **self.status()}
        if op == "stop":
            self.request_stop(force=bool(request.get("force")))
            return {"ok": True}
        if op == "cad":
            self._ctrl_alt_del()
            return {"ok": True}
        if op == "exec-signal":
            return self.execs.signal(request.get("session"), request.get("signal"))
        if op == "debug":
            if "enable" in request:
                self._debug_wanted = bool(request["enable"])
                self._set_debug(self._debug_wanted or self._followers > 0)
            return {"ok": True, "enabled": self._debug_wanted}
        return {"ok": False, "error": f"unknown request {op!r}"}

    def status(self) -> dict[str, object]:
        return {
            "name": self.options.name,
            "state": self.state,
            "pid": os.getpid(),
            "engine_pid": self.engine.pid,
            "memory_mb": self.machine.memory_mb,
            # What the guest really holds of the host: RAM is taken on demand.
            "resident_kib": resident_kib(self.engine.pid) if self.engine.pid else None,
            "serials": sorted(self.serial_hubs),  # lines `colinux serial` can attach to
            "debug": self._debug_wanted,
            "collecting": self.debug.enabled,  # on request, or while someone follows
            "started": self.started,
            "version": __version__,
            "agent_version": self.agent_version,
            "kernel": self.engine.kernel,
            "source": self.machine.source,
            "web_url": self._web_url,  # the socket is the user's alone: the token may go
            "cpus": self.machine.cpus,
            "machine": describe_machine(self.machine, self.options.name),
            "exec": self.execs.status(),
        }


def run_daemon(machine: Machine, options: DaemonOptions) -> int:
    """Run one guest to its end; its exit status (see ``Supervisor``)."""
    supervisor = Supervisor(machine, options)
    try:
        return asyncio.run(supervisor.run())
    except ColinuxError as e:
        if options.ready_fd is not None:
            supervisor._notify_ready(f"{e.exit_status} {e}")
        raise
