"""coLinux's slirp addresses, the same behind slirp4netns and passt.

The guest is 10.0.2.15/24, the gateway (and the host's loopback) 10.0.2.2,
DNS 10.0.2.3. ``kernel_ip_arg`` asks the guest kernel to number a card so
itself at boot (``ip=``, the kernel's IP autoconfiguration, built into
colinux's kernel): the default guest then starts no program for its network.
"""

from __future__ import annotations

GUEST_ADDRESS = "10.0.2.15"
GATEWAY = "10.0.2.2"
DNS = "10.0.2.3"
NETMASK = "255.255.255.0"


def kernel_ip_arg(card_index: int) -> str:
    """``ip=`` for a slirp card: address, gateway, mask, card, no autoconfiguration, DNS."""
    return f"ip={GUEST_ADDRESS}::{GATEWAY}:{NETMASK}::eth{card_index}:off:{DNS}"
