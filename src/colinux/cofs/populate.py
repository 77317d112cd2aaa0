"""Fill a directory with a bootable root file system for a meta cofs share.

The default guest's tree (busybox, colinux's init and agent) is written into
DIR with its UNIX metadata in meta mode's extended attributes, so a guest can
boot with no disk image at all::

    python -m colinux.cofs.populate DIR
    colinux run cofs0=DIR,meta root=cofs0 rw

Files owned by root, device nodes and symlinks all land as plain files of
the calling user; the guest sees them as they were in the image.
"""

from __future__ import annotations

import argparse
import os
import stat
import sys
from pathlib import Path

from colinux.cofs import meta
from colinux.guest.cpio import decode
from colinux.guest.image import default_initramfs


def encode_dev(major: int, minor: int) -> int:
    """dev_t as FUSE carries it (the kernel's new_encode_dev)."""
    return (minor & 0xFF) | (major << 8) | ((minor & ~0xFF) << 12)


def populate(directory: Path) -> int:
    """Write the default guest's tree into ``directory``; the number of entries written."""
    if not meta.supported(str(directory)):
        raise SystemExit(f"{directory}: this file system keeps no user extended attributes")
    entries = decode(default_initramfs().read_bytes())
    for e in entries:
        path = directory / e.name
        kind = stat.S_IFMT(e.mode)
        if kind == stat.S_IFDIR:
            path.mkdir(parents=True, exist_ok=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.is_symlink() or path.exists():
                path.unlink()
            path.write_bytes(e.data)  # a symlink's data is its target
            if kind == stat.S_IFREG and e.mode & 0o111:
                path.chmod(0o755)  # runnable on the host too (the guest reads the xattr)
        rdev = encode_dev(e.rdev_major, e.rdev_minor)
        meta.write(str(path), meta.Meta(e.mode, e.uid, e.gid, rdev))
    for needed in ("proc", "sys", "dev", "tmp", "run", "mnt", "root"):
        (directory / needed).mkdir(exist_ok=True)
    return len(entries)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m colinux.cofs.populate", description=__doc__)
    parser.add_argument("directory", type=Path)
    ns = parser.parse_args(argv)
    ns.directory.mkdir(parents=True, exist_ok=True)
    count = populate(ns.directory)
    print(f"{ns.directory}: {count} entries; boot it with: "
          f"colinux run cofs0={os.path.abspath(ns.directory)},meta root=cofs0 rw")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
