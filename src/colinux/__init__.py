"""colinux: Cooperative Linux for Linux hosts.

A real Linux kernel (User-Mode Linux) runs beside the host as an ordinary
unprivileged program, configured with coLinux 0.6.2's XML file or command line.
"""

from colinux.version import __version__

__all__ = ["__version__"]
