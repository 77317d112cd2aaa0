"""``colinux image``: make root and swap images, commit COW files::

colinux image root root.img --size 2G [--suite bookworm] [--packages a,b]
                   [--hostname H] [--root-password PW] [--ssh-key KEY.pub]
colinux image swap swap.img --size 256M
colinux image commit guest.cow
colinux image initrd initrd.gz      # the default guest, as an initrd for disk roots
colinux image kernel vmlinux        # colinux's kernel, for the seed's kernel=vmlinux
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from colinux.errors import UserError


def add_image_parser(sub: argparse._SubParsersAction, parser_class: type) -> None:  # type: ignore[type-arg]
    image = sub.add_parser("image", help="make root and swap images; commit COW files")
    actions = image.add_subparsers(
        dest="image_command", metavar="ACTION", parser_class=parser_class
    )
    root = actions.add_parser("root", help="build a Debian root image (ext4) with mmdebstrap")
    root.add_argument("path")
    root.add_argument("--size", help="image size: 2G, 1500M... (not with --cofs)")
    root.add_argument(
        "--cofs", action="store_true", help="a meta cofs directory for root=cofs0, not an image"
    )
    root.add_argument("--suite", default="bookworm", help="Debian suite (default bookworm)")
    root.add_argument("--packages", default="", help="more Debian packages, comma-separated")
    root.add_argument("--hostname", default="colinux", help="the guest's host name")
    root.add_argument("--mirror", default=None, help="Debian mirror URL")
    root.add_argument(
        "--root-password", help="root's password (default: none, or locked with --ssh-key)"
    )
    root.add_argument("--ssh-key", metavar="FILE", help="public key for root's SSH logins")
    swap = actions.add_parser("swap", help="make a swap image (mkswap)")
    swap.add_argument("path")
    swap.add_argument("--size", required=True, help="image size: 256M, 1G...")
    commit = actions.add_parser("commit", help="merge a COW file into its base image")
    commit.add_argument("cow")
    initrd = actions.add_parser(
        "initrd", help="write the default guest as an initrd (gzip), e.g. the seed's initrd.gz"
    )
    initrd.add_argument("path")
    kernel = actions.add_parser(
        "kernel", help="write colinux's kernel (UML) to a file, e.g. the seed's vmlinux"
    )
    kernel.add_argument("path")


def image_command(ns: argparse.Namespace) -> int:
    from colinux.image.build import (
        DEFAULT_MIRROR,
        RootImageSpec,
        build_root_image,
        make_swap_image,
        parse_size,
    )

    if ns.image_command == "root":
        key = None
        if ns.ssh_key is not None:
            try:
                key = Path(ns.ssh_key).read_text()
            except OSError as error:
                raise UserError(f"--ssh-key {ns.ssh_key}: {error.strerror}") from None
            if not key.startswith(("ssh-", "ecdsa-", "sk-")):
                raise UserError(f"--ssh-key {ns.ssh_key}: expected an OpenSSH public key")
        if ns.size is None and not ns.cofs:
            raise UserError("colinux image root: --size is needed (or --cofs for a directory)")
        spec = RootImageSpec(
            Path(ns.path),
            parse_size(ns.size) if ns.size is not None else 0,
            cofs=ns.cofs,
            suite=ns.suite,
            packages=tuple(p.strip() for p in ns.packages.split(",") if p.strip()),
            hostname=ns.hostname,
            root_password=ns.root_password,
            ssh_key=key,
            mirror=ns.mirror or DEFAULT_MIRROR,
        )
        from colinux.image.progress import BuildProgress

        progress = BuildProgress(sys.stdout)
        try:
            build_root_image(spec, progress)
        finally:
            progress.close()
        return 0
    if ns.image_command == "swap":
        make_swap_image(Path(ns.path), parse_size(ns.size))
        print(f"made swap image {ns.path}")
        return 0
    if ns.image_command == "commit":
        from colinux.formats.cow import commit_cow, read_header
        from colinux.image.locks import locked_images

        header = read_header(ns.cow, label="commit")
        # Neither file may be in a running guest's hands while it changes.
        with locked_images([(ns.cow, True), (header.backing_file, True)], label="commit"):
            count = commit_cow(ns.cow)
        print(f"committed {count} sectors of {ns.cow} into {header.backing_file}", file=sys.stdout)
        return 0
    if ns.image_command == "initrd":
        import gzip

        from colinux.guest.image import build_initramfs

        _write_new(ns.path, gzip.compress(build_initramfs(), 6), 0o644)
        print(f"wrote the default guest as {ns.path} (initrd={ns.path} root=/dev/cobd0)")
        return 0
    if ns.image_command == "kernel":
        from colinux.engine.uml import check_kernel, default_kernel, kernel_release

        kernel = default_kernel()
        check_kernel(kernel)
        _write_new(ns.path, Path(kernel).read_bytes(), 0o755)
        print(f"wrote the UML kernel {kernel_release(kernel)} as {ns.path} (kernel={ns.path})")
        return 0
    raise UserError("colinux image: expected an action: root, swap, commit, initrd or kernel")


def _write_new(path: str, data: bytes, mode: int) -> None:
    """Write a file that must not exist yet: colinux overwrites nothing of the user's."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        raise UserError(f"{path}: already exists (colinux does not overwrite it)") from None
    except OSError as error:
        raise UserError(f"{path}: {error.strerror}") from None
    with os.fdopen(fd, "wb") as f:
        f.write(data)
