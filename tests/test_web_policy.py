"""The web console's checks as pure functions: tokens, Host and Origin, CSP, page messages."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from colinux.console.web_policy import (
    MAX_COLS,
    MAX_ROWS,
    content_security_policy,
    host_allowed,
    new_token,
    origin_allowed,
    parse_page_message,
    split_host,
    token_status,
)


def test_tokens_are_fresh_and_long() -> None:
    tokens = {new_token() for _ in range(100)}
    assert len(tokens) == 100
    assert all(len(t) >= 22 and t.isascii() for t in tokens)  # 22 base64 characters: 128 bits


@given(st.text())
def test_any_guess_but_the_token_is_refused(guess: str) -> None:
    token = new_token()
    expected = 401 if guess == "" else 200 if guess == token else 403
    assert token_status(guess, token) == expected
    assert token_status(token, token) == 200
    assert token_status(None, token) == 401


@given(st.text())
def test_split_host_never_fails_but_with_value_error(host: str) -> None:
    try:
        name, port = split_host(host)
    except ValueError:
        assert host.startswith("[")
        return
    assert isinstance(name, str) and isinstance(port, str)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1:8080", True), ("127.3.2.1", True), ("localhost:1", True),
        ("LOCALHOST:1", True), ("[::1]:8080", True), ("[::1]", True),
        ("evil.example:8080", False), ("10.0.2.2:80", False), ("[::2]:80", False),
        ("::1", False), ("[::1", False), ("", False), ("localhost.evil.example", False),
    ],
)  # fmt: skip
def test_loopback_listeners_serve_loopback_names_only(host: str, loopback: bool) -> None:
    assert host_allowed(host, loopback_only=True) is loopback


def test_other_listeners_serve_any_name() -> None:
    assert host_allowed("my-machine:8080", loopback_only=False)
    assert not host_allowed("", loopback_only=False)
    assert not host_allowed(None, loopback_only=False)


@given(st.text(), st.text())
def test_origin_is_this_server_or_nothing(origin: str, host: str) -> None:
    allowed = origin_allowed(origin, host)
    assert allowed == (bool(host) and origin.lower() == f"http://{host}".lower())


def test_origin_examples() -> None:
    assert origin_allowed("http://127.0.0.1:8080", "127.0.0.1:8080")
    assert not origin_allowed("http://127.0.0.1:8081", "127.0.0.1:8080")
    assert not origin_allowed("https://127.0.0.1:8080", "127.0.0.1:8080")
    assert not origin_allowed("null", "127.0.0.1:8080")
    assert not origin_allowed(None, "127.0.0.1:8080")


def test_the_policy_allows_no_inline_script_and_only_nonced_styles() -> None:
    csp = content_security_policy("N0nce")
    directives = dict(d.split(" ", 1) for d in csp.split("; "))
    assert directives["default-src"] == "'none'"
    assert directives["script-src"] == "'self'"
    assert directives["style-src"] == "'self' 'nonce-N0nce'"
    assert directives["connect-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'"
    assert "unsafe" not in csp


@given(st.integers(1, MAX_ROWS), st.integers(1, MAX_COLS))
def test_resize_messages_round_trip(rows: int, cols: int) -> None:
    text = json.dumps({"op": "resize", "rows": rows, "cols": cols})
    assert parse_page_message(text) == (rows, cols)


@given(
    st.one_of(
        st.text(),
        st.builds(
            json.dumps,
            st.recursive(
                st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
                lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
            ),
        ),
    )
)
def test_any_other_text_is_a_value_error(text: str) -> None:
    try:
        rows, cols = parse_page_message(text)
    except ValueError:
        return
    assert 1 <= rows <= MAX_ROWS and 1 <= cols <= MAX_COLS


@pytest.mark.parametrize(
    "message",
    [
        {"op": "resize", "rows": 0, "cols": 80},
        {"op": "resize", "rows": 24, "cols": 100000},
        {"op": "resize", "rows": True, "cols": 80},
        {"op": "resize", "rows": 24.0, "cols": 80},
        {"op": "resize", "rows": "24", "cols": 80},
        {"op": "stop"},
        [24, 80],
    ],
)
def test_bad_resizes(message: object) -> None:
    with pytest.raises(ValueError):
        parse_page_message(json.dumps(message))
