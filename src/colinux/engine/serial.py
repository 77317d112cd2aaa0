"""Host ends of the guest's serial lines (coLinux's coserial).

A line is either served by the daemon, like the console (a pty pair: the
guest gets the slave, the daemon's hub reads the master), or connected to a
host terminal device (``ttys0=/dev/ttyUSB0,"baud=115200"``) that we open and
set up here, so the engine only inherits a descriptor::

    fd = open_device("/dev/ttyUSB0", "baud=115200 data=8 parity=n stop=1")
"""

from __future__ import annotations

import os
import termios
import tty

from colinux.config.values import serial_mode_settings
from colinux.errors import UserError

_DATA_BITS = {"5": termios.CS5, "6": termios.CS6, "7": termios.CS7, "8": termios.CS8}


def apply_mode(fd: int, mode: str | None) -> None:
    """Raw line discipline (the guest's tty does the cooking) plus MODE's settings."""
    tty.setraw(fd)
    if mode is None:
        return
    settings = serial_mode_settings(mode)
    iflag, oflag, cflag, lflag, ispeed, ospeed, cc = termios.tcgetattr(fd)
    if "baud" in settings:
        speed = getattr(termios, f"B{settings['baud']}", None)
        if speed is None:
            raise UserError(f"baud={settings['baud']} is not supported by this host")
        ispeed = ospeed = speed
    if "data" in settings:
        cflag = (cflag & ~termios.CSIZE) | _DATA_BITS[settings["data"]]
    if "parity" in settings:
        cflag &= ~(termios.PARENB | termios.PARODD)
        if settings["parity"] in ("e", "o"):
            cflag |= termios.PARENB
        if settings["parity"] == "o":
            cflag |= termios.PARODD
    if "stop" in settings:
        cflag = cflag | termios.CSTOPB if settings["stop"] == "2" else cflag & ~termios.CSTOPB
    if "xon" in settings:
        flow = termios.IXON | termios.IXOFF
        iflag = iflag | flow if settings["xon"] == "on" else iflag & ~flow
    termios.tcsetattr(fd, termios.TCSANOW, [iflag, oflag, cflag, lflag, ispeed, ospeed, cc])


def open_device(path: str, mode: str | None, *, label: str) -> int:
    """Open a host terminal for a guest line; a UserError says why it cannot be."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as e:
        raise UserError(f"{label}: cannot open {path}: {e.strerror}") from None
    try:
        if not os.isatty(fd):
            raise UserError(f"{label}: {path} is not a terminal device (a tty or pty)")
        apply_mode(fd, mode)
    except termios.error as e:
        os.close(fd)
        raise UserError(f"{label}: cannot set up {path}: {e.args[-1]}") from None
    except BaseException:
        os.close(fd)
        raise
    return fd
