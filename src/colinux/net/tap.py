"""tuntap and pcap-bridge: guest cards on the host's own network (root only).

``ethN=tuntap,"NAME"`` attaches the card to the host TAP device NAME, made
(and removed at the end) when it does not exist. ``ethN=pcap-bridge,"IF"``
puts the card on host interface IF's layer-2 segment, as coLinux's
WinPcap bridge did. Both use UML's vector transports (``tap``, ``raw``) in
the host's network namespace, which need CAP_NET_RAW and CAP_NET_ADMIN
there: on a Linux host that means root. slirp is the choice without it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re

from colinux.config.model import NetworkCard, NetworkType
from colinux.engine.backend import Backend, network_fields
from colinux.engine.base import Wiring
from colinux.errors import ColinuxError, UserError
from colinux.net.mac import card_mac
from colinux.process import run_async, spawn

log = logging.getLogger(__name__)

IFNAME = re.compile(r"[A-Za-z0-9_.:-]{1,15}")
TUN = "/dev/net/tun"
# UML turns on TSO/GSO with vnet headers on both transports, so the host hands
# it TCP segments of up to 64 KB (a TAP device's TSO, a veth's GRO). Its receive
# buffers are MTU-sized unless gro=1, and a 64 KB segment cut to 1.5 KB stalled
# every bulk host->guest transfer. gro=1 makes them 64 KB.
RX_64K = "gro=1"
# Measured with bench/net.py: 128 frames a batch (the default is 64) gave the
# tap transport about a quarter more host->guest; the raw one gained nothing.
TUNING = {"tap": ",depth=128", "raw": ""}


# Reads TAP names until the daemon's end of the pipe closes, then deletes them;
# a TAP still attached to a dying engine is busy for a moment.
_REAPER = """
names=$(cat)
for name in $names; do
    for try in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do
        ip tuntap del dev "$name" mode tap 2>/dev/null && break
        [ -e "/sys/class/net/$name" ] || break
        sleep 0.25
    done
done
"""


def _name(card: NetworkCard) -> str:
    if card.name:
        return card.name
    return f"cotap{card.index}" if card.type == NetworkType.TAP else "eth0"


async def _ip(*args: str) -> tuple[int, str]:
    return await run_async(["ip", *args], log=log)


class HostNetwork(Backend):
    """The tuntap and pcap-bridge cards of one guest."""

    def __init__(self, cards: list[NetworkCard], *, guest: str) -> None:
        self.cards = cards
        self.guest = guest
        self._reaper: asyncio.subprocess.Process | None = None
        self._reaper_pipe: int | None = None

    async def start(self) -> Wiring:
        for card in self.cards:
            name = _name(card)
            what = f"eth{card.index}={card.type.cmdline_name},{name!r}"
            if not IFNAME.fullmatch(name):
                raise UserError(f"{what}: not a Linux interface name (1-15 letters, digits, _.:-)")
        if os.geteuid() != 0:
            raise UserError(
                f"eth{self.cards[0].index}={self.cards[0].type.cmdline_name}: the host's network "
                "needs root (CAP_NET_ADMIN and CAP_NET_RAW); use eth0=slirp without it"
            )
        args: list[str] = []
        for card in self.cards:
            name = _name(card)
            exists = os.path.exists(f"/sys/class/net/{name}")
            if card.type == NetworkType.TAP:
                if not exists:
                    status, err = await _ip("tuntap", "add", "dev", name, "mode", "tap")
                    if status:
                        raise ColinuxError(
                            f"eth{card.index}: cannot create TAP device {name}: {err}"
                        )
                    await self._reap_at_exit(name)
                transport = "tap"
            else:
                if not exists:
                    raise UserError(f"eth{card.index}=pcap-bridge: no host interface {name!r}")
                transport = "raw"
            status, err = await _ip("link", "set", "dev", name, "up")
            if status:
                raise ColinuxError(f"eth{card.index}: cannot bring {name} up: {err}")
            args.append(
                f"vec{card.index}:transport={transport},ifname={name},"
                f"mac={card_mac(card, self.guest)},{RX_64K}{TUNING[transport]}"
            )
        kinds = ",".join(f"{c.index}:{c.type.value}" for c in self.cards)
        return Wiring(
            kernel_args=(*args, f"colinux.net={kinds}"),
            share_net=True,
            engine_caps=("CAP_NET_RAW", "CAP_NET_ADMIN"),
            devices=(TUN,),
        )

    def describe(self) -> dict[str, object]:
        return network_fields(self.cards)

    async def stop(self) -> None:
        if self._reaper_pipe is not None:
            os.close(self._reaper_pipe)
            self._reaper_pipe = None
        if self._reaper is not None:
            await self._reaper.wait()
            self._reaper = None

    async def _reap_at_exit(self, name: str) -> None:
        """Remove TAP ``name`` when this daemon ends, even when it is SIGKILLed.

        A process of its own waits for end of file on a pipe whose only writer
        is the daemon, then deletes the device, retrying while the dying
        engine still holds it. A normal stop takes the same path.
        """
        if self._reaper_pipe is None:
            read_end, self._reaper_pipe = os.pipe()
            try:
                self._reaper = await spawn(
                    ["sh", "-c", _REAPER, "colinux-tap-reaper"],
                    log=log,
                    stdin=read_end,
                    start_new_session=True,
                )
            finally:
                os.close(read_end)
        # The names reach the reaper over the pipe itself, one per line.
        os.write(self._reaper_pipe, f"{name}\n".encode())
