"""Text from elsewhere (DT's API, a receiver's answer) made safe to print on a terminal.

Why: a connector's display name, a device id or an error message is written by someone
else; printed raw, an escape sequence can rewrite the terminal (move the cursor, hide a
line, change the title) and a newline can forge a line of our own output. Every such text
goes through `printable` first: control, format (bidi overrides, zero-width) and line or
paragraph separator characters become visible escapes, and the length is capped.
"""

from __future__ import annotations

import unicodedata

_UNSAFE = {"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"}
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def printable(value: object, limit: int = 300) -> str:
    """`value` as one line of harmless text: unsafe characters escaped (``\\x1b``,
    ``\\u2028``), at most `limit` characters (then ``…``)."""
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value).decode("utf-8", "replace")
    text = value if isinstance(value, str) else str(value)
    out = []
    size = 0
    for ch in text:
        if unicodedata.category(ch) in _UNSAFE:
            code = ord(ch)
            piece = _NAMED.get(ch) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000
                                       else f"\\U{code:08x}")
        else:
            piece = ch
        if size + len(piece) > limit:
            out.append("…")
            break
        out.append(piece)
        size += len(piece)
    return "".join(out)


def quoted(value: object, limit: int = 300) -> str:
    """`printable` in single quotes, for a name inside a sentence."""
    return f"'{printable(value, limit)}'"
