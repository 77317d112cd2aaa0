"""slirp through passt: user-mode networking with no TUN device at all.

slirp4netns needs ``/dev/net/tun``, which some hosts keep to root (mode
0600). This path needs nothing but unix sockets, so any user has it, and
the engine keeps the host's network untouched (so slirp cards and host
cards can share one guest):

    guest vecN --bess (unix SOCK_SEQPACKET, one frame a message)--> FrameRelay
    FrameRelay --stream socket (4-byte length + frame, QEMU's)--> passt

UML's vector ``bess`` transport connects to ``slirpN.sock`` in the run
directory; ``FrameRelay`` (two threads) carries frames between that and
a socket pair whose other end is passt's ``--fd``. passt plays coLinux's
slirp: the guest is 10.0.2.15, 10.0.2.2 is the host's loopback, DNS
queries to 10.0.2.3 go to the host's resolver (which DHCP names itself:
passt cannot both offer 10.0.2.3 and forward it), and redirections are
``-t``/``-u`` port specs (on the host's loopback unless they name an
address).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import socket
import threading
from pathlib import Path

from colinux.config.model import NetworkCard, Redirection
from colinux.engine.backend import Backend, network_fields
from colinux.engine.base import Wiring
from colinux.errors import ColinuxError, UserError
from colinux.net.addresses import DNS, GATEWAY, GUEST_ADDRESS, kernel_ip_arg
from colinux.net.mac import card_mac
from colinux.process import spawn, stop, stop_all

log = logging.getLogger(__name__)

# Large frames: each one is a trip through the engine, the relay and passt.
MTU = 32000
FRAME_MAX = 65536 + 64


class FrameRelay:
    """Frames between the engine's bess socket and passt's stream socket.

    The engine connects once per boot; frames from passt while no engine is
    connected are dropped, as a cable would drop them.
    """

    def __init__(self, listener: socket.socket, passt: socket.socket) -> None:
        self.listener = listener
        self.passt = passt
        self.guest: socket.socket | None = None
        self._threads = [
            threading.Thread(target=self._from_guests, daemon=True, name="net-relay-up"),
            threading.Thread(target=self._to_guest, daemon=True, name="net-relay-down"),
        ]
        for thread in self._threads:
            thread.start()

    def _from_guests(self) -> None:
        # One buffer, the length in front of each frame: one send per frame, no copies.
        buffer = memoryview(bytearray(4 + FRAME_MAX))
        while True:
            try:
                guest, _ = self.listener.accept()
            except OSError:
                return  # closed: stopping
            self.guest = guest
            with guest:
                while True:
                    try:
                        size = guest.recv_into(buffer[4:])
                    except OSError:
                        break  # the engine is gone (killed, rebooting)
                    if size == 0:
                        break
                    buffer[:4] = size.to_bytes(4, "big")
                    try:
                        self.passt.sendall(buffer[: 4 + size])
                    except OSError:
                        return  # passt is gone
            self.guest = None

    def _to_guest(self) -> None:
        # Read as much of passt's stream as there is; hand the engine each whole frame.
        buffer = bytearray(1 << 20)
        view = memoryview(buffer)
        have = 0
        while True:
            try:
                got = self.passt.recv_into(view[have:])
            except OSError:
                return
            if got == 0:
                return  # passt is gone
            have += got
            start = 0
            while have - start >= 4:
                size = int.from_bytes(view[start : start + 4], "big")
                if size > FRAME_MAX:
                    return  # not passt's framing: give up rather than misread
                if have - start < 4 + size:
                    break
                guest = self.guest
                if guest is not None:
                    with contextlib.suppress(OSError):
                        guest.send(view[start + 4 : start + 4 + size])
                start += 4 + size
            buffer[: have - start] = buffer[start:have]
            have -= start

    def stop(self) -> None:
        for sock in (self.listener, self.passt, self.guest):
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
        for thread in self._threads:
            thread.join(5)


def arp_request(mac: str, sender: str, target: str) -> bytes:
    """An Ethernet frame: who has ``target``? Tell ``sender`` at ``mac``."""
    hw = bytes.fromhex(mac.replace(":", ""))
    arp = b"\x00\x01\x08\x00\x06\x04\x00\x01" + hw + socket.inet_aton(sender)
    return b"\xff" * 6 + hw + b"\x08\x06" + arp + bytes(6) + socket.inet_aton(target)


def is_arp_reply(frame: bytes) -> bool:
    return frame[12:14] == b"\x08\x06" and frame[20:22] == b"\x00\x02"


def handshake(passt: socket.socket, mac: str, timeout: float) -> bool:
    """Ask passt, as the guest, for the gateway's MAC; whether it answered.

    This is passt's readiness (it has no other), and it teaches passt the
    guest's MAC: until it has seen a frame from the guest, passt sends to the
    broadcast address, where the guest's TCP drops them, so a guest that
    only serves a forwarded port would never be reached.
    """
    frame = arp_request(mac, GUEST_ADDRESS, GATEWAY)
    passt.settimeout(timeout)
    try:
        passt.sendall(len(frame).to_bytes(4, "big") + frame)
        while True:
            reply = _recv_exact(passt, int.from_bytes(_recv_exact(passt, 4), "big"))
            if is_arp_reply(reply):
                return True
    except (OSError, EOFError):  # passt ended, or a timeout
        return False
    finally:
        passt.settimeout(None)


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise EOFError("closed")
        data += chunk
    return data


def _port_specs(redirections: tuple[Redirection, ...]) -> list[str]:
    args = []
    for r in redirections:
        last = r.count - 1
        host = f"{r.host_port}-{r.host_port + last}" if last else str(r.host_port)
        guest = f"{r.guest_port}-{r.guest_port + last}" if last else str(r.guest_port)
        args += ["-t" if r.protocol == "tcp" else "-u", f"{r.address}/{host}:{guest}"]
    return args


def _check_free(redirection: Redirection, index: int) -> None:
    """passt only logs a port it cannot bind; say so before starting it."""
    kind = socket.SOCK_STREAM if redirection.protocol == "tcp" else socket.SOCK_DGRAM
    for port in range(redirection.host_port, redirection.host_port + redirection.count):
        with socket.socket(socket.AF_INET, kind) as probe:
            try:
                probe.bind((redirection.address, port))
            except OSError as error:
                raise UserError(
                    f"eth{index}: cannot forward {redirection.protocol} port "
                    f"{redirection.address}:{port} "
                    f"to the guest: {error.strerror} (is the port in use?)"
                ) from None


class PasstNetwork(Backend):
    """Every slirp card of one guest, each its own passt."""

    def __init__(self, cards: list[NetworkCard], *, guest: str, state_dir: Path) -> None:
        self.cards = cards
        self.guest = guest
        self.state_dir = state_dir
        self._processes: list[asyncio.subprocess.Process] = []
        self._relays: list[FrameRelay] = []

    def _socket_path(self, card: NetworkCard) -> Path:
        return self.state_dir / f"slirp{card.index}.sock"

    def _log_path(self, card: NetworkCard) -> Path:
        return self.state_dir / f"slirp{card.index}.log"

    async def start(self) -> Wiring:
        if shutil.which("passt") is None:
            raise ColinuxError(
                "slirp networking without /dev/net/tun needs passt",
                hint="install the Debian package passt",
            )
        for card in self.cards:
            for redirection in card.redirections:
                _check_free(redirection, card.index)
        args = []
        for card in self.cards:
            await self._start_card(card)
            args.append(
                f"vec{card.index}:transport=bess,dst={self._socket_path(card)},"
                f"mac={card_mac(card, self.guest)},mtu={MTU}"
            )
        cards = ",".join(f"{c.index}:slirp" for c in self.cards)
        return Wiring(
            kernel_args=(*args, f"colinux.net={cards}"),
            default_guest_args=(kernel_ip_arg(self.cards[0].index),),
        )

    async def _start_card(self, card: NetworkCard) -> None:
        path = self._socket_path(card)
        path.unlink(missing_ok=True)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        listener.bind(str(path))
        os.chmod(path, 0o600)  # private to the user, as the run directory
        listener.listen(1)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            process = await spawn(
                ["passt", "--foreground", "--quiet", "--stderr", "--ipv4-only",
                 "--fd", str(theirs.fileno()), "--mtu", str(MTU),
                 "--address", GUEST_ADDRESS, "--netmask", "24", "--gateway", GATEWAY,
                 "--dns-forward", DNS, "--no-dhcp-search",
                 *_port_specs(card.redirections)],
                log=log, pass_fds=(theirs.fileno(),),
                # A file, not a pipe: nobody reads passt's messages while it runs.
                stderr=self._log_path(card),
            )  # fmt: skip
        except BaseException:
            listener.close()
            ours.close()
            raise
        finally:
            theirs.close()
        self._processes.append(process)
        if not await asyncio.to_thread(handshake, ours, card_mac(card, self.guest), 10):
            listener.close()
            ours.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(process.wait()), 2)  # its last words
            await stop(process)
            err = self._log_path(card).read_text(errors="replace")
            self._log_path(card).unlink()
            path.unlink(missing_ok=True)
            noise = ("syslog", "as root")  # passt's chatter, not the reason
            lines = [x for x in err.splitlines() if not any(n in x for n in noise)]
            raise ColinuxError(f"eth{card.index}: passt failed: {'; '.join(lines) or 'no answer'}")
        self._relays.append(FrameRelay(listener, ours))

    def describe(self) -> dict[str, object]:
        return network_fields(self.cards, self._processes)

    async def stop(self) -> None:
        await stop_all(self._processes)
        self._processes.clear()
        for relay in self._relays:
            await asyncio.to_thread(relay.stop)
        self._relays.clear()
        for card in self.cards:
            self._socket_path(card).unlink(missing_ok=True)
            self._log_path(card).unlink(missing_ok=True)


def passt_usable() -> bool:
    """Whether passt can serve here: it copies the host's IPv4 default route."""
    if shutil.which("passt") is None:
        return False
    try:
        with open("/proc/net/route") as routes:
            return any(line.split()[1:2] == ["00000000"] for line in routes)
    except OSError:
        return False
