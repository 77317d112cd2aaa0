"""The comma-separated fields of a key=value value: splitting and quoting.

``cofs0="/srv/a,b",meta`` holds two fields, ``/srv/a,b`` and ``meta``: a
field in double quotes may hold commas, and ``""`` inside it stands for one
``"``. Quotes a field does not need are optional, so ``eth0=tuntap,"TAP-Win32"``
(as a Windows shell leaves it) and ``eth0=tuntap,TAP-Win32`` (as a POSIX shell
leaves it) are the same::

    split_fields('"/srv/a,b",meta')      # ['/srv/a,b', 'meta']
    quote_field("/srv/a,b")              # '"/srv/a,b"'
    single_value('"C:\\My Disk\\a,1.img"')  # a one-field value, quoted whole

A parser raises ``values.BadValue``; the reader adds where the word came from.
"""

from __future__ import annotations

from colinux.config.values import BadValue


def split_fields(value: str) -> list[str]:
    """Split a value on commas outside double quotes, and unquote each field."""
    fields: list[str] = []
    i, n = 0, len(value)
    while True:
        if i < n and value[i] == '"':
            chars: list[str] = []
            j = i + 1
            while True:
                if j >= n:
                    raise BadValue("unterminated double quote")
                if value[j] == '"':
                    if value.startswith('""', j):  # "" inside quotes: one "
                        chars.append('"')
                        j += 2
                        continue
                    j += 1
                    break
                chars.append(value[j])
                j += 1
            if j < n and value[j] != ",":
                raise BadValue("text follows a closing quote; quote the whole field")
            fields.append("".join(chars))
        else:
            j = value.find(",", i)
            if j < 0:
                j = n
            fields.append(value[i:j])
        if j >= n:
            return fields
        i = j + 1


def quote_field(text: str, *, always: bool = False) -> str:
    """A field as ``split_fields`` reads it back: quoted when it has to be."""
    if always or "," in text or text.startswith('"'):
        return '"' + text.replace('"', '""') + '"'
    return text


def single_value(value: str) -> str:
    """A one-field value (a path): optionally quoted whole, commas allowed."""
    if not value.startswith('"'):
        return value
    fields = split_fields(value)
    if len(fields) != 1:
        raise BadValue("expected one quoted path; text follows the closing quote")
    return fields[0]


def quote_single(text: str) -> str:
    """A one-field value as ``single_value`` reads it back."""
    return '"' + text.replace('"', '""') + '"' if text.startswith('"') else text
