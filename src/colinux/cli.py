"""The ``colinux`` and ``colinux-daemon`` commands.

``colinux-daemon`` takes coLinux 0.6.2's switches and key=value words
verbatim; ``colinux`` is the everyday front end (run, start, list, console,
stop, config). Both share one error policy: a ``UserError`` is one line on
stderr and exit status 2, any other ``ColinuxError`` one line and status 1;
a traceback only with ``--debug``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import select
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import NoReturn

from colinux import process, trace
from colinux.checks import check_machine
from colinux.config import cmdline as cmdline_config
from colinux.config import settings
from colinux.config.model import MAX_SERIAL_INDEX, Machine
from colinux.config.paths import DriveMap, resolve_machine
from colinux.console.client import attach_console, check_served_line, request, request_all
from colinux.console.terminal import DETACH_KEY_NAME
from colinux.console.web_listener import WebOptions
from colinux.control.rundir import check_name, guest_dir
from colinux.daemon.supervisor import DaemonOptions, run_daemon
from colinux.errors import ColinuxError, UserError
from colinux.version import __version__


def _warn(message: str) -> None:
    print(f"colinux: warning: {message}", file=sys.stderr)


def _user_network() -> bool:
    """Whether slirp can run here, so the default guest gets its card."""
    # The default guest is on the network wherever this user may open TUN
    # devices (slirp4netns) or the host has a default route (passt).
    from colinux.net.passt import passt_usable
    from colinux.net.slirp import tun_usable

    return tun_usable() or passt_usable()


@dataclass
class MachineArgs:
    """What selects and shapes a machine, common to run, start and colinux-daemon."""

    config: str | None = None
    words: list[str] = field(default_factory=list)
    drives: list[str] = field(default_factory=list)

    def build(self) -> Machine:
        """Read, resolve and check the machine: every user mistake surfaces here."""
        drives = DriveMap.from_sources(self.drives, os.environ)
        # Words keep their origin, so a mistake in an @FILE names that file and line.
        words = cmdline_config.expand_words(
            [(word, None) for word in self.words],
            base_dir=os.getcwd(),
            source=cmdline_config.COMMAND_LINE,
        )
        # The one profile rule, whatever the form: a file (-c or @FILE) is read as
        # coLinux read it, words alone go over the default guest.
        from_file = self.config is not None or any(w.startswith("@") for w in self.words)
        machine = settings.profile_for(from_file=from_file, network=_user_network)
        base_dir = os.getcwd()
        if self.config:
            from colinux.config.load import load_file  # the XML stack: only when needed

            machine = load_file(self.config, warn=_warn, base=machine)
            base_dir = os.path.dirname(os.path.abspath(self.config))
        if words or not self.config:
            machine = cmdline_config.parse_words(
                words, source=cmdline_config.COMMAND_LINE, base=machine
            )
        machine = resolve_machine(machine, drives=drives, base_dir=base_dir)
        check_machine(machine)
        from colinux.engine.uml import check_kernel, default_kernel, engine_switches

        # Before anything starts, and in config check too: the kernel, and
        # whether it can run this machine (cpus= needs SMP, and so on).
        kernel = str(machine.kernel) if machine.kernel is not None else default_kernel()
        if machine.kernel is not None:
            check_kernel(kernel)
        if os.path.isfile(kernel):
            engine_switches(machine, kernel)
        return machine


# -- colinux-daemon -------------------------------------------------------------

DAEMON_USAGE = f"""\
usage: colinux-daemon [-c FILE] [-d] [-k] [-p PIDFILE] [-t TYPE] [--name NAME]
                      [--drive L=DIR]... [@FILE]... [KEY=VALUE | WORD]...

Start one cooperative Linux guest (coLinux 0.6.2 switches).
  -c FILE        read the machine from a configuration file (XML or KEY=VALUE words)
  -d             do not show the console (attach later with 'colinux console NAME')
  -k             hide the guest kernel's messages
  -p PIDFILE     write the daemon's pid to PIDFILE
  -t TYPE        console type (accepted for compatibility; the console is this terminal)
  --name NAME    guest name, also the engine's umid (default: colinux)
  --debug-collector  collect debug events from the start (follow: colinux debug NAME)
  --drive L=DIR  host directory for DOS drive letter L (also COLINUX_DRIVE_L=DIR)
  --web [--port PORT] [--listen ADDRESS]  keep a web console up (its URL: colinux list --web)
  @FILE          more KEY=VALUE words from FILE ('#' starts a comment)
  KEY=VALUE      a machine setting (below); other words go to the guest kernel (root=, ro)
  --version      show versions;  -h, --help  this help
Signals: TERM or INT shut the guest down cleanly; HUP sends it Ctrl-Alt-Del.

Settings (N: an index; XML forms: colinux config convert FILE --to xml):
{settings.usage_text()}\
A configuration file (-c FILE or @FILE) is read as coLinux read it: \
mem={settings.COLINUX_PROFILE.memory_mb} and no
network card unless it says otherwise. Without one, settings go over colinux's default
guest: mem={settings.DEFAULT_GUEST_MEMORY_MB} and eth0=slirp.

Services (systemd units colinux-NAME.service; NAME defaults to colinux):
  --install-service [NAME] -c FILE   install a unit that runs this guest from FILE
  --remove-service [NAME]            stop, disable and remove the unit
  --run-service NAME -c FILE         what the unit runs (Type=notify)
  --user | --system                  a user or system unit (default: system for root)
"""


@dataclass
class DaemonArgs(MachineArgs):
    name: str = "colinux"
    no_console: bool = False
    quiet: bool = False
    pidfile: str | None = None
    ready_fd: int | None = None
    job: list[str] | None = None
    shell: str = "respawn"
    debug: bool = False
    debug_collector: bool = False  # collect debug events from the start
    service_action: str | None = None  # "install", "remove" or "run"
    service_scope: str | None = None  # "user" or "system"; None: by who runs it
    web: WebOptions = field(default_factory=WebOptions)


def parse_daemon_args(argv: Sequence[str]) -> DaemonArgs:
    args = DaemonArgs()
    words = list(argv)
    i = 0

    def value(option: str) -> str:
        nonlocal i
        if i + 1 >= len(words):
            raise UserError(f"colinux-daemon: option {option} needs a value")
        i += 1
        return words[i]

    while i < len(words):
        word = words[i]
        if word in ("-h", "--help"):
            print(DAEMON_USAGE, end="")
            raise SystemExit(0)
        elif word == "--version":
            print(version_report())
            raise SystemExit(0)
        elif word == "-c":
            args.config = value(word)
        elif word == "-d":
            args.no_console = True
        elif word == "-k":
            args.quiet = True
        elif word == "-p":
            args.pidfile = value(word)
        elif word == "-t":
            value(word)
        elif word == "--debug":
            args.debug = True
        elif word == "--debug-collector":
            args.debug_collector = True
        elif word == "--name" or word.startswith("--name="):
            args.name = check_name(word.partition("=")[2] or value(word))
        elif word == "--drive" or word.startswith("--drive="):
            args.drives.append(word.partition("=")[2] if "=" in word else value(word))
        elif word == "--ready-fd":
            args.ready_fd = int(value(word))
        elif word == "--web":
            args.web.on = True
        elif word in ("--port", "--listen", "--web-fd"):
            args.web.set(word, value(word))
        elif word in ("--install-service", "--remove-service", "--run-service"):
            if args.service_action is not None:
                raise UserError(
                    f"colinux-daemon: {word} cannot be combined with another service option"
                )
            args.service_action = word.split("-")[2]
            # NAME is optional for install and remove, as in coLinux: the next
            # word is the name unless it is an option or a setting.
            following = words[i + 1] if i + 1 < len(words) else None
            if word == "--run-service" or (
                following is not None
                and not following.startswith(("-", "@"))
                and "=" not in following
            ):
                args.name = check_name(value(word))
        elif word in ("--user", "--system"):
            if args.service_scope not in (None, word[2:]):
                raise UserError("colinux-daemon: --user and --system cannot be combined")
            args.service_scope = word[2:]
        elif word == "--":
            args.job = words[i + 1 :]
            if not args.job:
                raise UserError("colinux-daemon: '--' must be followed by a command")
            break
        elif word.startswith("-") and "=" not in word:
            raise UserError(f"colinux-daemon: unknown option {word} (see colinux-daemon --help)")
        else:
            args.words.append(word)
        i += 1
    args.web.check("colinux-daemon")
    if args.service_scope is not None and args.service_action not in ("install", "remove"):
        raise UserError(
            f"colinux-daemon: --{args.service_scope} goes with --install-service "
            "or --remove-service"
        )
    return args


def daemon_options(args: DaemonArgs, console: str) -> DaemonOptions:
    return DaemonOptions(
        name=args.name,
        console=console,  # type: ignore[arg-type]
        # A command's output is the command's: no kernel messages in it.
        quiet=args.quiet or args.job is not None,
        job=tuple(args.job) if args.job is not None else None,
        shell=args.shell,  # type: ignore[arg-type]
        pidfile=args.pidfile,
        ready_fd=args.ready_fd,
        debug_collector=args.debug_collector,
    )


def local_console_mode(no_console: bool) -> str:
    if no_console:
        return "none"
    return "terminal" if sys.stdin.isatty() and sys.stdout.isatty() else "stdout"


def daemon_command(argv: Sequence[str]) -> int:
    args = parse_daemon_args(argv)
    _setup_logging(args.debug)
    if args.service_action is not None:
        return service_command(args)
    machine = args.build()
    if args.pidfile is not None:
        check_pidfile(args.pidfile)
    options = daemon_options(args, local_console_mode(args.no_console))
    listener = args.web.listener()
    if listener is not None and args.web.fd is None and sys.stderr.isatty():
        print(f"colinux-daemon: web console: {listener.url}", file=sys.stderr)  # not to a log
    return run_daemon(machine, dataclasses.replace(options, web=listener))


def check_pidfile(path: str) -> None:
    """-p PIDFILE must be writable, checked before anything starts."""
    parent = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise UserError(f"-p {path}: is a directory")
    if not os.path.isdir(parent):
        raise UserError(f"-p {path}: directory '{parent}' does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"-p {path}: directory '{parent}' is not writable")


def service_command(args: DaemonArgs) -> int:
    """--install-service, --remove-service and --run-service."""
    from colinux import service

    action = args.service_action
    scope = args.service_scope or service.default_scope()
    if action != "remove" and not args.config:
        raise UserError(
            f"colinux-daemon --{action}-service: a service takes its settings from a file: "
            "add -c my.colinux.xml"
        )
    if action != "run" and (args.words or args.job is not None):
        extra = " ".join(args.words or ["--"])
        raise UserError(
            f"colinux-daemon --{action}-service: {extra}: a service takes its settings "
            "from its -c file only; put them there"
        )
    if action != "remove" and args.pidfile is not None:
        args.pidfile = os.path.abspath(args.pidfile)  # the unit runs elsewhere
        check_pidfile(args.pidfile)
    if action == "run":
        machine = args.build()
        options = dataclasses.replace(
            daemon_options(args, "none"), service=True, web=args.web.listener()
        )
        return run_daemon(machine, options)
    if action == "remove":
        path = service.remove(args.name, scope)  # type: ignore[arg-type]
        print(f"colinux-daemon: removed {scope} service {service.unit_name(args.name)} ({path})")
        return 0
    assert args.config is not None
    config = os.path.abspath(args.config)
    args.config = config
    args.build()  # a config that does not validate installs nothing
    unit = service.ServiceUnit(
        name=args.name,
        config=config,
        scope=scope,  # type: ignore[arg-type]
        working_directory=os.getcwd(),
        # The unit runs without this shell's environment: COLINUX_DRIVE_L maps too.
        drives=tuple(
            f"{letter}={directory}"
            for letter, directory in DriveMap.from_sources(args.drives, os.environ).items()
        ),
        quiet=args.quiet,
        pidfile=args.pidfile,
        debug_collector=args.debug_collector,
        web=args.web.words(),
    )
    path = service.install(unit)
    ctl = service.systemctl_hint(unit.scope)
    print(f"colinux-daemon: installed {scope} service {unit.unit_name} ({path})")
    print(f"  settings: {config}")
    print(f"  start it: {ctl} start {unit.unit_name}")
    print(f"  start it at boot: {ctl} enable {unit.unit_name}")
    print(f"  its console: colinux console {unit.name}")
    if not service.systemd_running():
        print("  (systemd is not running on this machine: the unit takes effect where it is)")
    return 0


# -- colinux ------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors turned into one-line UserErrors."""

    def error(self, message: str) -> NoReturn:
        raise UserError(f"{self.prog}: {message} (see {self.prog} --help)")


def _machine_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-c", "--config", metavar="FILE", help="XML or KEY=VALUE configuration file"
    )
    parser.add_argument(
        "--drive", action="append", default=[], metavar="L=DIR", help="map DOS drive L: to DIR"
    )
    parser.add_argument("-k", "--quiet", action="store_true", help="hide kernel messages")
    parser.add_argument("settings", nargs="*", metavar="KEY=VALUE", help="machine settings")


def _web_options(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--web", action="store_true", help=f"{what} in the browser: prints its URL (with a token)"
    )
    parser.add_argument(
        "--port", type=int, default=0, help="the web console's port (default 0: any free one)"
    )
    parser.add_argument(
        "--listen", metavar="ADDRESS", help="listen on ADDRESS, not 127.0.0.1 (plain HTTP)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="colinux", description="Cooperative Linux for Linux hosts.")
    parser.add_argument("--version", action="store_true", help="show the versions of all parts")
    parser.add_argument("--debug", action="store_true", help="tracebacks and engine details")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    run = sub.add_parser(
        "run",
        help="boot a guest in the foreground; '-- CMD' runs CMD in it and exits with its status",
        description="Boot the default guest (or -c FILE) with its console on this terminal. "
        "With '-- CMD ARGS...', run CMD in the guest, print its output and exit with its status.",
    )
    run.add_argument("--name", help="guest name (default: run-PID)")
    run.add_argument("-v", "--verbose", action="store_true", help="show kernel boot messages")
    run.add_argument("--no-share", action="store_true", help="do not share this directory as cofs0")
    run.add_argument("--no-network", action="store_true", help="no network cards at all")
    _machine_options(run)

    start = sub.add_parser("start", help="start a named guest in the background")
    start.add_argument("name")
    start.add_argument(
        "--debug-collector", action="store_true", help="collect debug events from the start"
    )
    _web_options(start, "keep a web console up: the console")
    _machine_options(start)

    listing = sub.add_parser(
        "list",
        help="list running guests (--json: a document for scripts)",
        description="NAME STATE PID MEMORY RESIDENT UPTIME of each running guest, or with "
        "--json one JSON document with all there is to know of each (the README has its "
        "keys).",
    )
    listing.add_argument("name", nargs="?", help="only this guest")
    listing.add_argument("--json", action="store_true", help="one JSON document")
    listing.add_argument("--web", action="store_true", help="their web consoles' URLs instead")

    # Parsed by console.exec_client (colinux.launch sends them there before this
    # parser exists): here for the help and completion.
    from colinux.console.exec_client import add_exec_arguments

    for verb, text in (
        ("exec", "run a command in a running guest: colinux exec [-t] NAME -- CMD [ARGS...]"),
        ("shell", "root's login shell in a running guest"),
    ):
        add_exec_arguments(sub.add_parser(verb, help=text), verb)

    console = sub.add_parser(
        "console", help=f"attach this terminal to a guest's console ({DETACH_KEY_NAME} detaches)"
    )
    console.add_argument("name")
    console.add_argument("--no-replay", action="store_true", help="do not replay recent output")
    _web_options(console, "the console")

    serial = sub.add_parser(
        "serial",
        help=f"attach this terminal to a guest's serial line ttySN ({DETACH_KEY_NAME} detaches)",
    )
    serial.add_argument("name")
    serial.add_argument("line", type=int, metavar="N", help="the line: 0 for ttyS0 ... 3")
    serial.add_argument("--no-replay", action="store_true", help="do not replay recent output")
    serial.add_argument(
        "--pty", action="store_true", help="give a host pty path (for screen, minicom) instead"
    )
    _web_options(serial, "the line")

    debug = sub.add_parser(
        "debug",
        help="follow a guest's debug events (the debug collector)",
        description="Print a guest's debug events (daemon, engine, hub, cofs, net, image, guest "
        "kernel) as they happen, after those collected so far. The collector is on while "
        "you follow, or for good with --on.",
    )
    debug.add_argument("name")
    onoff = debug.add_mutually_exclusive_group()
    onoff.add_argument("--on", action="store_true", help="keep collecting with no follower")
    onoff.add_argument("--off", action="store_true", help="stop collecting")
    debug.add_argument(
        "--component", action="append", default=[], metavar="C",
        help="only this component (daemon, engine, hub, cofs, net, image, guest); repeatable",
    )  # fmt: skip
    debug.add_argument(
        "-s", dest="facilities", metavar="FACILITY=LEVEL,...",
        help="per-facility levels, as colinux-debug-daemon -s (misc, network, messages, "
        "prints, blockdev, allocations, context_switch, pipe, filesystem; all)",
    )  # fmt: skip
    debug.add_argument(
        "--level", type=int, default=15, metavar="N", help="only levels 0..N (default 15)"
    )
    debug.add_argument("-f", "--file", metavar="FILE", help="append to FILE, not stdout")
    debug.add_argument("-p", "--xml", action="store_true", help="XML records (as -p did)")
    debug.add_argument("--no-follow", action="store_true", help="print what was collected and exit")

    stop = sub.add_parser("stop", help="shut a guest down (forced after a timeout)")
    stop.add_argument("name")
    stop.add_argument("--force", action="store_true", help="do not wait for a clean shutdown")
    stop.add_argument("--timeout", type=float, default=30.0, help="seconds to wait (default 30)")

    config = sub.add_parser("config", help="check or convert configuration files")
    config_sub = config.add_subparsers(
        dest="config_command", metavar="ACTION", parser_class=_Parser
    )
    check = config_sub.add_parser(
        "check", help="validate a configuration without starting anything"
    )
    check.add_argument("file")
    check.add_argument("--drive", action="append", default=[], metavar="L=DIR")
    conv = config_sub.add_parser("convert", help="print a configuration in the other form")
    conv.add_argument("file")
    conv.add_argument("--to", choices=("cmdline", "xml"), required=True)
    from colinux.image.commands import add_image_parser

    add_image_parser(sub, _Parser)

    completion = sub.add_parser(
        "completion",
        help="print a shell completion script: bash, zsh or fish",
        description="Print a script completing colinux's verbs, options, running guests' "
        "names and machine settings. bash: colinux completion bash > "
        "~/.local/share/bash-completion/completions/colinux",
    )
    completion.add_argument("shell", nargs="?", choices=("bash", "zsh", "fish"))
    # What the scripts ask for as the user types: the running guests' names.
    completion.add_argument("--guests", action="store_true", help=argparse.SUPPRESS)
    return parser


def _split_job(argv: Sequence[str]) -> tuple[list[str], list[str] | None]:
    argv = list(argv)
    if "--" in argv:
        at = argv.index("--")
        return argv[:at], argv[at + 1 :]
    return argv, None


def cmd_run(ns: argparse.Namespace, job: list[str] | None) -> int:
    args = MachineArgs(config=ns.config, words=ns.settings, drives=ns.drive)
    machine = args.build()
    if job is not None and not job:
        raise UserError("colinux run: '--' must be followed by a command")
    if ns.no_network:
        machine = dataclasses.replace(machine, networks=())
    share_args: tuple[str, ...] = ()
    if not ns.no_share:
        from colinux.cofs.backend import share_current_directory

        machine, share_args = share_current_directory(machine, os.getcwd())
    name = check_name(f"run-{os.getpid()}" if ns.name is None else ns.name)
    console = local_console_mode(False)
    if job is not None and console == "terminal" and not sys.stdin.isatty():
        console = "stdout"
    options = DaemonOptions(
        name=name,
        console=console,  # type: ignore[arg-type]
        quiet=not ns.verbose or ns.quiet,
        job=tuple(job) if job is not None else None,
        shell="once",
        extra_kernel_args=share_args,
    )
    return run_daemon(machine, options)


def cmd_start(ns: argparse.Namespace) -> int:
    name = check_name(ns.name)
    args = MachineArgs(config=ns.config, words=ns.settings, drives=ns.drive)
    args.build()  # every mistake is reported here, before anything starts
    if guest_dir(name).is_live():
        raise UserError(f"guest {name!r} is already running")
    web = _web_args(ns, "colinux start")
    # Bound here, so a taken port is this command's error; the daemon makes the token.
    listener = web.listener()
    read_end, write_end = os.pipe()
    argv = ["--name", name, "-d", "--ready-fd", str(write_end)]
    if listener is not None:  # the forked daemon has it open at the same number
        argv += ["--web-fd", str(listener.sock.fileno())]
    if ns.config:
        argv += ["-c", os.path.abspath(ns.config)]
    if ns.quiet:
        argv.append("-k")
    if ns.debug_collector:
        argv.append("--debug-collector")
    for d in ns.drive:
        argv += ["--drive", d]
    argv += list(ns.settings)
    log_path = guest_dir(name).log_file
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        _fork_daemon(argv, log_fd=fd, keep_fd=write_end, close_fd=read_end)
    finally:
        os.close(fd)
        os.close(write_end)
        if listener is not None:
            listener.close()  # the daemon's now
    with os.fdopen(read_end, "rb") as ready:
        # The daemon answers once the guest is running (its agent said HELLO).
        answered, _, _ = select.select([ready], [], [], START_TIMEOUT)
        answer = ready.read().decode(errors="replace").strip() if answered else ""
    if not answered:
        raise ColinuxError(
            f"guest {name} started but was not running after {START_TIMEOUT:.0f} s "
            f"(see colinux console {name}, or {log_path})"
        )
    if answer == "ok":
        print(f"started guest {name} (attach: colinux console {name}; stop: colinux stop {name})")
        if listener is not None:
            print(f"web console: {guest_dir(name).web_url_file.read_text().strip()}")
        return 0
    status, _, message = answer.partition(" ")
    if not status.isdigit():
        tail = (
            log_path.read_text(errors="replace").strip().splitlines()[-1:]
            if log_path.exists()
            else []
        )
        message = tail[0] if tail else f"the daemon failed; see {log_path}"
        status = "1"
    raise (UserError if status == "2" else ColinuxError)(message)


START_TIMEOUT = 120.0  # a Debian guest boots in seconds; a default guest in a fraction


def _fork_daemon(argv: list[str], *, log_fd: int, keep_fd: int, close_fd: int) -> None:
    """Run ``colinux-daemon ARGV`` in a child of this process, in a session of its own.

    A fork, not an exec: the child has every module loaded already, which
    saves `colinux start` a second interpreter start and its imports."""
    sys.stdout.flush()
    sys.stderr.flush()
    if os.fork() != 0:
        return
    try:
        os.setsid()
        os.close(close_fd)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        os.close(log_fd)
        os.set_inheritable(keep_fd, False)
        _main(daemon_command, argv)  # ends the process
    finally:
        os._exit(70)  # EX_SOFTWARE: never back into the parent's code


def _uptime(seconds: float) -> str:
    seconds = int(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}"


def cmd_list(ns: argparse.Namespace | None = None) -> int:
    if ns is not None and ns.name is not None:
        statuses = [request(check_name(ns.name), {"op": "status"})]
    else:
        statuses = request_all({"op": "status"})
    if ns is not None and ns.json:
        from colinux.console.listing import guests_document

        print(json.dumps(guests_document(statuses, time.time()), indent=2))
        return 0
    if ns is not None and ns.web:  # NAME URL of each guest whose daemon keeps a web console up
        for status in statuses:
            if status.get("web_url"):
                print(f"{status['name']}  {status['web_url']}")
        return 0
    # MEMORY is what the guest was given, RESIDENT what it holds of the host now.
    rows = [("NAME", "STATE", "PID", "MEMORY", "RESIDENT", "UPTIME")]
    now = time.time()
    for status in statuses:
        resident = status.get("resident_kib")
        rows.append(
            (
                str(status["name"]),
                str(status["state"]),
                str(status["pid"]),
                f"{status['memory_mb']}M",
                f"{int(resident) / 1024:.0f}M" if isinstance(resident, int) else "-",
                _uptime(now - float(status["started"])),  # type: ignore[arg-type]
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return 0


def cmd_stop(ns: argparse.Namespace) -> int:
    name = check_name(ns.name)
    gdir = guest_dir(name)
    if not gdir.is_live():
        raise UserError(f"no running guest named {name!r} (see colinux list)")
    request(name, {"op": "stop", "force": ns.force})
    deadline = time.monotonic() + ns.timeout
    forced = ns.force
    while gdir.is_live():
        if time.monotonic() > deadline and not forced:
            with contextlib.suppress(ColinuxError):
                request(name, {"op": "stop", "force": True})
            forced = True
            deadline = time.monotonic() + 10
        elif time.monotonic() > deadline:
            raise ColinuxError(f"guest {name} did not stop")
        time.sleep(0.01)  # a lock test costs microseconds; a guest stops in a tenth of a second
    return 0


def _web_args(ns: argparse.Namespace, prog: str) -> WebOptions:
    web = WebOptions(on=ns.web, port=ns.port, listen=ns.listen)
    web.check(prog)
    return web


def cmd_web_console(ns: argparse.Namespace, line: int | None) -> int:
    """colinux console NAME --web, colinux serial NAME N --web: until Ctrl-C."""
    prog = "colinux console" if line is None else "colinux serial"
    if ns.no_replay or getattr(ns, "pty", False):
        raise UserError(f"{prog}: --web takes neither --no-replay nor --pty")
    web = _web_args(ns, prog)
    name = check_name(ns.name)
    gdir = guest_dir(name)
    if not gdir.is_live():
        raise UserError(f"no running guest named {name!r} (see colinux list)")
    if line is not None:
        check_served_line(name, line)
    from colinux.console.web import ConsoleTarget, Page, serve_web_console
    from colinux.console.web_listener import WebListener

    page = Page.load()
    listener = WebListener.bind(web.listen, web.port)
    return serve_web_console(ConsoleTarget(name, gdir.control_socket, line), listener, page)


def cmd_debug(ns: argparse.Namespace) -> int:
    return follow_debug_command(
        check_name(ns.name),
        on=ns.on,
        off=ns.off,
        components=ns.component,
        facilities=ns.facilities,
        level=ns.level,
        file=ns.file,
        xml=ns.xml,
        live=not ns.no_follow,
    )


def follow_debug_command(
    name: str,
    *,
    on: bool = False,
    off: bool = False,
    components: Sequence[str] = (),
    facilities: str | None = None,
    level: int = 15,
    file: str | None = None,
    xml: bool = False,
    live: bool = True,
    udp: str | None = None,
) -> int:
    from colinux.console.debug import UdpSender, follow_debug, set_collector
    from colinux.control.debug import MAX_LEVEL, Filter, parse_facility_levels

    if (on or off) and (components or facilities or level != 15 or file or xml or udp):
        raise UserError(
            "colinux debug: --on and --off switch the collector; they take no filter or output"
        )
    if file is not None and udp is not None:
        raise UserError("colinux-debug-daemon: -f FILE and -n HOST cannot be combined")
    if on or off:
        state = set_collector(name, on)
        print(f"debug collector of {name}: {'on' if state else 'off'}")
        return 0
    known = ("daemon", "engine", "hub", "cofs", "net", "image", "guest")
    for component in components:
        if component not in known:
            raise UserError(
                f"colinux debug: unknown component {component!r}: expected {', '.join(known)}"
            )
    if not 0 <= level <= MAX_LEVEL:
        raise UserError(f"colinux debug: --level {level}: expected 0..{MAX_LEVEL}")
    wanted = Filter(
        components=frozenset(components),
        facilities=parse_facility_levels(facilities) if facilities else {},
        level=level,
    )
    if udp is not None:
        with UdpSender.to(udp) as sender:
            return follow_debug(name, wanted, out=sender, xml=xml, live=live)
    if file is None:
        return follow_debug(name, wanted, out=sys.stdout, xml=xml, live=live)
    request(name, {"op": "status"})  # no such guest: say so before the file is made
    try:
        out = open(file, "a", encoding="utf-8")  # noqa: SIM115 - closed below
    except OSError as e:
        raise UserError(f"colinux debug: cannot write {file}: {e.strerror}") from None
    with out:
        return follow_debug(name, wanted, out=out, xml=xml, live=live)


DEBUG_DAEMON_USAGE = """\
usage: colinux-debug-daemon [-a NAME] [-d] [-p] [-f FILE | -n HOST[:PORT]] [-s FACILITY=LEVEL,...]

Collect a running guest's debug records (coLinux's colinux-debug-daemon).
  -a NAME   the guest (default: the only one running)
  -d        pull the records (the default; accepted for compatibility)
  -p        write XML records (timestamp, module, file, function, facility, line, level)
  -f FILE   append to FILE instead of standard output
  -n HOST[:PORT]  send each record as a UDP datagram instead (port 63000 by default)
  -s F=L,.. facility levels: misc, network, messages, prints, blockdev, allocations,
            context_switch, pipe, filesystem (or all), LEVEL 0..15
  -h        this help
Runs until the guest stops or Ctrl-C. See also: colinux debug NAME.
"""


def debug_daemon_command(argv: Sequence[str]) -> int:
    words = list(argv)
    name: str | None = None
    options: dict[str, object] = {}
    i = 0
    while i < len(words):
        word = words[i]
        if word in ("-h", "--help"):
            print(DEBUG_DAEMON_USAGE, end="")
            return 0
        if word in ("-d", "-p"):
            options["xml"] = options.get("xml", False) or word == "-p"
        elif word in ("-a", "-f", "-s"):
            if i + 1 >= len(words):
                raise UserError(f"colinux-debug-daemon: option {word} needs a value")
            i += 1
            if word == "-a":
                name = check_name(words[i])
            elif word == "-f":
                options["file"] = words[i]
            else:
                options["facilities"] = words[i]
        elif word == "-n":
            if i + 1 >= len(words):
                raise UserError("colinux-debug-daemon: option -n needs a value")
            i += 1
            options["udp"] = words[i]
        else:
            raise UserError(
                f"colinux-debug-daemon: unknown option {word} (see colinux-debug-daemon -h)"
            )
        i += 1
    if name is None:
        from colinux.control.rundir import list_guests

        live = [g.name for g in list_guests() if g.is_live()]
        if len(live) != 1:
            found = ", ".join(live) or "none"
            raise UserError(f"colinux-debug-daemon: name the guest with -a NAME (running: {found})")
        name = live[0]
    return follow_debug_command(name, **options)  # type: ignore[arg-type]


def cmd_config(ns: argparse.Namespace) -> int:
    if ns.config_command == "check":
        machine = MachineArgs(config=ns.file, drives=ns.drive).build()
        enabled = machine.enabled_block_devices()
        print(
            f"{ns.file}: ok ({machine.memory_mb} MB, {machine.cpus} CPU(s), "
            f"userspace={machine.userspace}, {len(enabled)} block device(s), "
            f"{len(machine.cofs)} cofs share(s), {len(machine.networks)} network card(s))"
        )
        return 0
    if ns.config_command == "convert":
        from colinux.config.load import convert

        print(convert(ns.file, ns.to, warn=_warn), end="")
        return 0
    raise UserError("colinux config: expected an action: check or convert")


def cmd_completion(ns: argparse.Namespace) -> int:
    from colinux import completion

    if ns.guests:
        for name in completion.running_guests():
            print(name)
        return 0
    if ns.shell is None:
        raise UserError("colinux completion: name the shell: bash, zsh or fish")
    print(completion.script(ns.shell, build_parser(), __version__), end="")
    return 0


def version_report() -> str:
    from colinux.engine.uml import default_kernel, kernel_release
    from colinux.guest.image import busybox_version

    path = default_kernel()
    try:
        kernel = kernel_release(path)
    except OSError:
        kernel = "not installed (./setup.sh builds colinux's kernel)"
    lines = [
        f"colinux {__version__}",
        f"colinux-daemon {__version__}",
        f"guest tools {__version__}",
        f"guest kernel (UML) {kernel} ({path})",
        f"default guest userland {busybox_version() or 'busybox not installed (busybox-static)'}",
    ]
    return "\n".join(lines)


def colinux_command(argv: Sequence[str]) -> int:
    if argv[:1] == ["daemon"]:  # how `colinux start` runs the daemon
        return daemon_command(argv[1:])
    verb = 1 if argv[:1] == ["--debug"] else 0
    if argv[verb : verb + 1] in (["exec"], ["shell"]):
        from colinux.console.exec_client import exec_command

        _setup_logging(verb == 1)
        return exec_command(argv[verb:])
    before, job = _split_job(argv)
    parser = build_parser()
    ns, rest = parser.parse_known_args(before)
    # KEY=VALUE words may stand between options: argparse leaves the later ones over.
    for word in rest:
        if word.startswith("-") or ns.command not in ("run", "start"):
            raise UserError(f"colinux: unrecognized argument {word!r} (see colinux --help)")
        ns.settings.append(word)
    _setup_logging(ns.debug)
    if ns.version:
        print(version_report())
        return 0
    if job is not None and ns.command != "run":
        raise UserError("colinux: '-- CMD' is only for 'colinux run'")
    if ns.command == "run":
        return cmd_run(ns, job)
    if ns.command == "start":
        return cmd_start(ns)
    if ns.command == "list":
        return cmd_list(ns)
    if ns.command == "console":
        if ns.web or ns.port or ns.listen is not None:
            return cmd_web_console(ns, None)
        return attach_console(check_name(ns.name), replay=not ns.no_replay)
    if ns.command == "serial":
        if not 0 <= ns.line <= MAX_SERIAL_INDEX:
            raise UserError(
                f"colinux serial: line {ns.line}: expected 0..{MAX_SERIAL_INDEX} "
                f"(ttyS0..ttyS{MAX_SERIAL_INDEX})"
            )
        if ns.web or ns.port or ns.listen is not None:
            return cmd_web_console(ns, ns.line)
        return attach_console(
            check_name(ns.name), replay=not ns.no_replay, line=ns.line, pty=ns.pty
        )
    if ns.command == "debug":
        return cmd_debug(ns)
    if ns.command == "stop":
        return cmd_stop(ns)
    if ns.command == "config":
        return cmd_config(ns)
    if ns.command == "image":
        from colinux.image.commands import image_command

        return image_command(ns)
    if ns.command == "completion":
        return cmd_completion(ns)
    build_parser().print_help()
    return 2


def _setup_logging(debug: bool) -> None:
    level = logging.DEBUG if debug else logging.WARNING
    logging.basicConfig(level=level, format="colinux: %(message)s", stream=sys.stderr)
    # The debug collector lowers the colinux loggers' level: what it collects
    # is its own, not stderr's.
    for handler in logging.getLogger().handlers:
        handler.setLevel(level)


def _main(command: Callable[[Sequence[str]], int], argv: Sequence[str] | None) -> NoReturn:
    # Before anything is made (run directory, TAP device, image, temporary
    # tree): an early SIGTERM or SIGINT then unwinds through every finally.
    process.exit_on_signals()
    trace.mark("client: imports done")
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    programs: dict[Callable[[Sequence[str]], int], str] = {
        daemon_command: "colinux-daemon",
        debug_daemon_command: "colinux-debug-daemon",
    }
    prog = programs.get(command, "colinux")
    try:
        status = command(argv)
    except ColinuxError as e:
        if debug:
            raise
        message = str(e)
        print(
            message if message.startswith(("colinux", prog)) else f"{prog}: {message}",
            file=sys.stderr,
        )
        status = e.exit_status
    except KeyboardInterrupt:
        status = 130
    except BrokenPipeError:  # `colinux debug NAME | head`: the reader has had enough
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit
        status = 128 + 13  # as if killed by SIGPIPE
    trace.mark("client: exit")
    # Everything colinux started has ended and been cleaned up by now (each
    # step's finally): skip the interpreter's teardown, which took 30-90 ms
    # of every `colinux run`, once what is buffered is written.
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    logging.shutdown()
    os._exit(status)


def colinux_main(argv: Sequence[str] | None = None) -> NoReturn:
    _main(colinux_command, argv)


def daemon_main(argv: Sequence[str] | None = None) -> NoReturn:
    _main(daemon_command, argv)


def debug_daemon_main(argv: Sequence[str] | None = None) -> NoReturn:
    _main(debug_daemon_command, argv)


if __name__ == "__main__":
    colinux_main()
