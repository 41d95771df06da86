"""Shared CLI plumbing: running coroutines, clean errors, JSON or tables."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Coroutine, Iterable
from typing import Any, NoReturn, TypeVar

import typer
from rich.markup import escape

from signoff.display import SafeConsole

T = TypeVar("T")
# Piped output (CI logs, `| less`) gets a readable width instead of rich's 80-column default.
# Alert content reaches both: control sequences in it are shown as escapes, never sent to the terminal.
out = SafeConsole(width=None if sys.stdout.isatty() else 160)
err = SafeConsole(stderr=True, width=None if sys.stderr.isatty() else 160)


def fail(message: str, code: int = 1) -> NoReturn:
    # MESSAGE is text, never markup: it carries case ids, step names, paths and reasons people typed
    # ("[/x]" in one made every error path crash with a MarkupError traceback instead of this line).
    # One line, never wrapped at the console width: a wrapped error broke the command it suggests in two
    # ("`signoff \nexplain CASE`"), for copy-paste and for grep (QA5).
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def plural(count: int, word: str, many: str | None = None) -> str:
    """A count and its noun: "1 case", "0 cases", "2 cases" (QA5 found "1 cases opened" in summaries)."""
    return f"{count} {word if count == 1 else many or word + 's'}"


def pct(value: float | None) -> str:
    """A share as a percentage for tables ("-" when there is none)."""
    return "-" if value is None else f"{value:.1%}"


def print_error(message: str) -> None:
    """`error: MESSAGE` on stderr as one line (not wrapped at the console width; no markup in MESSAGE)."""
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


def policy_error_line(exc: Exception) -> str:
    """A bad policy as one line that says what to do. `PolicyError`s already name the file and the
    problem (YAML errors with their line and column); a pydantic error reaching the CLI directly is
    put the way the loader puts them."""
    from pydantic import ValidationError

    from policies.loader import one_line, policy_path

    text = f"the policy ({policy_path()}) is invalid: {one_line(exc)}" if isinstance(exc, ValidationError) else str(exc)
    line = " ".join(text.split())
    if "SIGNOFF_POLICY" not in line:
        line += "; fix the file, or set SIGNOFF_POLICY to a valid policy file"
    return line


def fail_policy(exc: Exception) -> NoReturn:
    print_error(policy_error_line(exc))
    raise typer.Exit(1)


def require_policy() -> None:
    """Load the policy in force once, up front: a bad file stops the command here with one line."""
    from policies.loader import PolicyError, load_policy

    try:
        load_policy()
    except PolicyError as exc:
        fail_policy(exc)


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine; turn expected failures into one clear line and a non-zero exit."""
    from temporalio.service import RPCError

    from policies.loader import PolicyError

    try:
        return asyncio.run(coro)
    except typer.Exit:
        raise
    except PolicyError as exc:
        fail_policy(exc)
    except ConnectionError as exc:
        fail(str(exc))
    except RPCError as exc:
        fail(f"Temporal refused the request: {exc.message}{_rpc_hint(exc.message)}")
    except (FileNotFoundError, ValueError, KeyError) as exc:
        message = str(exc).strip("'\"")
        fail(message + _codec_hint(message))


def _rpc_hint(message: str) -> str:
    """What to do about a refusal that means nobody serves the task queue."""
    if "no poller" not in message.lower():
        return ""
    return "; start a worker against this cluster (`signoff worker`; on the embedded server `signoff dev`)"


def _codec_hint(message: str) -> str:
    """QA6: without the deployment's payload key, reading a case failed with the SDK's bare
    "Unknown payload encoding binary/encrypted" and no word on what to set."""
    if "binary/encrypted" not in message:
        return ""
    return (": this cluster's workflow payloads are encrypted and this machine has no key for them; set "
            "SIGNOFF_CODEC_KEY_FILE (or SIGNOFF_CODEC_KEY) to the workers' codec key (docs/deployment.md section 5)")


def emit_json(obj: Any) -> None:
    emit_json_lines((obj,))


def emit_json_lines(objs: Iterable[Any]) -> None:
    """One JSON object per line (the `--json` format), written and flushed together."""
    sys.stdout.write("".join(json.dumps(obj, default=str, sort_keys=True) + "\n" for obj in objs))
    sys.stdout.flush()
