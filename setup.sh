#!/bin/sh
# Set up colinux on Debian 12: the system packages it runs on, a virtualenv
# in .venv with colinux installed (editable) and its test tools, the web
# console's xterm.js (npm) and colinux's own kernel in .venv/lib/colinux/linux.
#   ./setup.sh          set up
#   ./setup.sh --test   set up, then run the whole test suite (lint, types, tests)
set -eu
cd "$(dirname "$0")"

# user-mode-linux: the engine; busybox-static: the default guest's userland;
# bubblewrap: the engine's sandbox; e2fsprogs: disk images for tests;
# python3-venv: the virtualenv; util-linux: mkswap and runuser for the tests;
# systemd: systemd-analyze, which checks the service units colinux writes;
# slirp4netns, passt, iproute2: unprivileged slirp networking for guests
# (passt where /dev/net/tun is closed to the user);
# mmdebstrap, uidmap: Debian root images (colinux image root; uidmap for
# non-root builds); openssh-client: the tests log in to a Debian guest;
# gcc, libc6-dev, make, flex, bison, bc, patch, xz-utils: colinux's kernel,
# built from Debian's linux-source-7.2 (kernel/build.py; user-mode-linux
# stays for its 6.1 kernel, which kernel= can still choose).
packages="user-mode-linux busybox-static bubblewrap e2fsprogs python3-venv util-linux systemd slirp4netns passt iproute2 mmdebstrap uidmap openssh-client gcc libc6-dev make flex bison bc patch xz-utils"
# npm: xterm.js for the web console's page (any nodejs that has npm will do).
command -v npm >/dev/null || packages="$packages npm"
# For the tests only: chromium, as the web console's tests load the page in a
# real (headless) browser; zsh, fish: they run colinux's completion scripts.
if [ "${1:-}" = "--test" ]; then packages="$packages chromium zsh fish"; fi
missing=""
for p in $packages; do
    dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "setup: installing Debian packages:$missing" >&2
    if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq $missing >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
    /usr/bin/python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
# The web console's page: xterm.js and its fit addon, pinned by package-lock.json,
# into src/colinux/console/webpage/node_modules; again only when the lock changed.
web=src/colinux/console/webpage
if ! cmp -s "$web/package-lock.json" "$web/node_modules/.colinux-installed"; then
    (cd "$web" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
    cp "$web/package-lock.json" "$web/node_modules/.colinux-installed"
fi
# Bytecode now, not at each start: where it cannot be written (another user's
# checkout, PYTHONDONTWRITEBYTECODE) every colinux command compiled its
# modules again, about 60 ms of each `colinux run`.
.venv/bin/python -m compileall -q src
# colinux's kernel: about 5 minutes the first time, cached after that.
.venv/bin/python kernel/build.py --install .venv/lib/colinux/linux

if [ "${1:-}" = "--test" ]; then
    .venv/bin/ruff check src tests bench kernel
    .venv/bin/ruff format --check src tests bench kernel
    .venv/bin/mypy
    exec .venv/bin/python -m pytest -q tests
fi
