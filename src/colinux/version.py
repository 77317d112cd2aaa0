"""Versions of the parts of colinux, and the guest-tools handshake version.

The 0.6.2 "version API" checked that kernel, daemon and tools match. Here the
daemon and the guest tools come from one package, so they share
``__version__``; the guest tools announce it when they start and the daemon
refuses a guest whose tools carry another one.
"""

__version__ = "0.1.0"
