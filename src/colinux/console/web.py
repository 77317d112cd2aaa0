"""The web console: a guest's console, or a serial line, as a terminal in the browser.

    listener = WebListener.bind(None, 0)          # before anything starts
    serve_web_console("web", listener)            # colinux console web --web: until Ctrl-C
    async with daemon_web_console(listener, ...)  # colinux start web --web: the daemon's own

One aiohttp server per console. ``GET /`` is the page (``webpage/``: our
script and xterm.js from npm, served from here, no other origin); ``/ws``
is its WebSocket. Each WebSocket is a client of the guest's daemon on its
control socket, exactly as ``colinux console`` is (``attach``, console bytes,
``resize``), so pages and text consoles share one console and its replayed
history, and a reboot changes nothing for them.

Page <-> server: binary messages are console bytes both ways; the page's
only text message is a resize (``web_policy.parse_page_message``); the
server's text messages are events: ``attached`` (the replayed history
follows), ``live`` (it has ended), ``stopped`` (the guest stopped),
``closed`` (this web console ended, the guest runs on), ``error``.

Every request needs the token (``?token=``: 401 without, 403 wrong), a
loopback listener serves only loopback Host names, the WebSocket only its
own page's Origin; aiohttp's access log is off and its other loggers have
the token blanked, so the token is never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import logging
import os
import secrets
import signal
import string
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from aiohttp import WSMsgType, web

from colinux.console.web_listener import WebListener
from colinux.console.web_policy import (
    host_allowed,
    origin_allowed,
    parse_page_message,
    security_headers,
    token_status,
)
from colinux.control import protocol
from colinux.errors import ColinuxError

log = logging.getLogger("colinux.console.web")

PAGE_DIR = Path(__file__).parent / "webpage"
# What the page loads, by the name it asks for: our files and npm's.
ASSETS = {
    "console.js": ("console.js", "text/javascript"),
    "console.css": ("console.css", "text/css"),
    "icon.svg": ("icon.svg", "image/svg+xml"),
    "xterm.js": ("node_modules/@xterm/xterm/lib/xterm.js", "text/javascript"),
    "xterm.css": ("node_modules/@xterm/xterm/css/xterm.css", "text/css"),
    "addon-fit.js": ("node_modules/@xterm/addon-fit/lib/addon-fit.js", "text/javascript"),
}
AIOHTTP_LOGGERS = ("access", "client", "internal", "server", "web", "websocket")


@dataclass(frozen=True)
class Page:
    """The page's files, read once: a missing one is an error before anything listens."""

    template: string.Template
    assets: dict[str, tuple[bytes, str]]

    @classmethod
    def load(cls, directory: Path = PAGE_DIR) -> Page:
        assets = {}
        for name, (path, content_type) in ASSETS.items():
            try:
                assets[name] = ((directory / path).read_bytes(), content_type)
            except OSError:
                raise ColinuxError(
                    f"web console: {directory / path} is missing: ./setup.sh installs "
                    "xterm.js with npm (npm ci in src/colinux/console/webpage)"
                ) from None
        template = string.Template((directory / "index.html").read_text())
        return cls(template, assets)


@dataclass(frozen=True)
class ConsoleTarget:
    """Which console a web console shows: a guest's, through its daemon's control socket."""

    name: str
    control_socket: Path
    line: int | None = None  # serial line ttySN instead of the console

    @property
    def what(self) -> str:
        return "console" if self.line is None else f"ttyS{self.line}"


class _BlankToken(logging.Filter):
    """Blanks the token out of what aiohttp logs (an error quoting a request line, say)."""

    def __init__(self, token: str) -> None:
        super().__init__()
        self.token = token

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if self.token in message:
            record.msg, record.args = message.replace(self.token, "<token>"), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = record.exc_text.replace(self.token, "<token>")
        return True


class WebConsole:
    """The aiohttp server of one web console, and its pages' WebSockets."""

    def __init__(self, target: ConsoleTarget, listener: WebListener, page: Page) -> None:
        self.target = target
        self.listener = listener
        self.page = page
        self._sockets: set[web.WebSocketResponse] = set()
        self._runner: web.AppRunner | None = None
        self._filter = _BlankToken(listener.token)

    async def start(self) -> None:
        for name in AIOHTTP_LOGGERS:
            logging.getLogger(f"aiohttp.{name}").addFilter(self._filter)
        app = web.Application(middlewares=[self._guard])
        app.on_response_prepare.append(self._add_headers)
        app.router.add_get("/", self._index)
        app.router.add_get("/ws", self._websocket)
        for asset in self.page.assets:
            app.router.add_get(f"/{asset}", self._asset)
        # No access log: it would write every URL, token and all.
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
        await self._runner.setup()
        await web.SockSite(self._runner, self.listener.sock).start()
        log.info(
            "web console listening",
            extra={"fields": {"address": self.listener.address, "port": self.listener.port}},
        )

    async def close(self, event: str) -> None:
        """Tell every page ``event`` (stopped, closed), then stop serving."""
        for ws in list(self._sockets):
            with contextlib.suppress(ConnectionError, RuntimeError):
                await ws.send_json({"event": event})
            with contextlib.suppress(ConnectionError, RuntimeError):
                await ws.close(code=1001)
        if self._runner is not None:
            await self._runner.cleanup()
        for name in AIOHTTP_LOGGERS:
            logging.getLogger(f"aiohttp.{name}").removeFilter(self._filter)

    # -- HTTP --------------------------------------------------------------------

    @web.middleware
    async def _guard(self, request: web.Request, handler):  # type: ignore[no-untyped-def]
        if not host_allowed(request.headers.get("Host"), loopback_only=self.listener.loopback):
            return web.Response(status=403, text="colinux web console: unexpected Host\n")
        status = token_status(request.query.get("token"), self.listener.token)
        if status == 401:
            return web.Response(
                status=401,
                text="colinux web console: open the URL colinux printed, with its token\n",
                headers={"WWW-Authenticate": 'Token realm="colinux"'},
            )
        if status == 403:
            return web.Response(status=403, text="colinux web console: wrong token\n")
        return await handler(request)

    async def _add_headers(self, request: web.Request, response: web.StreamResponse) -> None:
        nonce = request.get("style_nonce") or secrets.token_urlsafe(16)
        for header, value in security_headers(nonce).items():
            response.headers.setdefault(header, value)
        response.headers["Server"] = "colinux"  # not which aiohttp and Python answer

    async def _index(self, request: web.Request) -> web.Response:
        nonce = secrets.token_urlsafe(16)
        request["style_nonce"] = nonce
        target = self.target
        title = f"{target.name} {target.what}" if target.line is not None else target.name
        body = self.page.template.substitute(
            token=html.escape(self.listener.token),
            nonce=nonce,
            name=html.escape(target.name),
            what=target.what,
            title=html.escape(f"{title} - colinux"),
        )
        return web.Response(text=body, content_type="text/html", charset="utf-8")

    async def _asset(self, request: web.Request) -> web.Response:
        data, content_type = self.page.assets[request.path.lstrip("/")]
        return web.Response(body=data, content_type=content_type)

    # -- the WebSocket -------------------------------------------------------------

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        if not origin_allowed(request.headers.get("Origin"), request.headers.get("Host")):
            return web.Response(
                status=403, text="colinux web console: the WebSocket is for its own page only\n"
            )
        ws = web.WebSocketResponse(heartbeat=30.0, max_msg_size=protocol.MAX_PAYLOAD)
        await ws.prepare(request)
        self._sockets.add(ws)
        try:
            await self._bridge(ws)
        finally:
            self._sockets.discard(ws)
            await ws.close()
        return ws

    async def _bridge(self, ws: web.WebSocketResponse) -> None:
        """One page as a console client of the daemon, until either side goes."""
        try:
            reader, writer = await asyncio.open_unix_connection(str(self.target.control_socket))
        except OSError:
            await ws.send_json({"event": "stopped"})
            return
        attach: dict[str, object] = {"op": "attach", "replay": True}
        if self.target.line is not None:
            attach["line"] = self.target.line
        writer.write(protocol.encode_json(attach))
        tasks = {
            asyncio.create_task(self._from_guest(reader, ws)),
            asyncio.create_task(self._from_page(ws, writer)),
        }
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                with contextlib.suppress(ConnectionError, protocol.ProtocolError):
                    task.result()
        finally:
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            writer.close()

    async def _from_guest(self, reader: asyncio.StreamReader, ws: web.WebSocketResponse) -> None:
        decoder = protocol.FrameDecoder()
        history = 0  # bytes of replayed history still to come after the attach reply
        while data := await reader.read(65536):
            for kind, payload in decoder.feed(data):
                if kind == protocol.DATA:
                    await ws.send_bytes(payload)
                    if history:
                        history = max(0, history - len(payload))
                        if not history:
                            await ws.send_json({"event": "live"})
                    continue
                reply = protocol.decode_json(payload)
                if not reply.get("ok"):
                    await ws.send_json({"event": "error", "message": str(reply.get("error"))})
                    return
                replay = reply.get("replay")
                history = replay if isinstance(replay, int) and replay > 0 else 0
                event = {"event": "attached", "name": self.target.name, "what": self.target.what}
                await ws.send_json(event)
                if not history:
                    await ws.send_json({"event": "live"})
        await ws.send_json({"event": "stopped"})  # the daemon closed: the guest has stopped

    async def _from_page(self, ws: web.WebSocketResponse, writer: asyncio.StreamWriter) -> None:
        async for message in ws:
            if message.type == WSMsgType.BINARY:
                writer.write(protocol.encode_data(message.data))
                await writer.drain()
            elif message.type == WSMsgType.TEXT:
                try:
                    rows, cols = parse_page_message(message.data)
                except ValueError as e:
                    log.debug("web console: a page sent a bad message: %s", e)
                    continue
                writer.write(protocol.encode_json({"op": "resize", "rows": rows, "cols": cols}))


# -- colinux console NAME --web ------------------------------------------------------


def serve_web_console(target: ConsoleTarget, listener: WebListener, page: Page) -> int:
    """Serve ``target`` on ``listener`` until Ctrl-C (or SIGTERM) or the guest stops."""
    print(listener.url, flush=True)  # the first line: the URL, token and all
    if not listener.loopback:
        print(
            f"colinux: warning: the web console listens on {listener.address} in plain HTTP: "
            "its token crosses the network unencrypted",
            file=sys.stderr,
        )
    print(
        f"[serving {target.name}'s {target.what} at that address; Ctrl-C ends it]",
        file=sys.stderr,
        flush=True,
    )
    return asyncio.run(_serve_until_done(target, listener, page))


async def _serve_until_done(target: ConsoleTarget, listener: WebListener, page: Page) -> int:
    loop = asyncio.get_running_loop()
    interrupted = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, interrupted.set)
    console = WebConsole(target, listener, page)
    # A client that only listens: the daemon closes it when the guest stops.
    try:
        watch_reader, watch_writer = await asyncio.open_unix_connection(str(target.control_socket))
    except OSError as e:
        raise ColinuxError(f"guest {target.name}: cannot reach its daemon: {e}") from e
    await console.start()
    guest_gone = asyncio.create_task(watch_reader.read())
    ended = asyncio.create_task(interrupted.wait())
    try:
        await asyncio.wait({guest_gone, ended}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped = guest_gone.done()
        guest_gone.cancel()
        ended.cancel()
        watch_writer.close()
        await console.close("stopped" if stopped else "closed")
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
    if stopped:
        print(f"[guest {target.name} has stopped]", file=sys.stderr)
    else:
        print(f"[web console closed; {target.name} keeps running]", file=sys.stderr)
    return 0


# -- the daemon's own: colinux start NAME --web ----------------------------------------


@contextlib.asynccontextmanager
async def daemon_web_console(
    listener: WebListener, target: ConsoleTarget, url_file: Path
) -> AsyncIterator[WebConsole]:
    """The web console a daemon keeps up for its guest; its URL in ``url_file`` (0600)."""
    console = WebConsole(target, listener, Page.load())
    await console.start()
    fd = os.open(url_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(listener.url + "\n")
    try:
        yield console
    finally:
        url_file.unlink(missing_ok=True)
        await console.close("stopped")
