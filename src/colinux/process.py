"""Every child process colinux starts, started and ended one way.

A child gets its command line logged at debug level (``colinux debug`` shows
it, under the caller's logger), an explicit environment (``environment()``:
the few variables a tool needs, never the daemon's whole one), standard input
from /dev/null unless given, and its standard error in a log file, or read
here: never a pipe that nobody reads, which stalls the child once it fills.
Ending one walks trio's ladder: SIGTERM, a timeout, SIGKILL, and it is always
reaped, also when the caller is cancelled meanwhile::

    process = await spawn(["passt", ...], log=logger, stderr=log_path,
                          started=wait_for_handshake)   # stopped if that raises
    ...
    await stop_all([process, other])                    # concurrently

    status, err = await run_async(["ip", "link", "set", "dev", "eth0", "up"], log=logger)
    out = run(["ldd", kernel], log=logger).stdout       # ColinuxError on failure

``exit_on_signals()`` turns SIGTERM and SIGINT into exceptions (``SystemExit(143)``,
``KeyboardInterrupt``) from a program's first moment, so every ``finally`` (temporary trees, TAP
devices, run directories) runs when one comes before the program's own
handlers (the daemon's event loop) are in place.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from types import FrameType

from colinux.errors import ColinuxError

STOP_TIMEOUT = 2.0  # seconds between SIGTERM and SIGKILL

# What a tool of ours needs of the caller's environment: where programs are,
# the user, the locale, temporary files, and the proxies apt and mmdebstrap use.
KEPT_VARIABLES = (
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "TMPDIR", "XDG_RUNTIME_DIR",
    "http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY",
)  # fmt: skip
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

Started = Callable[[asyncio.subprocess.Process], Awaitable[None]]


def environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """A child's environment: ``KEPT_VARIABLES`` of ours, then ``extra``."""
    env = {name: os.environ[name] for name in KEPT_VARIABLES if name in os.environ}
    env.setdefault("PATH", DEFAULT_PATH)
    env.update(extra or {})
    return env


def _logged(argv: Sequence[str | os.PathLike[str]], log: logging.Logger) -> list[str]:
    args = [os.fspath(a) for a in argv]
    log.debug("running %s", args[0], extra={"fields": {"argv": " ".join(args)}})
    return args


async def spawn(
    argv: Sequence[str | os.PathLike[str]],
    *,
    log: logging.Logger,
    env: Mapping[str, str] | None = None,
    stdin: int = subprocess.DEVNULL,
    stdout: int = subprocess.DEVNULL,
    stderr: Path | int = subprocess.DEVNULL,
    pass_fds: Sequence[int] = (),
    start_new_session: bool = False,
    umask: int = -1,
    started: Started | None = None,
) -> asyncio.subprocess.Process:
    """Start a child; once ``started`` (its handshake) returns, hand it back.

    ``stderr`` is a descriptor or a file appended to (a guest's log). If the
    handshake raises, or the caller is cancelled in it, the child is stopped
    and reaped before the error goes on."""
    args = _logged(argv, log)
    with contextlib.ExitStack() as files:
        if isinstance(stderr, Path):
            stderr = files.enter_context(open(stderr, "ab")).fileno()
        process = await asyncio.create_subprocess_exec(
            *args,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            env=environment() if env is None else dict(env),
            pass_fds=tuple(pass_fds),
            start_new_session=start_new_session,
            umask=umask,
        )
    log.debug("%s started", args[0], extra={"fields": {"pid": process.pid}})
    if started is not None:
        try:
            await started(process)
        except BaseException:
            await stop(process)
            raise
    return process


async def stop(
    process: asyncio.subprocess.Process, *, timeout: float = STOP_TIMEOUT, group: bool = False
) -> int:
    """End a child: SIGTERM, ``timeout`` seconds, SIGKILL; reaped whatever happens.

    ``group``: signal its whole process group (a child started in a session of
    its own). Returns its exit status."""

    def send(signum: int) -> None:
        if process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            if group:
                os.killpg(process.pid, signum)
            else:
                process.send_signal(signum)

    try:
        if process.returncode is None:
            send(signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.wait(), timeout)
    finally:
        # Also when cancelled meanwhile: a child outlives no caller of ours.
        send(signal.SIGKILL)
        await asyncio.shield(process.wait())
    return process.returncode if process.returncode is not None else -1


async def stop_all(
    processes: Iterable[asyncio.subprocess.Process], *, timeout: float = STOP_TIMEOUT
) -> None:
    """Stop several children at once (each may take its time to exit)."""
    await asyncio.gather(*(stop(p, timeout=timeout) for p in processes))


async def run_async(
    argv: Sequence[str | os.PathLike[str]],
    *,
    log: logging.Logger,
    env: Mapping[str, str] | None = None,
    timeout: float = 60.0,
) -> tuple[int, str]:
    """Run a short helper to its end: its exit status and standard error (read
    here, whole). Past ``timeout`` it is stopped and ColinuxError raised."""
    process = await spawn(argv, log=log, env=env, stderr=subprocess.PIPE)
    try:
        _, err = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        raise ColinuxError(f"{argv[0]} did not end within {timeout:.0f} s") from None
    finally:
        await stop(process)
    return process.returncode or 0, err.decode(errors="replace").strip()


def run(
    argv: Sequence[str | os.PathLike[str]],
    *,
    log: logging.Logger,
    env: Mapping[str, str] | None = None,
    input: str | None = None,
    timeout: float = 60.0,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run a tool to its end, its output captured as text (the blocking form,
    for code outside the event loop). ``check``: a failure is one ColinuxError
    naming the tool and what it said."""
    args = _logged(argv, log)
    try:
        result = subprocess.run(
            args,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env=environment() if env is None else dict(env),
            timeout=timeout,  # subprocess.run kills and reaps it then
        )
    except subprocess.TimeoutExpired:
        raise ColinuxError(f"{args[0]} did not end within {timeout:.0f} s") from None
    if check and result.returncode != 0:
        said = (result.stderr.strip() or result.stdout.strip()).splitlines()
        raise ColinuxError(
            f"{' '.join(args[:2])} failed (status {result.returncode})"
            + (f": {said[-1]}" if said else "")
        )
    return result


@contextlib.contextmanager
def popen(
    argv: Sequence[str | os.PathLike[str]],
    *,
    log: logging.Logger,
    env: Mapping[str, str] | None = None,
    stdout: int = subprocess.DEVNULL,
    timeout: float = 30.0,
) -> Iterator[subprocess.Popen[bytes]]:
    """A long blocking child whose output the caller reads as it comes (standard
    error joins standard output). However the block is left (an error, a
    signal), the child gets SIGTERM, ``timeout`` seconds to clean up, SIGKILL,
    and is reaped before the caller's own cleanups run."""
    args = _logged(argv, log)
    child = subprocess.Popen(
        args,
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=subprocess.STDOUT,
        env=environment() if env is None else dict(env),
    )
    try:
        yield child
    finally:
        if child.poll() is None:
            child.terminate()
            try:
                child.wait(timeout)
            except subprocess.TimeoutExpired:
                child.kill()
        child.wait()
        if child.stdout is not None:
            child.stdout.close()


def _exit(signum: int, frame: FrameType | None) -> None:
    # Once: a second signal during the unwinding must not cut a finally short.
    for each in (signal.SIGTERM, signal.SIGINT):
        signal.signal(each, signal.SIG_IGN)
    if signum == signal.SIGINT:
        raise KeyboardInterrupt  # what the callers already turn into status 130
    raise SystemExit(128 + signum)


def exit_on_signals() -> None:
    """From now on SIGTERM ends the program through ``SystemExit(143)`` and
    SIGINT through ``KeyboardInterrupt`` (also where it was ignored, as in a
    background job), so cleanups run. An event loop's own handlers replace
    these while it runs."""
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _exit)
