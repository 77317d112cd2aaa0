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
from colinux.formats.cpio import decode
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


def populate_from_tar(directory: Path, archive: Path) -> int:
    """Write a root tree from a tar (numeric owners, as ``colinux image root --cofs``
    makes one) into ``directory``; the number of entries written."""
    import tarfile

    if not meta.supported(str(directory)):
        raise SystemExit(f"{directory}: this file system keeps no user extended attributes")
    count = 0
    with tarfile.open(archive) as tar:
        for member in tar:
            name = os.path.normpath(member.name)
            if name.startswith(("..", "/")):
                continue  # never outside the directory
            path = directory / name if name != "." else directory
            mode = member.mode & 0o7777
            rdev = 0
            if member.isdir():
                path.mkdir(parents=True, exist_ok=True)
                mode |= stat.S_IFDIR
            elif member.islnk():
                target = directory / os.path.normpath(member.linkname)
                path.unlink(missing_ok=True)
                os.link(target, path)  # the attribute is the inode's: shared, as it should be
                count += 1
                continue
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.unlink(missing_ok=True)
                if member.issym():
                    path.write_text(member.linkname)
                    mode |= stat.S_IFLNK
                elif member.isfile():
                    source = tar.extractfile(member)
                    assert source is not None
                    with open(path, "wb") as out:
                        while block := source.read(1 << 20):
                            out.write(block)
                    mode |= stat.S_IFREG
                    if mode & 0o111:
                        path.chmod(0o755)
                else:  # device nodes and FIFOs: empty host files
                    path.write_bytes(b"")
                    kind = {tarfile.CHRTYPE: stat.S_IFCHR, tarfile.BLKTYPE: stat.S_IFBLK}
                    mode |= kind.get(member.type, stat.S_IFIFO)
                    rdev = encode_dev(member.devmajor, member.devminor)
            meta.write(str(path), meta.Meta(mode, member.uid, member.gid, rdev))
            count += 1
    return count


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
