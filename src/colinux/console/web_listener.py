"""The web console's listening socket, its token and its URL, made before anything starts.

    listener = WebListener.bind(None, 0)      # 127.0.0.1, a free port, a fresh token
    listener.url                              # http://127.0.0.1:PORT/?token=...
    WebListener.from_fd(fd)                   # a socket `colinux start` bound for its daemon
    WebOptions(on=True, port=8080).listener() # --web --port 8080, checked, then bound

Binding first means a taken port or a foreign address is a one-line
``UserError`` before any guest or server starts; and `colinux start` can
bind in the foreground and hand the socket to the daemon it starts (which
makes its own token, so the token never appears on a command line). No
aiohttp here: the daemon and the CLI import this without the web stack.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from dataclasses import dataclass

from colinux.console.web_policy import is_loopback_name, new_token
from colinux.errors import UserError

LOOPBACK = "127.0.0.1"


def check_port(port: int) -> int:
    if not 0 <= port <= 65535:
        raise UserError(f"--port {port}: expected 0..65535 (0: any free port)")
    return port


def check_listen(address: str) -> str:
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        raise UserError(
            f"--listen {address}: expected an IP address of this machine "
            "(127.0.0.1, ::1, 0.0.0.0 for every interface)"
        ) from None


@dataclass(frozen=True)
class WebListener:
    sock: socket.socket
    token: str

    @classmethod
    def bind(cls, listen: str | None, port: int) -> WebListener:
        address = check_listen(listen) if listen is not None else LOOPBACK
        check_port(port)
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((address, port))
            sock.listen(64)
        except OSError as e:
            sock.close()
            where = f"[{address}]:{port}" if family == socket.AF_INET6 else f"{address}:{port}"
            if e.errno == errno.EADDRINUSE:
                raise UserError(f"--port {port}: {where} is already in use") from None
            if e.errno == errno.EADDRNOTAVAIL:
                raise UserError(f"--listen {address}: not an address of this machine") from None
            if e.errno == errno.EACCES:
                raise UserError(f"--port {port}: only root may listen below 1024") from None
            raise UserError(f"web console: cannot listen on {where}: {e.strerror}") from None
        return cls(sock, new_token())

    @classmethod
    def from_fd(cls, fd: int) -> WebListener:
        sock = socket.socket(fileno=fd)
        sock.set_inheritable(False)
        return cls(sock, new_token())

    @property
    def address(self) -> str:
        return str(self.sock.getsockname()[0])

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    @property
    def loopback(self) -> bool:
        """Listening on loopback only: then only loopback Host names are served."""
        return is_loopback_name(self.address)

    @property
    def url(self) -> str:
        address = self.address
        if ipaddress.ip_address(address).is_unspecified:
            address = socket.gethostname()  # every interface: the machine's name reaches it
        elif ":" in address:
            address = f"[{address}]"
        return f"http://{address}:{self.port}/?token={self.token}"

    def close(self) -> None:
        self.sock.close()


@dataclass
class WebOptions:
    """--web, --port, --listen (and --web-fd, from colinux start), as the commands take them."""

    on: bool = False
    port: int = 0
    listen: str | None = None
    fd: int | None = None  # a socket colinux start bound for its daemon

    def set(self, option: str, value: str) -> None:
        if option == "--listen":
            self.listen = value
            return
        try:
            number = int(value)
        except ValueError:
            raise UserError(f"{option} {value}: expected a number") from None
        if option == "--port":
            self.port = number
        else:
            self.on, self.fd = True, number

    def check(self, prog: str) -> None:
        if not self.on and (self.port or self.listen is not None):
            raise UserError(f"{prog}: --port and --listen go with --web")
        if self.on:
            check_port(self.port)
            if self.listen is not None:
                check_listen(self.listen)

    def listener(self) -> WebListener | None:
        """The bound socket (a WebListener), or None without --web: a taken port fails here."""
        if not self.on:
            return None
        from colinux.console.web import Page  # aiohttp: only now

        Page.load()  # the page is installed: checked before anything starts
        if self.fd is not None:
            return WebListener.from_fd(self.fd)
        return WebListener.bind(self.listen, self.port)

    def words(self) -> tuple[str, ...]:
        """These options as daemon words (for a service unit)."""
        if not self.on:
            return ()
        words = ["--web", "--port", str(self.port)]
        if self.listen is not None:
            words += ["--listen", self.listen]
        return tuple(words)
