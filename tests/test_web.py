"""The web console: real guests, a real browser (Debian's chromium, driven by Playwright).

`colinux console NAME --web`, `colinux serial NAME N --web` and the daemon's own
(`colinux start NAME --web`, a service's --web): typing and output in the page,
several pages and a text console on one console, replay, resizing, reboot and
stop; the token on every request, the Origin of the WebSocket, loopback only,
and the token in no log. The screenshot is kept under pytest's temporary
directory and copied to COLINUX_TEST_ARTIFACTS (default /tmp/colinux-test-artifacts),
whose path the run prints.
"""

from __future__ import annotations

import base64
import http.client
import importlib.util
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Colinux, OrdinaryUser, reaped, wait_until
from test_daemon import Terminal

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip
ARTIFACTS = Path(os.environ.get("COLINUX_TEST_ARTIFACTS", "/tmp/colinux-test-artifacts"))
TOKEN_RE = re.compile(r"token=([A-Za-z0-9_-]+)")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    assert os.path.exists(CHROMIUM), f"{CHROMIUM} is missing: ./setup.sh --test installs it"
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


class WebPage:
    """One browser tab on a web console, read as a person reads the terminal."""

    def __init__(self, browser: Any, url: str, **context: Any) -> None:
        self.context = browser.new_context(**context)
        self.page = self.context.new_page()
        self.errors: list[str] = []  # the console's errors: a CSP refusal shows here
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.goto(url)

    def state(self) -> str:
        return str(self.page.locator("#state").inner_text())

    def wait_state(self, text: str, timeout: float = 20.0) -> None:
        self.page.wait_for_function(
            "t => document.querySelector('#state').textContent.includes(t)",
            arg=text,
            timeout=timeout * 1000,
        )

    def screen(self) -> str:
        return str(self.page.locator(".xterm-rows").inner_text()).replace("\xa0", " ")

    def wait_text(self, text: str, timeout: float = 20.0) -> None:
        self.page.wait_for_function(
            "t => document.querySelector('.xterm-rows').innerText"
            ".replace(/\\u00a0/g, ' ').includes(t)",
            arg=text,
            timeout=timeout * 1000,
        )

    def wait_match(self, pattern: str, timeout: float = 30.0) -> None:
        """Until the screen matches the JavaScript regular expression ``pattern``."""
        self.page.wait_for_function(
            "p => new RegExp(p).test(document.querySelector('.xterm-rows').innerText"
            ".replace(/\\u00a0/g, ' '))",
            arg=pattern,
            timeout=timeout * 1000,
        )

    def type(self, text: str) -> None:
        self.page.locator(".xterm-helper-textarea").focus()
        self.page.keyboard.type(text)

    def close(self) -> None:
        self.context.close()


def start(colinux: Colinux, name: str, *args: str) -> subprocess.CompletedProcess[bytes]:
    result = colinux.run("start", name, *args)
    assert result.returncode == 0, result.stderr
    return result


def web_console(colinux: Colinux, *args: str) -> tuple[subprocess.Popen[bytes], str]:
    """`colinux ARGS --web` in the background, and the URL it printed first."""
    client = colinux.popen(*args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert client.stdout is not None
    url = client.stdout.readline().decode().strip()
    if not url:
        client.wait(10)
        raise AssertionError(f"no URL: {client.stderr.read() if client.stderr else b''!r}")
    return client, url


def split_url(url: str) -> tuple[str, int, str]:
    match = re.fullmatch(r"http://([0-9.]+):(\d+)/\?token=([A-Za-z0-9_-]+)", url)
    assert match, url
    return match[1], int(match[2]), match[3]


def http_get(
    host: str, port: int, path: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def websocket_status(host: str, port: int, path: str, origin: str | None) -> int:
    """The status of a WebSocket handshake to ``path`` (101: accepted)."""
    headers = {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
        "Sec-WebSocket-Version": "13",
    }
    if origin is not None:
        headers["Origin"] = origin
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        conn.request("GET", path, headers=headers)
        return conn.getresponse().status
    finally:
        conn.close()


def keep_artifact(capsys: pytest.CaptureFixture[str], path: Path) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    kept = ARTIFACTS / path.name
    shutil.copyfile(path, kept)
    with capsys.disabled():  # on the terminal, passing or not
        print(f"\n[test_web] screenshot: {kept} (and {path})")
    return kept


def test_console_in_the_browser_with_a_second_page_and_a_text_console(
    colinux: Colinux, browser: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    start(colinux, "web")
    client, url = web_console(colinux, "--debug", "console", "web", "--web")
    with reaped(client):
        first = WebPage(browser, url, viewport={"width": 1000, "height": 600})
        first.wait_state("connected")
        first.wait_text("web:/root# ")  # the replayed history ends at the prompt
        first.type("echo WEB-$((6*7))\n")
        first.wait_text("WEB-42")
        shot = tmp_path / "web-console.png"
        first.page.screenshot(path=str(shot))
        assert shot.stat().st_size > 1000
        keep_artifact(capsys, shot)

        # A second tab: the history replayed, then live, both ways.
        second = WebPage(browser, url)
        second.wait_text("WEB-42")
        second.wait_state("connected")
        second.type("echo TWO-$((1+1))\n")
        first.wait_text("TWO-2")
        # ... and a text console beside them, on the same console.
        text = Terminal(colinux, "console", "web", "--no-replay")
        text.type(b"echo TXT-$((3*3))\r")
        text.read_until(b"TXT-9")
        first.wait_text("TXT-9")
        second.wait_text("TXT-9")
        text.type(b"\x1d")
        assert text.close() == 0
        second.close()

        # The window size follows the browser's.
        first.type("clear; stty size\n")
        first.wait_match("(^|\\n)\\d+ \\d+\\s*(\\n|$)")
        big = sizes(first)
        first.page.set_viewport_size({"width": 600, "height": 300})

        def resized() -> bool:
            first.type("clear; stty size\n")
            time.sleep(0.5)
            return sizes(first) != big

        wait_until(resized, timeout=15, interval=0.5)
        small = sizes(first)
        assert small[0] < big[0] and small[1] < big[1], (big, small)

        assert first.errors == []  # no script error, nothing refused by the CSP
        assert colinux.run("stop", "web").returncode == 0
        first.wait_state("guest web has stopped")
        first.wait_text("[guest web has stopped]")
        assert client.wait(20) == 0
        assert client.stderr is not None
        err = client.stderr.read()
        assert b"[guest web has stopped]" in err
        assert split_url(url)[2].encode() not in err  # --debug logs no token
        first.close()


def sizes(page: WebPage) -> tuple[int, int]:
    """The rows and columns `stty size` last printed on the page."""
    found = re.findall(r"^(\d+) (\d+)\s*$", page.screen(), re.M)
    return (int(found[-1][0]), int(found[-1][1])) if found else (0, 0)


def test_queries_in_the_replayed_history_go_unanswered(colinux: Colinux, browser: Any) -> None:
    """A page answers the guest's live terminal queries, not those of the history it replays."""
    start(colinux, "ask")
    client, url = web_console(colinux, "console", "ask", "--web")
    with reaped(client):
        first = WebPage(browser, url)
        first.wait_text("ask:/root# ")
        # Where is the cursor? The first page answers at once; cat -v shows the answers
        # that reached the guest once the line ends.
        first.type("stty -echo; printf 'Q\\033[6n'; cat -v\n")
        first.wait_text("Q")
        second = WebPage(browser, url)  # replays the query
        second.wait_state("connected")
        second.type("\n")
        second.wait_match("\\^\\[\\[\\d+;\\d+R")
        first.wait_match("\\^\\[\\[\\d+;\\d+R")
        answers = re.findall(r"\^\[\[\d+;\d+R", first.screen())
        assert len(answers) == 1, first.screen()
        second.close()
        first.close()
        assert colinux.run("stop", "ask").returncode == 0
        assert client.wait(20) == 0


def test_daemon_keeps_a_web_console_across_a_reboot(colinux: Colinux, browser: Any) -> None:
    started = start(colinux, "boot", "--web")
    out = started.stdout.decode()
    url = out.split("web console: ")[1].split()[0]
    host, port, token = split_url(url)
    assert host == "127.0.0.1"
    url_file = colinux.run_dir / "boot" / "web.url"
    assert url_file.read_text().strip() == url
    assert stat.S_IMODE(url_file.stat().st_mode) == 0o600
    listed = colinux.run("list", "--web")
    assert listed.stdout.decode().split() == ["boot", url]

    page = WebPage(browser, url)
    page.wait_text("boot:/root# ")
    page.type("clear\n")
    page.wait_match("^(?![\\s\\S]*Run /init)")  # the first boot's messages are gone
    page.type("reboot\n")
    # A new engine, on the same page: its boot, its banner, its prompt.
    page.wait_match("Run /init[\\s\\S]*Enter 'help'[\\s\\S]*boot:/root# ")
    page.type("echo AFTER-$((2+3))\n")
    page.wait_text("AFTER-5")
    assert page.state() == "connected"
    assert colinux.run("stop", "boot").returncode == 0
    page.wait_state("guest boot has stopped")
    assert not url_file.exists()
    assert page.errors == []
    page.close()
    log = colinux.run_dir / "boot.log"
    assert not log.exists() or token.encode() not in log.read_bytes()
    assert wait_until(lambda: http_refused("127.0.0.1", port))


def http_refused(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def test_token_host_and_origin_are_required(colinux: Colinux, browser: Any) -> None:
    start(colinux, "sec")
    client, url = web_console(colinux, "console", "sec", "--web", "--port", "0")
    with reaped(client):
        host, port, token = split_url(url)
        assert len(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))) * 8 >= 128
        status, headers, body = http_get(host, port, f"/?token={token}")
        assert status == 200
        csp = headers["Content-Security-Policy"]
        assert "script-src 'self';" in csp and "default-src 'none'" in csp
        assert "unsafe" not in csp and "<script>" not in body.decode()  # no inline script
        assert headers["Server"] == "colinux"
        for path in ("/", "/xterm.js", "/console.js", "/ws", "/nothing"):
            assert http_get(host, port, path)[0] == 401, path
            assert http_get(host, port, f"{path}?token=x{token[1:]}")[0] == 403, path
            assert http_get(host, port, f"{path}?token=")[0] == 401, path
        assert http_get(host, port, f"/xterm.js?token={token}")[0] == 200
        assert http_get(host, port, f"/nothing?token={token}")[0] == 404
        # A page of another site whose name resolves here (DNS rebinding).
        rebound = http_get(host, port, f"/?token={token}", {"Host": f"evil.example:{port}"})
        assert rebound[0] == 403
        assert http_get(host, port, f"/?token={token}", {"Host": f"localhost:{port}"})[0] == 200

        ws = f"/ws?token={token}"
        assert websocket_status(host, port, ws, f"http://{host}:{port}") == 101
        assert websocket_status(host, port, ws, None) == 403
        assert websocket_status(host, port, ws, "http://evil.example") == 403
        assert websocket_status(host, port, ws, f"http://{host}:{port + 1}") == 403
        assert websocket_status(host, port, "/ws", f"http://{host}:{port}") == 401

        # In a real browser: a page of another origin that knows the token still
        # cannot open the WebSocket.
        context = browser.new_context()
        try:
            page = context.new_page()
            # Chromium takes *.localhost for loopback itself, and the route answers: no DNS.
            evil = "http://evil.localhost/"
            page.route(evil, lambda route: route.fulfill(body="<p>evil</p>"))
            page.goto(evil)
            outcome = page.evaluate(
                """url => new Promise(done => {
                    const ws = new WebSocket(url);
                    ws.onopen = () => done("open");
                    ws.onclose = () => done("refused");
                })""",
                f"ws://{host}:{port}{ws}",
            )
            assert outcome == "refused"
        finally:
            context.close()

        client.send_signal(signal.SIGINT)  # Ctrl-C: the web console ends, the guest runs on
        assert client.wait(20) == 0
        assert client.stderr is not None
        assert b"[web console closed; sec keeps running]" in client.stderr.read()
    assert http_refused(host, port)
    assert colinux.run("stop", "sec").returncode == 0


def listening(port: int) -> list[str]:
    """The local addresses of the sockets listening on ``port`` (from /proc/net)."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, _, hex_port = local.partition(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                found.append(address)
    return found


def test_loopback_unless_listen_says_otherwise(colinux: Colinux) -> None:
    start(colinux, "lo")
    client, url = web_console(colinux, "console", "lo", "--web")
    with reaped(client):
        _, port, token = split_url(url)
        assert listening(port) == ["0100007F"]  # 127.0.0.1 and nothing else
        client.send_signal(signal.SIGTERM)
        assert client.wait(20) == 0

    # --listen: there only (127.0.0.2 stands for another address: no traffic leaves).
    client, url = web_console(colinux, "console", "lo", "--web", "--listen", "127.0.0.2")
    with reaped(client):
        host, port, token = split_url(url)
        assert host == "127.0.0.2"
        assert listening(port) == ["0200007F"]
        assert http_get(host, port, f"/?token={token}")[0] == 200
        assert http_refused("127.0.0.1", port)
        client.send_signal(signal.SIGINT)
        assert client.wait(20) == 0
    assert colinux.run("stop", "lo").returncode == 0


def test_serial_line_in_the_browser(colinux: Colinux, browser: Any) -> None:
    start(colinux, "ser", "ttys1=daemon")
    client, url = web_console(colinux, "serial", "ser", "1", "--web")
    with reaped(client):
        page = WebPage(browser, url)
        assert page.page.title() == "ser ttyS1 - colinux"
        page.wait_text("ser login: ")
        page.type("root\n")
        page.wait_text("ser:/root# ")
        page.type("echo SER-$((5*5)) $(tty)\n")
        page.wait_text("SER-25 /dev/ttyS1")
        assert colinux.run("stop", "ser").returncode == 0
        page.wait_state("guest ser has stopped")
        assert client.wait(20) == 0
        page.close()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("console", "ghost", "--web"),
         "colinux: no running guest named 'ghost' (see colinux list)"),
        (("console", "bad", "--web", "--port", "70000"),
         "colinux: --port 70000: expected 0..65535 (0: any free port)"),
        (("console", "bad", "--web", "--listen", "nowhere"),
         "colinux: --listen nowhere: expected an IP address of this machine "
         "(127.0.0.1, ::1, 0.0.0.0 for every interface)"),
        (("console", "bad", "--port", "8080"),
         "colinux console: --port and --listen go with --web"),
        (("console", "bad", "--web", "--no-replay"),
         "colinux console: --web takes neither --no-replay nor --pty"),
        (("start", "bad", "--listen", "::1"), "colinux start: --port and --listen go with --web"),
        (("console", "bad", "--web", "--port", "x"),
         "colinux console: argument --port: invalid int value: 'x' (see colinux console --help)"),
    ],
)  # fmt: skip
def test_bad_web_options(colinux: Colinux, args: tuple[str, ...], message: str) -> None:
    result = colinux.run(*args)
    assert result.returncode == 2, result
    assert result.stderr.decode().strip().splitlines() == [message]
    assert result.stdout == b""


def test_taken_port_and_foreign_address_start_nothing(colinux: Colinux) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = colinux.run("start", "busy", "--web", "--port", str(port))
        assert result.returncode == 2
        assert result.stderr.decode().strip().splitlines() == [
            f"colinux: --port {port}: 127.0.0.1:{port} is already in use"
        ]
        assert not (colinux.run_dir / "busy").exists()  # no daemon was started
    # 192.0.2.1 (TEST-NET-1) is no address of this machine: binding fails, nothing is sent.
    result = colinux.run("start", "far", "--web", "--listen", "192.0.2.1")
    assert result.returncode == 2
    assert result.stderr.decode().strip().splitlines() == [
        "colinux: --listen 192.0.2.1: not an address of this machine"
    ]
    start(colinux, "ser2")
    missing = colinux.run("serial", "ser2", "0", "--web")
    assert missing.returncode == 2
    assert missing.stderr.decode().strip().splitlines() == [
        "colinux: guest ser2 has no serial line ttyS0 served by its daemon "
        "(served: none; start it with ttys0=daemon)"
    ]
    assert colinux.run("stop", "ser2").returncode == 0


def test_service_keeps_a_web_console(colinux: Colinux, tmp_path: Path) -> None:
    units = tmp_path / "units"
    colinux.env["COLINUX_UNIT_DIR"] = str(units)
    (colinux.cwd / "web.xml").write_text('<colinux>\n    <memory size="64"></memory>\n</colinux>\n')
    args = ("web", "-c", "web.xml", "--web", "--port", "8123", "--listen", "127.0.0.1")
    installed = colinux.run("--install-service", *args, program="colinux-daemon")
    assert installed.returncode == 0, installed.stderr
    unit = (units / "colinux-web.service").read_text()
    assert " --web --port 8123 --listen 127.0.0.1\n" in unit
    assert token_free(unit)

    # What the unit runs, in the foreground: the daemon serves the page itself.
    daemon = colinux.popen(
        "--run-service", "web", "-c", "web.xml", "--web", program="colinux-daemon",
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    with reaped(daemon):
        url_file = colinux.run_dir / "web" / "web.url"
        assert wait_until(url_file.exists, timeout=30)
        host, port, token = split_url(url_file.read_text().strip())
        assert http_get(host, port, f"/?token={token}")[0] == 200
        assert http_get(host, port, "/")[0] == 401
        daemon.send_signal(signal.SIGTERM)
        out, err = daemon.communicate(timeout=30)
        assert daemon.returncode == 0, err
        assert token.encode() not in out + err  # a service's output is the journal's
    assert http_refused(host, port)


def token_free(text: str) -> bool:
    return TOKEN_RE.search(text) is None


# aiohttp and what it imports, for the ordinary user's copy of colinux.
WEB_STACK = (
    "aiohttp", "aiohappyeyeballs", "aiosignal", "attr", "frozenlist", "idna", "multidict",
    "propcache", "typing_extensions", "yarl",
)  # fmt: skip


def test_daemon_web_console_as_an_ordinary_user(ordinary_user: OrdinaryUser) -> None:
    for module in WEB_STACK:
        spec = importlib.util.find_spec(module)
        assert spec is not None and spec.origin is not None, module
        origin = Path(spec.origin)
        if origin.name == "__init__.py":
            shutil.copytree(origin.parent, ordinary_user.lib / module)
        else:
            shutil.copyfile(origin, ordinary_user.lib / origin.name)
    for path in [ordinary_user.lib, *ordinary_user.lib.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    started = ordinary_user.run("start", "mine", "--web")
    try:
        assert started.returncode == 0, started.stderr
        url = started.stdout.decode().split("web console: ")[1].split()[0]
        host, port, token = split_url(url)
        assert http_get(host, port, f"/?token={token}")[0] == 200
        assert http_get(host, port, "/?token=wrong")[0] == 403
        listed = ordinary_user.run("list", "--web").stdout.decode().split()
        assert listed == ["mine", url]
    finally:
        stopped = ordinary_user.run("stop", "mine")
    assert stopped.returncode == 0, stopped.stderr
