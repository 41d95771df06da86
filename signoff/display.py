"""Untrusted text made safe to show: one helper for the terminal, Slack and HTML.

Alert content (titles, host and user names, file names, command lines) is written by whoever
triggered the detector. Shown raw it can drive an analyst's terminal (ANSI/OSC sequences: hidden
text, fake hyperlinks, clipboard writes), forge lines (a newline then "Approved by alice"),
reverse what a reader sees (bidi overrides: "gnp.exe" shown as "exe.png") or hide characters
(zero-width). `clean` makes every such character visible as an escape (`\\x1b`, `\\u202e`, `\\n`),
so what an approver reads is what the case holds. Only the display changes: histories, the audit
export and JSON output keep the raw content (it is evidence).
"""

from __future__ import annotations

import html
import unicodedata
from functools import lru_cache
from typing import Any

from rich.console import Console
from rich.markup import escape as rich_escape
from rich.text import Text

# Control (Cc), format (Cf: bidi overrides, zero-width), surrogate (Cs), line/paragraph separators
# (Zl, Zp), private-use (Co) and unassigned (Cn) characters: nothing a reader can see or trust.
_HIDDEN = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp", "Co", "Cn"})


@lru_cache(maxsize=4096)
def _shown(ch: str, one_line: bool) -> str:
    if not one_line and ch in "\n\t":
        return ch
    if unicodedata.category(ch) not in _HIDDEN:
        return ch
    code = ord(ch)
    if ch == "\n":
        return "\\n"
    if ch == "\t":
        return "\\t"
    if ch == "\r":
        return "\\r"
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def clean(text: Any, *, one_line: bool = True, limit: int | None = None) -> str:
    """`text` with every invisible or terminal-controlling character shown as an escape; newlines
    too unless `one_line` is False; cut to `limit` characters with the number left out said."""
    s = text if isinstance(text, str) else str(text)
    if not s.isprintable():
        s = "".join(_shown(ch, one_line) for ch in s)
    if limit is not None and len(s) > limit:
        s = f"{s[:limit]}… (+{len(s) - limit} chars)"
    return s


def identifier(text: Any, *, limit: int | None = 120) -> str:
    """What an action touches (a host, an account, a key), exactly: non-ASCII characters shown as
    escapes too, so "dс01" with a Cyrillic "с" reads `d\u044101`, never as the host dc01."""
    s = clean(text)
    if not s.isascii():
        s = "".join(ch if ch.isascii() else _codepoint(ch) for ch in s)
    return clean(s, limit=limit)


def _codepoint(ch: str) -> str:
    code = ord(ch)
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def terminal(text: Any, *, limit: int | None = None) -> str:
    """One line for a rich console: cleaned, and `[bold]` in it is text, never markup."""
    return rich_escape(clean(text, limit=limit))


def mrkdwn(text: Any, *, limit: int | None = None) -> str:
    """One line of Slack mrkdwn: cleaned, `&`, `<`, `>` escaped (no `<!channel>`, `<@U…>` mentions,
    no `<https://evil|https://bank>` links; Slack's own escaping rules)."""
    return clean(text, limit=limit).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def mrkdwn_code(text: Any, *, limit: int | None = 120) -> str:
    """A target shown inside a Slack `code span`, as `identifier` shows it: a backtick in it would end
    the span and let the rest be read as formatting (a host named "x` on host `dc02"): shown as a quote."""
    return mrkdwn(identifier(text, limit=limit)).replace("`", "'")


def html_text(text: Any, *, limit: int | None = None) -> str:
    """Cleaned and HTML-escaped (quotes too: safe in attributes)."""
    return html.escape(clean(text, limit=limit), quote=True)


class SafeConsole(Console):
    """A rich console that shows control and invisible characters as escapes, whatever the caller
    passed: the CLI's last line of defence against alert content reaching the analyst's terminal.
    Newlines and tabs are kept (tables and multi-line notes); single-line fields use `terminal`."""

    def render_str(self, text: str, **kwargs: Any) -> Text:
        return super().render_str(clean(text, one_line=False), **kwargs)
