"""What a running guest is made of, as plain JSON values (``colinux list --json``).

The keys are part of colinux's interface (the README documents them): new
ones may be added, existing ones keep their names and meaning::

    describe_machine(machine, "web")
    # {"cpus": 1, "userspace": "auto", "kernel": None, "shares": [...],
    #  "cards": [...], "disks": [...]}
"""

from __future__ import annotations

from colinux.config.model import Machine
from colinux.net.mac import card_mac


def describe_machine(machine: Machine, name: str) -> dict[str, object]:
    """Shares, cards (with their MACs and forwarded ports) and disks of ``machine``."""
    return {
        "cpus": machine.cpus,
        "userspace": str(machine.userspace),
        "kernel": str(machine.kernel) if machine.kernel is not None else None,
        "shares": [
            {
                "index": share.index,
                "path": str(share.path),
                "type": str(share.type),
                "readonly": share.readonly,
            }
            for share in sorted(machine.cofs, key=lambda s: s.index)
            if share.enabled
        ],
        "cards": [
            {
                "index": card.index,
                "type": card.type.cmdline_name,
                "mac": card_mac(card, name),
                "host": card.name,  # the host-side device (tuntap, pcap-bridge)
                "ports": [
                    {
                        "protocol": r.protocol,
                        "address": r.address,
                        "host_port": r.host_port,
                        "guest_port": r.guest_port,
                        "count": r.count,
                    }
                    for r in card.redirections
                ],
            }
            for card in sorted(machine.networks, key=lambda c: c.index)
        ],
        "disks": [
            {
                "index": disk.index,
                "path": str(disk.path),
                "alias": disk.alias,
                "readonly": disk.readonly,
                "cow": str(disk.cow) if disk.cow is not None else None,
            }
            for disk in machine.enabled_block_devices()
        ],
    }
