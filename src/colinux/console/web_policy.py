"""What the web console lets in, as pure functions: tokens, Host, Origin, headers, messages.

The web console (``console/web.py``) asks these before it serves anything::

    token_status(request_token, TOKEN)     # 200, or 401 with none, 403 with a wrong one
    host_allowed("127.0.0.1:8080", loopback_only=True)   # DNS rebinding defence
    origin_allowed("http://127.0.0.1:8080", "127.0.0.1:8080")   # the WebSocket's
    security_headers(nonce)                # CSP and friends, on every response
    parse_page_message('{"op":"resize","rows":24,"cols":80}')   # -> (24, 80)

The token is compared with ``hmac.compare_digest``, so how long a refusal
takes says nothing of how much of a guess was right.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import secrets

TOKEN_BYTES = 32  # 256 bits, at least the 128 the issue asks for
MAX_ROWS = MAX_COLS = 1000  # a window larger than this is a mistake, not a screen


def new_token() -> str:
    """A fresh random token, URL-safe (no escaping in a query string or in HTML)."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def token_status(given: str | None, token: str) -> int:
    """200 for the right token, 401 for none, 403 for a wrong one."""
    if not given:
        return 401
    # Bytes, so a guess with non-ASCII characters is an ordinary wrong guess.
    return 200 if hmac.compare_digest(given.encode(), token.encode()) else 403


def split_host(host: str) -> tuple[str, str]:
    """``HOST[:PORT]`` (a Host header, an Origin's authority) as (host, port)."""
    if host.startswith("["):
        name, bracket, rest = host[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError(f"malformed host {host!r}")
        return name, rest[1:]
    name, _, port = host.rpartition(":") if ":" in host else (host, "", "")
    return name, port


def is_loopback_name(name: str) -> bool:
    if name.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def host_allowed(host: str | None, *, loopback_only: bool) -> bool:
    """Whether a request's Host header may be served.

    Listening on loopback, only loopback names: a page of some other site whose
    name was made to resolve to 127.0.0.1 (DNS rebinding) is refused before its
    token is even looked at. Listening elsewhere, the user chose who may reach
    it, under whatever name.
    """
    if not host:
        return False
    try:
        name, _ = split_host(host)
    except ValueError:
        return False
    return is_loopback_name(name) if loopback_only else bool(name)


def origin_allowed(origin: str | None, host: str | None) -> bool:
    """A WebSocket comes from our own page: its Origin is this server's origin."""
    if not origin or not host:
        return False
    return origin.lower() == f"http://{host.lower()}"


def content_security_policy(style_nonce: str) -> str:
    # Scripts only from this server, no inline script, no eval. xterm.js makes
    # <style> elements for its colours and cell sizes: the page's script gives
    # them this response's nonce, so no other inline style is let in either.
    return "; ".join(
        (
            "default-src 'none'",
            "script-src 'self'",
            f"style-src 'self' 'nonce-{style_nonce}'",
            "connect-src 'self'",
            "img-src 'self'",
            "font-src 'self'",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        )
    )


def security_headers(style_nonce: str) -> dict[str, str]:
    return {
        "Content-Security-Policy": content_security_policy(style_nonce),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",  # the token is in our URLs
        "Cache-Control": "no-store",
        "Cross-Origin-Opener-Policy": "same-origin",
        "Cross-Origin-Resource-Policy": "same-origin",
        "X-Frame-Options": "DENY",
    }


def parse_page_message(text: str) -> tuple[int, int]:
    """A page's text message: ``{"op": "resize", "rows": R, "cols": C}`` -> (R, C).

    Typed keys come as binary messages; this is the only text one. Anything
    else is a ``ValueError`` naming what was wrong.
    """
    try:
        message = json.loads(text)
    except ValueError as e:
        raise ValueError(f"not JSON: {e}") from None
    if not isinstance(message, dict) or message.get("op") != "resize":
        raise ValueError("expected an object with op 'resize'")
    rows, cols = message.get("rows"), message.get("cols")
    for what, value, limit in (("rows", rows, MAX_ROWS), ("cols", cols, MAX_COLS)):
        if type(value) is not int or not 1 <= value <= limit:
            raise ValueError(f"{what}: expected a whole number 1..{limit}, got {value!r}")
    return rows, cols  # type: ignore[return-value]
