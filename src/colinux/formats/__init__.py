"""File formats as codecs, below everything that reads or writes them: UML's
copy-on-write disks (``cow``, used by images and the engine) and newc cpio
archives (``cpio``, used by the default guest's initramfs and cofs's populate).
They import nothing of colinux but its errors."""
