"""Build colinux's User-Mode Linux kernel from Debian's ``linux-source-7.2``.

``./setup.sh`` runs this; it can be run by hand too::

    .venv/bin/python kernel/build.py --install .venv/lib/colinux/linux

Steps, each named in the one-line error when it fails (its log is kept):

1. ``fetch``: Debian's current ``linux-source-7.2`` from trixie-backports, by
   apt with a private sources list and state directory (the host's apt setup
   is not touched), verified by the archive's signatures.
2. ``unpack``, 3. ``patch`` (``kernel/patches/*.patch`` in order),
4. ``configure`` (``make ARCH=um defconfig`` plus ``kernel/colinux.config``,
   each of whose options must survive ``olddefconfig``), 5. ``build``.
6. ``install``: the kernel and a note of what it was built from.

A build is kept in the user's cache (``~/.cache/colinux/kernel/KEY/``), KEY
being a hash of everything that goes into it: the source package's version
and checksum, the config fragment, the patches, the compiler. A second run
finds it there and only installs it. With no network, the newest cached build
of the same config, patches and compiler is taken.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

HERE = Path(__file__).resolve().parent
CONFIG_FRAGMENT = HERE / "colinux.config"
PATCHES = HERE / "patches"
PACKAGE = "linux-source-7.2"
SUITE = "trixie-backports"
MIRROR = os.environ.get("COLINUX_DEBIAN_MIRROR", "http://deb.debian.org/debian")
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
# Bumped when this script changes what a build produces.
FORMAT = "1"
# make's output lines (one per compiled or linked file) in a build of this
# config, for the progress display before a first build has counted them.
EXPECTED_LINES = 2000


class BuildError(Exception):
    def __init__(self, step: str, message: str, log: Path | None = None) -> None:
        super().__init__(message)
        self.step, self.message, self.log = step, message, log

    def __str__(self) -> str:
        where = f" (log: {self.log})" if self.log else ""
        return f"kernel build: {self.step} failed: {self.message}{where}"


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "colinux" / "kernel"


# --- progress ---------------------------------------------------------------------------


class Progress:
    """Stages and a build bar: rich's display on a terminal, plain lines elsewhere."""

    def __init__(self) -> None:
        self.start = time.monotonic()
        self._rich = None
        if sys.stdout.isatty():
            try:
                from rich.console import Console

                self._rich = Console()
            except ImportError:  # plain lines, as for a pipe
                pass

    def stage(self, text: str) -> None:
        line = f"[{time.monotonic() - self.start:5.0f} s] {text}"
        if self._rich is not None:
            self._rich.print(line, highlight=False)
        else:
            print(f"kernel: {line}", flush=True)

    @contextmanager
    def counter(self, what: str, total: int) -> Iterator[Callable[[], None]]:
        """A callable to advance by one line of work, shown against ``total``."""
        if self._rich is not None:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

            with Progress(
                "[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                TimeElapsedColumn(), console=self._rich, transient=True,
            ) as bar:  # fmt: skip
                task = bar.add_task(what, total=total)
                yield lambda: bar.advance(task)
            return
        done = [0, 0]  # lines, last tenth printed

        def advance() -> None:
            done[0] += 1
            tenth = min(9, done[0] * 10 // max(total, 1))
            if tenth > done[1]:
                done[1] = tenth
                self.stage(f"{what}: about {tenth * 10}%")

        yield advance


# --- inputs -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    version: str  # the Debian package's, e.g. 7.2.12-1~bpo13+1
    sha256: str


class Apt:
    """apt-get and apt-cache on a private sources list and state: the host's apt is not touched."""

    def __init__(self, root: Path) -> None:
        self.root = root
        for d in ("lists/partial", "archives/partial", "etc"):
            (root / d).mkdir(parents=True, exist_ok=True)
        sources = root / "etc" / "sources.list"
        sources.write_text(f"deb [signed-by={KEYRING}] {MIRROR} {SUITE} main\n")
        self.options = [
            f"-oDir::Etc::SourceList={sources}",
            "-oDir::Etc::SourceParts=/dev/null",
            "-oDir::Etc::Preferences=/dev/null",
            "-oDir::Etc::PreferencesParts=/dev/null",
            f"-oDir::State={root}",
            f"-oDir::State::Lists={root / 'lists'}",
            "-oDir::State::status=/dev/null",
            f"-oDir::Cache={root}",
            f"-oAPT::Sandbox::User={_user()}",
            "-oDebug::NoLocking=1",
            "-qq",
        ]

    def run(self, tool: str, *args: str, log: Path, cwd: Path | None = None) -> str:
        argv = [tool, *self.options, *args]
        with log.open("a") as f:
            f.write(f"$ {' '.join(argv)}\n")
            f.flush()
            out = subprocess.run(argv, stdout=subprocess.PIPE, stderr=f, text=True, cwd=cwd)
            f.write(out.stdout)
        if out.returncode != 0:
            raise BuildError("fetch", f"{tool} {args[0]} exited with {out.returncode}", log)
        return out.stdout

    def candidate(self, log: Path) -> Source:
        self.run("apt-get", "update", log=log)
        text = self.run("apt-cache", "show", "--no-all-versions", PACKAGE, log=log)
        version = re.search(r"^Version: (.+)$", text, re.M)
        sha = re.search(r"^SHA256: ([0-9a-f]{64})$", text, re.M)
        if not version or not sha:
            raise BuildError("fetch", f"{PACKAGE} is not in {SUITE} at {MIRROR}", log)
        return Source(version.group(1), sha.group(1))

    def download(self, into: Path, log: Path) -> Path:
        self.run("apt-get", "download", PACKAGE, log=log, cwd=into)
        debs = sorted(into.glob(f"{PACKAGE}_*.deb"))
        if not debs:
            raise BuildError("fetch", f"apt-get download left no {PACKAGE} package", log)
        return debs[-1]


def _user() -> str:
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name


def _first_line(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True)
    except FileNotFoundError:
        raise BuildError("configure", f"{argv[0]} not found (setup.sh installs it)") from None
    return out.stdout.splitlines()[0] if out.stdout else ""


def recipe() -> dict[str, str]:
    """What goes into a build besides the source: config, patches, compiler."""
    h = hashlib.sha256(FORMAT.encode())
    h.update(CONFIG_FRAGMENT.read_bytes())
    for patch in sorted(PATCHES.glob("*.patch")):
        h.update(patch.name.encode() + b"\0" + patch.read_bytes())
    return {"recipe": h.hexdigest()[:16], "compiler": _first_line(["gcc", "--version"])}


def build_key(source: Source, inputs: dict[str, str]) -> str:
    h = hashlib.sha256(json.dumps([source.version, source.sha256, inputs]).encode())
    return h.hexdigest()[:16]


# --- steps ----------------------------------------------------------------------------------


def _run(
    step: str,
    argv: list[str],
    log: Path,
    cwd: Path,
    *,
    stdin: IO[bytes] | None = None,
    env: dict[str, str] | None = None,
) -> None:
    with log.open("a") as f:
        f.write(f"$ {' '.join(argv)}\n")
        f.flush()
        rc = subprocess.run(
            argv, stdin=stdin, stdout=f, stderr=subprocess.STDOUT, cwd=cwd, env=env
        ).returncode
    if rc != 0:
        raise BuildError(step, f"{argv[0]} exited with {rc}", log)


def unpack(deb: Path, into: Path, log: Path) -> Path:
    """The source tree out of the package's tarball, streamed (no 160 MB copy on disk)."""
    with log.open("a") as f:
        f.write(f"unpacking {deb}\n")
        tar = f"usr/src/{PACKAGE}.tar.xz"
        deb_tar = subprocess.Popen(
            ["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE, stderr=f
        )
        inner = subprocess.Popen(
            ["tar", "-xO", f"./{tar}"], stdin=deb_tar.stdout, stdout=subprocess.PIPE, stderr=f
        )
        assert deb_tar.stdout is not None and inner.stdout is not None
        deb_tar.stdout.close()
        rc = subprocess.run(
            ["tar", "-xJ", "-C", str(into)], stdin=inner.stdout, stderr=f
        ).returncode
        inner.stdout.close()
        if inner.wait() or deb_tar.wait() or rc:
            raise BuildError("unpack", f"could not unpack {tar} from {deb.name}", log)
    tree = into / PACKAGE
    if not (tree / "Makefile").is_file():
        raise BuildError("unpack", f"{deb.name} held no {PACKAGE}/ tree", log)
    return tree


def apply_patches(tree: Path, log: Path) -> None:
    for patch in sorted(PATCHES.glob("*.patch")):
        with patch.open("rb") as f:
            try:
                _run("patch", ["patch", "-p1", "--forward", "--batch"], log, tree, stdin=f)
            except BuildError as e:
                raise BuildError("patch", f"{patch.name} does not apply", e.log) from None


def configure(tree: Path, out: Path, log: Path) -> None:
    make = ["make", "ARCH=um", f"O={out}"]
    _run("configure", [*make, "defconfig"], log, tree)
    _run("configure", ["scripts/kconfig/merge_config.sh", "-m", "-O", str(out),
                       str(out / ".config"), str(CONFIG_FRAGMENT)], log, tree,
         env={**os.environ, "ARCH": "um"})  # fmt: skip
    _run("configure", [*make, "olddefconfig"], log, tree)
    config = (out / ".config").read_text()
    for line in CONFIG_FRAGMENT.read_text().splitlines():
        wanted = line if line.startswith("CONFIG_") else None
        if line.startswith("# CONFIG_") and line.endswith(" is not set"):
            wanted = line
        if wanted and wanted not in config.splitlines():
            raise BuildError("configure", f"{wanted!r} did not hold after olddefconfig "
                             "(a dependency is missing)", log)  # fmt: skip


def compile_kernel(tree: Path, out: Path, log: Path, jobs: int, progress: Progress,
                   expected: int) -> int:  # fmt: skip
    argv = ["make", "ARCH=um", f"O={out}", f"-j{jobs}", "linux"]
    lines = 0
    with log.open("a") as f, progress.counter("compiling", expected) as advance:
        f.write(f"$ {' '.join(argv)}\n")
        f.flush()
        proc = subprocess.Popen(argv, cwd=tree, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert proc.stdout is not None
        for raw in proc.stdout:
            f.write(raw.decode(errors="replace"))
            if raw.startswith(b"  ") and not raw.startswith(b"   "):
                lines += 1
                advance()
        rc = proc.wait()
    if rc != 0:
        raise BuildError("build", f"make exited with {rc}", log)
    return lines


def _install(built: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    info = dest.with_name(dest.name + ".json")
    for name, target, mode in (("linux", dest, 0o755), ("linux.json", info, 0o644)):
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".kernel-")
        os.close(fd)
        shutil.copyfile(built / name, tmp)
        os.chmod(tmp, mode)
        os.replace(tmp, target)


def _cached(cache: Path, inputs: dict[str, str]) -> Path | None:
    """The newest cached build of this recipe and compiler, whatever its source version."""
    best = None
    for info in cache.glob("*/linux.json"):
        try:
            data = json.loads(info.read_text())
        except (OSError, ValueError):
            continue
        newer = best is None or info.stat().st_mtime > best.stat().st_mtime
        if data.get("inputs") == inputs and (info.parent / "linux").is_file() and newer:
            best = info
    return best.parent if best else None


def build(dest: Path | None, jobs: int, progress: Progress) -> Path:
    cache = cache_root()
    cache.mkdir(parents=True, exist_ok=True)
    inputs = recipe()
    work = Path(tempfile.mkdtemp(dir=cache, prefix="work-"))
    log = work / "build.log"
    keep_work = False
    try:
        apt = Apt(work / "apt")
        try:
            source = apt.candidate(log)
        except BuildError:
            fallback = _cached(cache, inputs)
            if fallback is None:
                raise
            progress.stage(f"{SUITE} unreachable; taking the cached build in {fallback}")
            if dest:
                _install(fallback, dest)
            return fallback
        key = build_key(source, inputs)
        built = cache / key
        if (built / "linux").is_file() and (built / "linux.json").is_file():
            progress.stage(f"{PACKAGE} {source.version}: cached in {built}")
        else:
            progress.stage(f"fetching {PACKAGE} {source.version} from {SUITE}")
            deb = apt.download(work, log)
            progress.stage(f"unpacking {deb.name}")
            tree = unpack(deb, work, log)
            deb.unlink()
            progress.stage(
                f"patching: {', '.join(p.name for p in sorted(PATCHES.glob('*.patch')))}"
            )
            apply_patches(tree, log)
            out = work / "out"
            progress.stage("configuring: defconfig + kernel/colinux.config")
            configure(tree, out, log)
            counted = cache / "lines"
            expected = int(counted.read_text()) if counted.is_file() else EXPECTED_LINES
            progress.stage(f"compiling with {jobs} jobs (a few minutes; log: {log})")
            lines = compile_kernel(tree, out, log, jobs, progress, expected)
            counted.write_text(f"{lines}\n")
            staging = Path(tempfile.mkdtemp(dir=cache, prefix="new-"))
            shutil.copyfile(out / "linux", staging / "linux")
            release = (out / "include/config/kernel.release").read_text().strip()
            (staging / "linux.json").write_text(json.dumps({
                "package": PACKAGE, "version": source.version, "sha256": source.sha256,
                "suite": SUITE, "release": release, "inputs": inputs,
                "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }, indent=1) + "\n")  # fmt: skip
            shutil.rmtree(built, ignore_errors=True)
            os.replace(staging, built)
            progress.stage(f"built Linux {release} from {PACKAGE} {source.version}")
        if dest:
            progress.stage(f"installing {dest}")
            _install(built, dest)
        return built
    except BuildError:
        keep_work = True
        raise
    finally:
        if keep_work:
            # Only the log is worth keeping: the tree is 1.5 GB.
            for entry in work.iterdir():
                if entry.is_dir():
                    shutil.rmtree(entry, ignore_errors=True)
                elif entry != log:
                    entry.unlink()
        else:
            shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build colinux's UML kernel (cached).")
    parser.add_argument("--install", type=Path, metavar="PATH", help="copy the kernel to PATH")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="make -j")
    args = parser.parse_args(argv)
    try:
        build(args.install.resolve() if args.install else None, args.jobs, Progress())
    except BuildError as e:
        print(e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
