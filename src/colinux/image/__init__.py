"""Disk images: Debian root and swap images (``build``), UML's copy-on-write
format (``cow``) and the host locks that keep two guests off one writable
image (``locks``). ``commands`` is ``colinux image``."""
