"""Shared CLI plumbing: running coroutines, clean errors, JSON or tables."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Coroutine, Iterable
from typing import Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

T = TypeVar("T")
# Piped output (CI logs, `| less`) gets a readable width instead of rich's 80-column default.
out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 160)


def fail(message: str, code: int = 1) -> NoReturn:
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


def print_error(message: str) -> None:
    """`error: MESSAGE` on stderr as one line (not wrapped at the console width; no markup in MESSAGE)."""
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


def policy_error_line(exc: Exception) -> str:
    """A bad policy (`PolicyError`, or the pydantic error under it) as one line that says what to do."""
    from pydantic import ValidationError
    from yaml import MarkedYAMLError

    cause = exc if isinstance(exc, ValidationError) else exc.__cause__
    text = str(exc)
    if cause is exc:
        head = f"the policy ({_policy_path()}) is invalid"
    elif cause is not None and text.endswith(str(cause)):
        head = text[: -len(str(cause))].rstrip(": \n")
    else:
        head = text
    detail = ""
    if isinstance(cause, ValidationError):
        problems = [
            (".".join(str(part) for part in e["loc"]) + ": " if e["loc"] else "") + e["msg"].removeprefix("Value error, ")
            for e in cause.errors()
        ]
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        detail = "; ".join(problems[:5]) + more
    elif isinstance(cause, MarkedYAMLError) and cause.problem_mark is not None:
        mark = cause.problem_mark
        detail = f"{cause.problem or cause.context} at line {mark.line + 1}, column {mark.column + 1}"
    elif cause is not None:
        detail = str(cause)
    line = " ".join(f"{head}: {detail}".split()) if detail and head != text else " ".join(text.split())
    if "SIGNOFF_POLICY" not in line:
        line += "; fix the file, or set SIGNOFF_POLICY to a valid policy file"
    return line


def _policy_path() -> str:
    from policies.loader import policy_path

    return str(policy_path())


def fail_policy(exc: Exception) -> NoReturn:
    print_error(policy_error_line(exc))
    raise typer.Exit(1)


def require_policy() -> None:
    """Load the policy in force once, up front: a bad file stops the command here with one line."""
    from pydantic import ValidationError

    from policies.loader import PolicyError, load_policy

    try:
        load_policy()
    except (PolicyError, ValidationError) as exc:
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
        fail(f"Temporal refused the request: {exc.message}")
    except (FileNotFoundError, ValueError, KeyError) as exc:
        fail(str(exc).strip("'\""))


def emit_json(obj: Any) -> None:
    emit_json_lines((obj,))


def emit_json_lines(objs: Iterable[Any]) -> None:
    """One JSON object per line (the `--json` format), written and flushed together."""
    sys.stdout.write("".join(json.dumps(obj, default=str, sort_keys=True) + "\n" for obj in objs))
    sys.stdout.flush()
