"""Shell completion for ``colinux``: bash, zsh and fish scripts made from its argument
parser and the settings table.

    colinux completion bash > ~/.local/share/bash-completion/completions/colinux
    colinux completion zsh > ~/.zfunc/_colinux      # fpath+=(~/.zfunc) before compinit
    colinux completion fish > ~/.config/fish/completions/colinux.fish

A script completes the verbs (and the actions of ``config`` and ``image``), each
verb's options and their values, the names of running guests after the verbs
that take one (``console``, ``stop``, ``exec``...), and after ``run`` and
``start`` the machine settings of ``config.settings``: ``mem=``, ``cobd0=``,
``eth0=`` and their values (``eth0=slirp``, a file for ``cobd0=``, a directory
for ``cofs0=``). It holds what the parser and the table say, so it is made again
with each colinux (``commands`` reads the parser); only the running guests are
asked for as the user types, from ``colinux completion --guests``.

The bash and zsh scripts share one function that works out what the word at the
cursor is (``_colinux_candidates``, in the common subset of both shells); each
shell's own function then offers it. fish has its own (``__colinux_candidates``).
"""

from __future__ import annotations

import argparse
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass

from colinux.config import settings
from colinux.errors import UserError

SHELLS = ("bash", "zsh", "fish")

# The verbs whose NAME is a running guest's ("start NAME" names a new one). A verb
# here that the parser does not have yet costs nothing.
GUEST_VERBS = frozenset({"console", "debug", "exec", "list", "serial", "shell", "stop"})

# What completes a value or a positional word.
NONE, GUEST, FILE, DIRECTORY, SETTINGS = "none", "guest", "file", "dir", "settings"
_FILE_METAVARS = frozenset({"FILE", "PIDFILE", "PATH", "COW"})
_FILE_DESTS = frozenset({"config", "file", "path", "cow", "ssh_key"})


@dataclass(frozen=True)
class Command:
    """One command of the parser (``""`` is colinux itself, ``"config check"``), as
    completion sees it."""

    path: str
    subcommands: tuple[tuple[str, str], ...]  # (name, help)
    options: tuple[str, ...]
    valued: tuple[tuple[str, str], ...]  # (option taking a value, what completes it)
    positionals: tuple[str, ...]  # what completes each positional word, in order
    repeats: bool  # the last positional takes any number of words


def _choices(values: object) -> str:
    return "choice:" + " ".join(str(v) for v in values)  # type: ignore[attr-defined]


def _value_kind(action: argparse.Action) -> str:
    if action.choices is not None:
        return _choices(action.choices)
    if action.metavar in _FILE_METAVARS or action.dest in _FILE_DESTS:
        return FILE
    return NONE


def _positional_kind(verb: str, action: argparse.Action) -> str:
    if action.dest == "settings":
        return SETTINGS
    if action.dest == "name":
        return GUEST if verb in GUEST_VERBS else NONE
    return _value_kind(action)


def commands(parser: argparse.ArgumentParser) -> list[Command]:
    """Every command of ``parser`` (sub-parsers included), with what completes its words."""
    return list(_walk(parser, ""))


def _walk(parser: argparse.ArgumentParser, path: str) -> Iterator[Command]:
    subcommands: list[tuple[str, str]] = []
    options: list[str] = []
    valued: list[tuple[str, str]] = []
    positionals: list[str] = []
    repeats = False
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            for name, sub in action.choices.items():
                subcommands.append((name, helps.get(name, "")))
                yield from _walk(sub, f"{path} {name}".strip())
        elif action.help == argparse.SUPPRESS:
            continue
        elif action.option_strings:
            options += action.option_strings
            if action.nargs != 0:
                valued += [(option, _value_kind(action)) for option in action.option_strings]
        else:
            positionals.append(_positional_kind(path.split(" ")[0], action))
            repeats = action.nargs in ("*", "+", argparse.REMAINDER)
    yield Command(
        path, tuple(subcommands), tuple(options), tuple(valued), tuple(positionals), repeats
    )


def _setting_patterns() -> list[tuple[str, str, str]]:
    """(shell pattern of a KEY, what completes its value, its value words) per setting."""
    patterns = []
    for setting in settings.SETTINGS:
        if isinstance(setting, settings.Scalar):
            pattern = setting.key
        elif isinstance(setting, settings.Devices):
            pattern = f"{setting.key}[0-9]*"
            if setting is settings.BLOCK_DEVICES:
                pattern += "|hd[a-z]*|sd[a-z]*"  # hda1=PATH: a disk with a guest name
        else:
            continue
        what = {settings.FILES: FILE, settings.DIRECTORIES: DIRECTORY}.get(setting.complete, "")
        patterns.append((pattern, what, " ".join(setting.choices)))
    return patterns


def _first_keys() -> list[str]:
    """The keys offered before a key is begun: every scalar's, and device 0's."""
    keys = []
    for setting in settings.SETTINGS:
        if isinstance(setting, settings.Scalar):
            keys.append(f"{setting.key}=")
        elif isinstance(setting, settings.Devices):
            keys.append(f"{setting.indexed_keys()[0]}=")
    return keys


def _help_of(key: str) -> str:
    stem = key.rstrip("=0123456789")
    row = settings.BY_KEY.get(stem)
    return row.forms[0].help if row is not None else ""


# --- bash and zsh ----------------------------------------------------------------------


def _q(text: str) -> str:
    return shlex.quote(text)


def _case(function: str, arms: list[tuple[str, str]], default: str) -> str:
    """A shell function whose ``case $1`` runs one arm; patterns are quoted words."""
    lines = [f"{function}() {{", "    case $1 in"]
    lines += [f"        {pattern}) {body};;" for pattern, body in arms]
    lines += [f"        *) {default};;", "    esac", "}"]
    return "\n".join(lines)


def _posix_data(parser: argparse.ArgumentParser) -> str:
    found = commands(parser)
    subcommands = _case(
        "_colinux_subcommands",
        [
            (_q(c.path), f"REPLY={_q(' '.join(n for n, _ in c.subcommands))}")
            for c in found
            if c.subcommands
        ],
        "REPLY=''",
    )
    options = _case(
        "_colinux_options",
        [(_q(c.path), f"REPLY={_q(' '.join(c.options))}") for c in found if c.options],
        "REPLY=''",
    )
    # Returns 1 for an option that takes no value, else sets what completes it.
    valued = _case(
        "_colinux_option",
        [(_q(f"{c.path} {o}"), f"REPLY={_q(kind)}") for c in found for o, kind in c.valued],
        "return 1",
    )
    arms = []
    for c in found:
        if not c.positionals:
            continue
        inner = [f"{i}) REPLY={_q(kind)};;" for i, kind in enumerate(c.positionals[:-1])]
        last = len(c.positionals) - 1
        rest = f"*) REPLY={_q(c.positionals[-1] if c.repeats else NONE)};;"
        inner += [f"{last}) REPLY={_q(c.positionals[-1])};;", rest]
        arms.append((_q(c.path), f"case $2 in {' '.join(inner)} esac"))
    positional = _case("_colinux_positional", arms, f"REPLY={NONE}")
    values = _case(
        "_colinux_setting_value",
        [
            (pattern, f"_colinux_what={_q(what)} _colinux_list={_q(words)}")
            for pattern, what, words in _setting_patterns()
        ],
        "_colinux_what='' _colinux_list=''",
    )
    device_keys = "|".join(f"{s.key}*" for s in settings.DEVICES)
    return "\n\n".join(
        [
            f"_colinux_first_keys={_q(' '.join(_first_keys()))}",
            f"_colinux_all_keys={_q(' '.join(settings.completion_keys()))}",
            subcommands,
            options,
            valued,
            positional,
            values,
            _POSIX_CANDIDATES.replace("@DEVICE_KEYS@", device_keys),
        ]
    )


# In the subset of the shell language bash and zsh share (zsh with shwordsplit): no
# arrays, no ((...)), no variable called path (zsh's is $PATH).
_POSIX_CANDIDATES = r"""# What the word being completed is: sets _colinux_kind to words, keys,
# guests, files, dirs, at (a file after @) or value (of the setting
# _colinux_key: the words in _colinux_list, and files or dirs as _colinux_what
# says), and _colinux_list.
# $1: the word being completed; then the words before it, the program's first.
_colinux_candidates() {
    if [ -n "${ZSH_VERSION-}" ]; then setopt localoptions shwordsplit; fi
    local cur=$1 cmd="" npos=0 pending="" w sub
    shift 2
    _colinux_kind="" _colinux_list="" _colinux_key="" _colinux_what=""
    for w in "$@"; do
        if [ -n "$pending" ]; then pending=""; continue; fi
        if [ "$w" = "--" ]; then _colinux_kind=files; return 0; fi  # the guest's command
        case $w in
            -*=*) continue;;
            -*) if _colinux_option "$cmd $w"; then pending=$w; fi; continue;;
        esac
        if [ "$npos" = 0 ]; then
            _colinux_subcommands "$cmd"
            for sub in $REPLY; do
                if [ "$sub" = "$w" ]; then cmd=${cmd:+$cmd }$w; continue 2; fi
            done
        fi
        npos=$((npos + 1))
    done
    if [ -n "$pending" ]; then
        _colinux_option "$cmd $pending"
        _colinux_kind_of "$REPLY"
        return 0
    fi
    case $cur in
        -*) _colinux_options "$cmd"; _colinux_kind=words _colinux_list=$REPLY; return 0;;
    esac
    _colinux_subcommands "$cmd"
    if [ -n "$REPLY" ] && [ "$npos" = 0 ]; then
        _colinux_kind=words _colinux_list=$REPLY
        return 0
    fi
    _colinux_positional "$cmd" "$npos"
    if [ "$REPLY" != settings ]; then _colinux_kind_of "$REPLY"; return 0; fi
    case $cur in
        @*) _colinux_kind=at;;
        *=*) _colinux_kind=value _colinux_key=${cur%%=*}; _colinux_setting_value "$_colinux_key";;
        @DEVICE_KEYS@) _colinux_kind=keys _colinux_list=$_colinux_all_keys;;
        *) _colinux_kind=keys _colinux_list=$_colinux_first_keys;;
    esac
}

_colinux_kind_of() {
    case $1 in
        guest) _colinux_kind=guests;;
        file) _colinux_kind=files;;
        dir) _colinux_kind=dirs;;
        choice:*) _colinux_kind=words _colinux_list=${1#choice:};;
        *) _colinux_kind="";;
    esac
}"""

_BASH = r"""# bash completion for colinux @VERSION@, made by `colinux completion bash`.
# Install: colinux completion bash > ~/.local/share/bash-completion/completions/colinux
# (or, in ~/.bashrc: source <(colinux completion bash)).

@DATA@

_colinux_compgen() {
    local reply
    while IFS= read -r reply; do COMPREPLY+=("$reply"); done < <(compgen "$@")
}

_colinux() {
    local line=${COMP_LINE:0:COMP_POINT} cur="" value i c keep=""
    local -a words
    read -ra words <<<"$line"
    if [[ $line != *[[:space:]] ]]; then
        cur=${words[${#words[@]}-1]}
        unset 'words[${#words[@]}-1]'
    fi
    ((${#words[@]})) || return 0
    _colinux_candidates "$cur" "${words[@]}"
    COMPREPLY=()
    case $_colinux_kind in
        words) _colinux_compgen -W "$_colinux_list" -- "$cur";;
        keys) compopt -o nospace 2>/dev/null; _colinux_compgen -W "$_colinux_list" -- "$cur";;
        guests) _colinux_compgen -W "$("${words[0]}" completion --guests 2>/dev/null)" -- "$cur";;
        files) compopt -o filenames 2>/dev/null; _colinux_compgen -f -- "$cur";;
        dirs) compopt -o filenames 2>/dev/null; _colinux_compgen -d -- "$cur";;
        at) _colinux_compgen -f -- "${cur#@}"; COMPREPLY=("${COMPREPLY[@]/#/@}");;
        value)
            value=${cur#*=}
            [[ -n $_colinux_list ]] && _colinux_compgen -W "$_colinux_list" -- "$value"
            case $_colinux_what in
                file) compopt -o filenames 2>/dev/null; _colinux_compgen -f -- "$value";;
                dir) compopt -o filenames 2>/dev/null; _colinux_compgen -d -- "$value";;
            esac
            ((${#COMPREPLY[@]})) && COMPREPLY=("${COMPREPLY[@]/#/$_colinux_key=}");;
    esac
    # Candidates are whole words; bash replaces only the part of the word after its
    # last COMP_WORDBREAKS character (= and @ by default), so that much goes.
    for ((i = ${#cur} - 1; i >= 0; i--)); do
        c=${cur:i:1}
        if [[ $COMP_WORDBREAKS == *"$c"* ]]; then keep=${cur:0:i+1}; break; fi
    done
    if [[ -n $keep && ${#COMPREPLY[@]} -gt 0 ]]; then COMPREPLY=("${COMPREPLY[@]#"$keep"}"); fi
    return 0
}

complete -F _colinux colinux
"""

_ZSH = r"""#compdef colinux
# zsh completion for colinux @VERSION@, made by `colinux completion zsh`.
# Install: colinux completion zsh > ~/.zfunc/_colinux, with fpath+=(~/.zfunc) before
# compinit in ~/.zshrc (or, after compinit: source <(colinux completion zsh)).

@DATA@

_colinux() {
    _colinux_candidates "$PREFIX" "${(@)words[1,CURRENT-1]}"
    case $_colinux_kind in
        words) compadd -- ${=_colinux_list};;
        keys) compadd -S '' -- ${=_colinux_list};;
        guests) compadd -- ${(f)"$("$words[1]" completion --guests 2>/dev/null)"};;
        files) _files;;
        dirs) _files -/;;
        at) compset -P '@'; _files;;
        value)
            compset -P '*='
            [[ -n $_colinux_list ]] && compadd -- ${=_colinux_list}
            case $_colinux_what in
                file) _files;;
                dir) _files -/;;
            esac;;
    esac
}

if [[ $funcstack[1] == _colinux ]]; then
    _colinux "$@"
else
    compdef _colinux colinux
fi
"""


# --- fish ------------------------------------------------------------------------------


def _fq(text: str) -> str:
    """A fish single-quoted word."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _switch(function: str, arms: list[tuple[str, list[str]]], default: list[str]) -> str:
    lines = [f"function {function}", "    switch $argv[1]"]
    for pattern, body in arms:
        lines.append(f"        case {_fq(pattern)}")
        lines += [f"            {line}" for line in body]
    lines.append("        case '*'")
    lines += [f"            {line}" for line in default]
    lines += ["    end", "end"]
    return "\n".join(lines)


def _fish_lines(entries: list[tuple[str, str]]) -> list[str]:
    """printf lines of WORD<tab>DESCRIPTION, as fish's completion functions print them."""
    if not entries:
        return ["return 0"]
    words = " ".join(f"{_fq(word)} {_fq(text)}" for word, text in entries)
    return [f"printf '%s\\t%s\\n' {words}"]


_FISH_GLOB = re.compile(r"\[[^]]*\]\*")


def _fish_data(parser: argparse.ArgumentParser) -> str:
    found = commands(parser)
    subcommands = _switch(
        "__colinux_subcommands",
        [(c.path, _fish_lines(list(c.subcommands))) for c in found if c.subcommands],
        ["return 0"],
    )
    options = _switch(
        "__colinux_options",
        [(c.path, _fish_lines([(o, "") for o in c.options])) for c in found if c.options],
        ["return 0"],
    )
    valued = _switch(
        "__colinux_option",
        [(f"{c.path} {o}", [f"echo {_fq(kind)}"]) for c in found for o, kind in c.valued],
        ["return 1"],
    )
    arms = []
    for c in found:
        if not c.positionals:
            continue
        body = [f"set -l kinds {' '.join(_fq(k) for k in c.positionals)}"]
        body += [
            "set -l i (math $argv[2] + 1)",
            "if test $i -gt (count $kinds)",
            f"    {'set i (count $kinds)' if c.repeats else 'echo none; return 0'}",
            "end",
            "echo $kinds[$i]",
        ]
        arms.append((c.path, body))
    positional = _switch("__colinux_positional", arms, [f"echo {NONE}"])
    # fish's case has * and ? but no [...]: hd* stands for hd[a-z]*, cobd* for cobd[0-9]*.
    value_lines = ["function __colinux_setting_value", "    switch $argv[1]"]
    for pattern, what, words in _setting_patterns():
        globs = " ".join(_fq(_FISH_GLOB.sub("*", p)) for p in pattern.split("|"))
        value_lines.append(f"        case {globs}")
        value_lines.append(f"            printf '%s\\n' {_fq(what or '-')} {_fq(words or '-')}")
    value_lines += ["        case '*'", "            printf '%s\\n' - -", "    end", "end"]
    values = "\n".join(value_lines)
    first = _fish_lines([(key, _help_of(key)) for key in _first_keys()])
    every = _fish_lines([(key, _help_of(key)) for key in settings.completion_keys()])
    device_patterns = " ".join(_fq(f"{s.key}*") for s in settings.DEVICES)
    return "\n\n".join(
        [
            subcommands,
            options,
            valued,
            positional,
            values,
            "function __colinux_first_keys\n    " + "\n    ".join(first) + "\nend",
            "function __colinux_all_keys\n    " + "\n    ".join(every) + "\nend",
            _FISH_CANDIDATES.replace("@DEVICE_KEYS@", device_patterns),
        ]
    )


_FISH_CANDIDATES = r"""function __colinux_words
    # The words of $argv[2..] (WORD or WORD<tab>HELP lines) that begin with $argv[1].
    for entry in $argv[2..-1]
        if string match -q -- "$argv[1]*" $entry
            echo $entry
        end
    end
end

function __colinux_candidates
    set -l tokens (commandline -opc)
    set -l cur (commandline -ct)
    set -l cmd ''
    set -l npos 0
    set -l pending ''
    for w in $tokens[2..-1]
        if test -n "$pending"
            set pending ''
            continue
        end
        if test "$w" = '--'
            __fish_complete_path $cur  # the guest's command
            return 0
        end
        switch $w
            case '-*=*'
                continue
            case '-*'
                if __colinux_option "$cmd $w" >/dev/null
                    set pending $w
                end
                continue
        end
        if test $npos -eq 0
            if contains -- $w (__colinux_subcommands $cmd | string replace -r '\t.*' '')
                set cmd (string trim -- "$cmd $w")
                continue
            end
        end
        set npos (math $npos + 1)
    end
    set -l kind
    if test -n "$pending"
        set kind (__colinux_option "$cmd $pending")
    else if string match -q -- '-*' $cur
        __colinux_words $cur (__colinux_options $cmd)
        return 0
    else if test $npos -eq 0; and test -n "$(__colinux_subcommands $cmd)"
        __colinux_words $cur (__colinux_subcommands $cmd)
        return 0
    else
        set kind (__colinux_positional $cmd $npos)
    end
    switch $kind
        case guest
            __colinux_words $cur ($tokens[1] completion --guests 2>/dev/null)
        case file
            __fish_complete_path $cur
        case dir
            __fish_complete_directories $cur
        case 'choice:*'
            __colinux_words $cur (string split ' ' -- (string replace 'choice:' '' -- $kind))
        case settings
            switch $cur
                case '@*'
                    __fish_complete_path (string sub -s 2 -- $cur) | string replace -r '^' '@'
                case '*=*'
                    set -l key (string replace -r '=.*' '' -- $cur)
                    set -l value (string replace -r '^[^=]*=' '' -- $cur)
                    set -l what (__colinux_setting_value $key)
                    set -l found
                    if test "$what[2]" != '-'
                        set found (__colinux_words $value (string split ' ' -- $what[2]))
                    end
                    switch $what[1]
                        case file
                            set found $found (__fish_complete_path $value)
                        case dir
                            set found $found (__fish_complete_directories $value)
                    end
                    for entry in $found
                        echo "$key=$entry"
                    end
                case @DEVICE_KEYS@
                    __colinux_words $cur (__colinux_all_keys)
                case '*'
                    __colinux_words $cur (__colinux_first_keys)
            end
    end
end

complete -c colinux -f -a '(__colinux_candidates)'
"""

_FISH = """# fish completion for colinux @VERSION@, made by `colinux completion fish`.
# Install: colinux completion fish > ~/.config/fish/completions/colinux.fish

@DATA@
"""


def script(shell: str, parser: argparse.ArgumentParser, version: str) -> str:
    """The completion script for ``shell`` (bash, zsh or fish)."""
    if shell == "bash":
        template, data = _BASH, _posix_data(parser)
    elif shell == "zsh":
        template, data = _ZSH, _posix_data(parser)
    elif shell == "fish":
        template, data = _FISH, _fish_data(parser)
    else:
        raise UserError(f"colinux completion: {shell!r}: expected bash, zsh or fish")
    return template.replace("@VERSION@", version).replace("@DATA@", data)


def running_guests() -> list[str]:
    """The names ``colinux completion --guests`` prints: the guests running now."""
    from colinux.control.rundir import list_guests

    return [guest.name for guest in list_guests() if guest.is_live()]
