"""MAC addresses of guest network cards.

A card without a MAC gets coLinux's prefix ``00:ff`` and four bytes derived
from the guest's name and the card's index: as random-looking as the
original's, but the same every time a named guest starts, so its eth0 is
not renumbered (the trouble that made later coLinux store its MACs).
"""

from __future__ import annotations

import hashlib

from colinux.config.model import NetworkCard

PREFIX = "00:ff"


def derived_mac(guest: str, index: int) -> str:
    digest = hashlib.sha256(f"colinux:{guest}:eth{index}".encode()).digest()
    return ":".join([PREFIX, *(f"{b:02x}" for b in digest[:4])])


def card_mac(card: NetworkCard, guest: str) -> str:
    return card.mac or derived_mac(guest, card.index)
