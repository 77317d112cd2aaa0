"""Which device backends a machine gets, in start order.

The backends themselves (``engine/backend.py`` is their interface) live with
what they serve: ``image/locks.py``, ``cofs/backend.py``, ``net/*.py``::

    backends = backends_for(machine, name=..., state_dir=...)
    wiring = sum((await b.start() for b in backends), Wiring())
"""

from __future__ import annotations

import os
from pathlib import Path

from colinux.config.model import Machine, NetworkType
from colinux.engine.backend import Backend
from colinux.errors import UserError


def backends_for(machine: Machine, *, name: str, state_dir: Path) -> list[Backend]:
    """The backends the machine's devices need, in start order."""
    # Imported once a machine is served: every colinux verb imports the daemon,
    # and the cofs server alone costs 40 ms of `colinux list`.
    from colinux.cofs.backend import CofsBackend
    from colinux.image.locks import DiskLocks
    from colinux.net.passt import PasstNetwork
    from colinux.net.slirp import SlirpNetwork
    from colinux.net.tap import HostNetwork

    # Disks first: a locked image stops the boot before anything else starts.
    backends: list[Backend] = [DiskLocks(machine)] if machine.enabled_block_devices() else []
    backends += [CofsBackend(s, state_dir=state_dir) for s in machine.cofs if s.enabled]

    slirp_cards = [c for c in machine.networks if c.type == NetworkType.SLIRP]
    host_cards = [c for c in machine.networks if c.type != NetworkType.SLIRP]
    if slirp_cards:
        if slirp_stack(with_host_cards=bool(host_cards)) == "passt":
            backends.append(PasstNetwork(slirp_cards, guest=name, state_dir=state_dir))
        else:
            backends.append(SlirpNetwork(slirp_cards, guest=name, state_dir=state_dir))
    if host_cards:
        backends.append(HostNetwork(host_cards, guest=name))
    return backends


SLIRP_STACKS = ("slirp4netns", "passt")


def slirp_stack(*, with_host_cards: bool) -> str:
    """Which user-mode stack serves slirp cards: ``COLINUX_SLIRP`` if set, else
    slirp4netns where this user may open /dev/net/tun and the engine may have a
    network namespace of its own (no tuntap or pcap-bridge card), else passt."""
    from colinux.net.slirp import tun_usable

    chosen = os.environ.get("COLINUX_SLIRP", "")
    if chosen and chosen not in SLIRP_STACKS:
        raise UserError(f"COLINUX_SLIRP={chosen!r}: must be one of {', '.join(SLIRP_STACKS)}")
    if chosen == "slirp4netns" and with_host_cards:
        raise UserError(
            "COLINUX_SLIRP=slirp4netns runs the engine in a network namespace of its own, "
            "and tuntap and pcap-bridge cards need the host's: use passt"
        )
    if chosen:
        return chosen
    return "slirp4netns" if tun_usable() and not with_host_cards else "passt"
