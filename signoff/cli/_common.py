"""Shared CLI plumbing: running coroutines, clean errors, JSON or tables."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Coroutine, Iterable
from typing import Any, NoReturn, TypeVar

import typer
from rich.console import Console

T = TypeVar("T")
# Piped output (CI logs, `| less`) gets a readable width instead of rich's 80-column default.
out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 160)


def fail(message: str, code: int = 1) -> NoReturn:
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine; turn expected failures into one clear line and a non-zero exit."""
    from temporalio.service import RPCError

    try:
        return asyncio.run(coro)
    except typer.Exit:
        raise
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
