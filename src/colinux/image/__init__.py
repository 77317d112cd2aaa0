"""Disk images: Debian root and swap images (``build``) and the host locks
that keep two guests off one writable image (``locks``); UML's copy-on-write
format is ``colinux.formats.cow``. ``commands`` is ``colinux image``."""
