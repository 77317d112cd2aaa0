"""slirp: user-mode networking that needs no root, as coLinux's slirp did.

The engine runs in a user and network namespace of its own (``unshare``),
where each slirp card is a TAP device whose other end is ``slirp4netns``
(libslirp: the guest is 10.0.2.15, gateway and host 10.0.2.2, DNS 10.0.2.3,
by DHCP). UML reaches the device through its vector ``raw`` transport,
which needs CAP_NET_RAW in that namespace and nowhere else. Port
redirections are slirp4netns ``add_hostfwd`` requests on its API socket,
bound to the host's loopback unless the redirection names an address.

Start-up order: the wrapper makes the namespace and waits on a pipe; once
the engine's pid is known slirp4netns attaches its TAP devices, the ports
are forwarded, and the pipe lets the sandbox start.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import socket
from pathlib import Path

from colinux.config.model import NetworkCard, Redirection
from colinux.engine.backend import Backend, network_fields
from colinux.engine.base import Wiring
from colinux.errors import ColinuxError, UserError
from colinux.net.addresses import GUEST_ADDRESS, kernel_ip_arg
from colinux.net.mac import card_mac
from colinux.process import spawn, stop_all

log = logging.getLogger(__name__)

# A large MTU is the usual slirp speed-up: one frame per 32 KB rather than per
# 1.5 KB, and each frame costs a trip through the engine and libslirp. Over
# about 50000 bytes host->guest TCP stalls (frames dropped on the way into the
# engine), so 32000, with a margin.
MTU = 32000

# Runs as root of the new namespaces: say the namespaces exist (slirp4netns
# must not join the engine's before unshare has made them, or it joins the
# daemon's), wait for the TAP devices, bring them up with the large MTU (no
# addresses: they belong to the guest), then run the sandbox ("$@").
# The pipes are opened by path: sh redirects only descriptors 0-9.
_WRAPPER_SCRIPT = """
echo up >/proc/self/fd/{up} || exit 1
read -r go </proc/self/fd/{fd} || exit 1
for tap in {taps}; do ip link set "$tap" mtu {mtu} up || exit 1; done
exec "$@"
"""


def _tap(card: NetworkCard) -> str:
    return f"tap{card.index}"


TUN = "/dev/net/tun"


def tun_usable() -> bool:
    """Whether this user may open TUN devices, which slirp4netns needs."""
    return os.access(TUN, os.R_OK | os.W_OK)


class SlirpNetwork(Backend):
    """Every slirp card of one guest."""

    def __init__(self, cards: list[NetworkCard], *, guest: str, state_dir: Path) -> None:
        self.cards = cards
        self.guest = guest
        self.state_dir = state_dir
        self._processes: list[asyncio.subprocess.Process] = []
        self._go: int | None = None  # the daemon's end of the wrapper's pipe
        self._wait_fd: int | None = None  # the wrapper's end
        self._exit_fds: list[int] = []
        self._up: tuple[int, int] | None = None  # the wrapper's "namespaces made" pipe

    async def start(self) -> Wiring:
        for tool in ("slirp4netns", "unshare", "ip"):
            if shutil.which(tool) is None:
                raise ColinuxError(
                    f"slirp networking needs {tool}",
                    hint="install the Debian packages slirp4netns, util-linux and iproute2",
                )
        if not tun_usable():
            raise UserError(
                f"eth{self.cards[0].index}=slirp: this user cannot open {TUN} "
                f"(mode {os.stat(TUN).st_mode & 0o777:o} here; Debian makes it 0666)"
                if os.path.exists(TUN)
                else f"eth{self.cards[0].index}=slirp: {TUN} does not exist"
            )
        read_end, self._go = os.pipe()
        os.set_inheritable(read_end, True)
        self._wait_fd = read_end
        self._up = os.pipe()
        os.set_inheritable(self._up[1], True)
        os.set_blocking(self._up[0], False)
        taps = " ".join(_tap(c) for c in self.cards)
        script = _WRAPPER_SCRIPT.format(fd=read_end, up=self._up[1], mtu=MTU, taps=taps)
        args = tuple(
            f"vec{c.index}:transport=raw,ifname={_tap(c)},mac={card_mac(c, self.guest)},mtu={MTU}"
            for c in self.cards
        )
        cards = ",".join(f"{c.index}:slirp" for c in self.cards)
        return Wiring(
            kernel_args=(*args, f"colinux.net={cards}"),
            default_guest_args=(kernel_ip_arg(self.cards[0].index),),
            fds=(read_end, self._up[1]),
            wrapper=("unshare", "--user", "--map-root-user", "--net", "--",
                     "/bin/sh", "-c", script, "colinux-net"),
            share_net=True,  # the wrapper's namespace, where the TAP devices are
            engine_caps=("CAP_NET_RAW",),
        )  # fmt: skip

    async def engine_started(self, pid: int) -> None:
        await self._stop_processes()  # a reboot: the old namespace is gone
        assert self._go is not None and self._up is not None
        if not await _read_line(self._up[0], timeout=30):
            raise ColinuxError("slirp: the engine's network namespace was not made (unshare)")
        for card in self.cards:
            await self._attach(card, pid)
        # One line per boot: a rebooted guest's new wrapper waits on the same pipe.
        os.write(self._go, b"go\n")

    async def _attach(self, card: NetworkCard, pid: int) -> None:
        api = self.state_dir / f"slirp{card.index}.sock"
        api.unlink(missing_ok=True)
        ready_read, ready_write = os.pipe()
        # slirp4netns ends when this pipe closes: with the daemon, even a killed one.
        exit_read, exit_write = os.pipe()
        self._exit_fds.append(exit_write)
        try:
            process = await spawn(
                ["slirp4netns", "--ready-fd", str(ready_write), "--exit-fd", str(exit_read),
                 "--mtu", str(MTU), "--api-socket", str(api), str(pid), _tap(card)],
                log=log, stderr=self._log_path(card), pass_fds=(ready_write, exit_read),
                umask=0o077,  # its API socket is private to the user, as the run directory
            )  # fmt: skip
        finally:
            os.close(ready_write)
            os.close(exit_read)
        self._processes.append(process)
        ready = await asyncio.to_thread(os.read, ready_read, 1)
        os.close(ready_read)
        if ready != b"1":
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(process.wait()), 2)  # its last words
            err = self._log_path(card).read_text(errors="replace").strip()
            raise ColinuxError(f"eth{card.index}: slirp4netns failed: {err}")
        for redirection in card.redirections:
            for offset in range(redirection.count):
                await asyncio.to_thread(_forward, api, redirection, offset, card.index)

    def _log_path(self, card: NetworkCard) -> Path:
        # A file, not a pipe: nobody reads slirp4netns's messages while it runs.
        return self.state_dir / f"slirp{card.index}.log"

    async def _stop_processes(self) -> None:
        # Together: each takes ~30 ms to see its TAP device go with the engine.
        await stop_all(self._processes)
        self._processes.clear()
        for fd in self._exit_fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._exit_fds.clear()

    def describe(self) -> dict[str, object]:
        return network_fields(self.cards, self._processes)

    async def stop(self) -> None:
        await self._stop_processes()
        for fd in (self._go, self._wait_fd, *(self._up or ())):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._go = self._wait_fd = self._up = None
        for card in self.cards:
            (self.state_dir / f"slirp{card.index}.sock").unlink(missing_ok=True)
            self._log_path(card).unlink(missing_ok=True)


async def _read_line(fd: int, *, timeout: float) -> bool:
    """Wait for one line on a non-blocking pipe; whether it came in time."""
    loop = asyncio.get_running_loop()
    readable: asyncio.Future[None] = loop.create_future()

    def ready() -> None:
        if not readable.done():
            readable.set_result(None)

    loop.add_reader(fd, ready)
    try:
        await asyncio.wait_for(readable, timeout)
    except TimeoutError:
        return False
    finally:
        loop.remove_reader(fd)
    return os.read(fd, 64).endswith(b"\n")


def _forward(api: Path, redirection: Redirection, offset: int, index: int) -> None:
    """One host port to one guest port, through slirp4netns's API socket."""
    host_port = redirection.host_port + offset
    request = {
        "execute": "add_hostfwd",
        "arguments": {
            "proto": redirection.protocol,
            "host_addr": redirection.address,
            "host_port": host_port,
            "guest_addr": GUEST_ADDRESS,
            "guest_port": redirection.guest_port + offset,
        },
    }
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(str(api))
        sock.sendall(json.dumps(request).encode())
        sock.shutdown(socket.SHUT_WR)
        reply = json.loads(sock.recv(65536) or b"{}")
    if "error" in reply:
        desc = reply["error"].get("desc", reply["error"])
        raise UserError(
            f"eth{index}: cannot forward {redirection.protocol} port "
            f"{redirection.address}:{host_port} to the guest: {desc} (is the port in use?)"
        )
