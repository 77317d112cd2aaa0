"""Hypothesis strategies for machines and for each machine setting, shared by the
config property tests.

``machines()`` draws whole machines; ``SETTING_VALUES`` draws the value of one
row of the settings table (``colinux.config.settings.SETTINGS``), keyed by the
``Machine`` field it sets, so a test can walk the table row by row.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from colinux.config import values
from colinux.config.cmdline import setting_key
from colinux.config.model import (
    MAX_CPUS,
    MAX_INDEX,
    MAX_SERIAL_INDEX,
    BlockDevice,
    CofsShare,
    CofsType,
    HostPath,
    Machine,
    NetworkCard,
    NetworkType,
    Redirection,
    SerialLine,
    Userspace,
)

# Kept small so the whole config suite stays well under ten seconds.
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Text XML can hold (no control characters but tab, newline, return; no
# surrogates or non-characters), with the characters that stress quoting
# drawn often.
_chars = st.one_of(
    st.characters(blacklist_categories=("Cs", "Cc", "Cn")),
    st.sampled_from(list(" ,\"'\\:/#=@\t\n\ré日本")),
)
raw_paths = st.builds(HostPath, st.text(_chars, min_size=1, max_size=16))
names = st.none() | st.text(_chars, min_size=1, max_size=12)


@st.composite
def macs(draw: st.DrawFn) -> str:
    octets = draw(st.lists(st.integers(0, 255), min_size=6, max_size=6))
    octets[0] &= 0xFE  # unicast
    return ":".join(f"{o:02x}" for o in octets)


@st.composite
def redirections(draw: st.DrawFn) -> Redirection:
    count = draw(st.integers(1, 20))
    return Redirection(
        draw(st.sampled_from(["tcp", "udp"])),
        draw(st.integers(1, 65536 - count)),
        draw(st.integers(1, 65536 - count)),
        count,
        draw(st.sampled_from(["127.0.0.1", "0.0.0.0", "192.0.2.7"])),
    )


@st.composite
def network_cards(draw: st.DrawFn, index: int) -> NetworkCard:
    kind = draw(st.sampled_from(list(NetworkType)))
    mac = draw(st.none() | macs())
    if kind == NetworkType.SLIRP:
        redirs = tuple(draw(st.lists(redirections(), max_size=3)))
        return NetworkCard(index, kind, mac=mac, redirections=redirs)
    promisc = draw(st.booleans()) if kind == NetworkType.BRIDGED else True
    return NetworkCard(index, kind, name=draw(names), mac=mac, promisc=promisc)


boot_words = st.text(_chars, min_size=1, max_size=12).filter(
    lambda w: not any(c.isspace() for c in w) and setting_key(w) is None and not w.startswith("@")
)
aliases_ = st.builds(
    lambda prefix, letter, number: f"{prefix}{letter}{number}",
    st.sampled_from(["hd", "sd"]),
    st.sampled_from("abcdz"),
    st.sampled_from(["", "1", "2", "15"]),
)
indexes = st.lists(st.integers(0, MAX_INDEX), unique=True, max_size=5).map(sorted)
serial_modes = st.lists(
    st.sampled_from(list(values.SERIAL_MODE_KEYS)), unique=True, min_size=1
).flatmap(
    lambda keys: st.tuples(*(st.sampled_from(values.SERIAL_MODE_KEYS[k]) for k in keys)).map(
        lambda chosen: values.parse_serial_mode(
            " ".join(f"{k}={v}" for k, v in zip(keys, chosen, strict=True))
        )
    )
)


@st.composite
def serial_lines(draw: st.DrawFn, index: int) -> SerialLine:
    device = draw(st.none() | raw_paths | st.just(HostPath("daemon")))
    mode = draw(st.none() | serial_modes) if device is not None else None
    return SerialLine(index, device, mode)


@st.composite
def block_devices(draw: st.DrawFn, *, all_enabled: bool = False) -> tuple[BlockDevice, ...]:
    enabled = st.just(True) if all_enabled else st.booleans()
    block_indexes = draw(indexes)
    aliases = draw(
        st.lists(
            aliases_,
            unique=True,
            min_size=len(block_indexes),
            max_size=len(block_indexes),
        )
    )
    disks = tuple(
        BlockDevice(
            i,
            draw(raw_paths),
            alias if draw(st.booleans()) else None,
            draw(enabled),
            # ro and cow= do not go together
            *draw(st.sampled_from([(False, None), (True, None), (False, "cow")])),
        )
        for i, alias in zip(block_indexes, aliases, strict=True)
    )
    return tuple(replace(d, cow=draw(raw_paths)) if d.cow is not None else d for d in disks)


@st.composite
def cofs_shares(draw: st.DrawFn, *, all_enabled: bool = False) -> tuple[CofsShare, ...]:
    enabled = st.just(True) if all_enabled else st.booleans()
    return tuple(
        CofsShare(
            i,
            draw(raw_paths),
            draw(st.sampled_from(list(CofsType))),
            draw(st.booleans()),
            draw(enabled),
        )
        for i in draw(indexes)
    )


@st.composite
def network_lists(draw: st.DrawFn) -> tuple[NetworkCard, ...]:
    return tuple(draw(network_cards(i)) for i in draw(indexes))


@st.composite
def serial_lists(draw: st.DrawFn) -> tuple[SerialLine, ...]:
    serial_indexes = draw(st.lists(st.integers(0, MAX_SERIAL_INDEX), unique=True).map(sorted))
    return tuple(draw(serial_lines(i)) for i in serial_indexes)


# One strategy per row of the settings table, keyed by the Machine field it sets;
# all_enabled: only devices a command line can hold.
SETTING_VALUES: dict[str, Callable[[bool], st.SearchStrategy[Any]]] = {
    "kernel": lambda _: st.none() | raw_paths,
    "memory_mb": lambda _: st.integers(1, values.MAX_MEMORY_MB),
    "cpus": lambda _: st.integers(1, MAX_CPUS),
    "userspace": lambda _: st.sampled_from(list(Userspace)),
    "initrd": lambda _: st.none() | raw_paths,
    "bootparams": lambda _: st.lists(boot_words, max_size=4).map(tuple),
    "block_devices": lambda all_enabled: block_devices(all_enabled=all_enabled),
    "cofs": lambda all_enabled: cofs_shares(all_enabled=all_enabled),
    "networks": lambda _: network_lists(),
    "serials": lambda _: serial_lists(),
}


@st.composite
def machines(draw: st.DrawFn, *, all_enabled: bool = False) -> Machine:
    userspace = draw(SETTING_VALUES["userspace"](all_enabled))
    drawn = {
        field: draw(strategy(all_enabled))
        for field, strategy in SETTING_VALUES.items()
        if field not in ("cpus", "userspace")
    }
    return Machine(
        **drawn,
        # ptrace runs one CPU; the readers refuse more
        cpus=1 if userspace == Userspace.PTRACE else draw(SETTING_VALUES["cpus"](all_enabled)),
        userspace=userspace,
    )
