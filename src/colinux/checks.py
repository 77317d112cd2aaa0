"""The checks made before boot: does a resolved machine fit this host?

``check_machine`` looks at what the machine's paths name (kernel, initrd,
images and their COW files, shared directories, serial devices) and at rules
across devices (aliases, MACs, UML's 16 disk slots); the first problem is a
``UserError`` naming the setting and its file. It lives above ``config`` (which
needs nothing of the rest) because a COW file is checked against its base with
the COW codec::

    machine = resolve_machine(machine, drives=drives, base_dir=config_dir)
    check_machine(machine)        # images, kernel, initrd, shares exist
"""

from __future__ import annotations

import os
import stat

from colinux.config.model import MIN_MEMORY_MB, HostPath, Machine
from colinux.config.paths import source_label
from colinux.errors import UserError
from colinux.formats.cow import check_cow

UML_MAX_BLOCK_DEVICES = 16  # ubd0..ubd15: User-Mode Linux's MAX_DEV


def _stat(path: str, label: str, noun: str) -> os.stat_result:
    try:
        return os.stat(path)
    except FileNotFoundError:
        raise UserError(f"{label}: {noun} '{path}' does not exist") from None
    except OSError as error:
        raise UserError(f"{label}: {noun} '{path}': {error.strerror}") from None


def _check_file(path: HostPath, label: str, noun: str, *, block_ok: bool = False) -> None:
    host = str(path)
    mode = _stat(host, label, noun).st_mode
    if stat.S_ISDIR(mode):
        raise UserError(f"{label}: {noun} '{host}' is a directory")
    if not (stat.S_ISREG(mode) or (block_ok and stat.S_ISBLK(mode))):
        kinds = "a regular file or a block device" if block_ok else "a regular file"
        raise UserError(f"{label}: {noun} '{host}' is not {kinds}")
    if not os.access(host, os.R_OK):
        raise UserError(f"{label}: {noun} '{host}' is not readable")


def _check_cow(cow: HostPath, base: HostPath, label: str) -> None:
    """A COW file that exists must belong to the base as it is now; a new one
    must be creatable (the daemon makes it before boot)."""
    host = str(cow)
    if os.path.exists(host):
        _check_file(cow, label, "COW file")
        if not os.access(host, os.W_OK):
            raise UserError(f"{label}: COW file '{host}' is not writable")
        check_cow(host, str(base), label=label)
        return
    parent = os.path.dirname(host) or "."
    if not os.path.isdir(parent):
        raise UserError(f"{label}: COW file '{host}': directory '{parent}' does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"{label}: COW file '{host}': directory '{parent}' is not writable")


def check_machine(machine: Machine) -> None:
    """Check a resolved machine against the host; the first problem is a UserError.

    Disabled devices are not checked.
    """
    if machine.memory_mb < MIN_MEMORY_MB:
        raise UserError(
            f"{source_label('mem', machine)}: {machine.memory_mb} MB is too little for the guest "
            f"kernel to start (it runs out of memory); give at least mem={MIN_MEMORY_MB}"
        )
    if machine.kernel is not None:
        _check_file(machine.kernel, source_label("kernel", machine), "kernel")
    if machine.initrd is not None:
        _check_file(machine.initrd, source_label("initrd", machine), "initrd")
    enabled = machine.enabled_block_devices()
    if len(enabled) > UML_MAX_BLOCK_DEVICES:
        raise UserError(
            f"{source_label('block devices', machine)}: {len(enabled)} are enabled, but User-Mode "
            f"Linux supports at most {UML_MAX_BLOCK_DEVICES}"
        )
    owners: dict[str, int] = {}
    for device in enabled:
        label = source_label(f"cobd{device.index}", machine)
        if device.alias is not None:
            if device.alias in owners:
                raise UserError(
                    f"{label}: alias {device.alias} is also cobd{owners[device.alias]}'s"
                )
            owners[device.alias] = device.index
        _check_file(device.path, label, "image", block_ok=True)
        if device.cow is not None:
            _check_cow(device.cow, device.path, label)
        elif not device.readonly and not os.access(str(device.path), os.W_OK):
            raise UserError(
                f"{label}: image '{device.path}' is not writable (add ,ro to open it read-only)"
            )
    for share in machine.cofs:
        if not share.enabled:
            continue
        label = source_label(f"cofs{share.index}", machine)
        host = str(share.path)
        if not stat.S_ISDIR(_stat(host, label, "directory").st_mode):
            raise UserError(f"{label}: directory '{host}' is not a directory")
    for line in machine.serials:
        if line.device is not None:
            label = source_label(f"ttys{line.index}", machine)
            host = str(line.device)
            if not stat.S_ISCHR(_stat(host, label, "device").st_mode):
                raise UserError(f"{label}: '{host}' is not a terminal device (a tty or pty)")
    macs: dict[str, int] = {}
    for card in machine.networks:
        if card.mac is not None:
            if card.mac in macs:
                raise UserError(
                    f"{source_label(f'eth{card.index}', machine)}: MAC {card.mac} is also "
                    f"eth{macs[card.mac]}'s"
                )
            macs[card.mac] = card.index
