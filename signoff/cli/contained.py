"""`signoff contained`: every high-impact action in effect now, across cases (signoff/containment.py)."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from signoff.cli._common import emit_json, err, fail, out, plural, run
from signoff.display import identifier, terminal


def register(app: typer.Typer) -> None:
    app.command()(contained)


def _say_released(released: list[dict[str, Any]]) -> None:
    """Actions of ended cases another case's rollback released since (signoff/containment.py)."""
    for r in released:
        if r["undo_outcome"]:  # the case's own rollback ran since and left it: nothing to act on (JSON keeps it)
            continue
        after = f"`signoff rollback {r['case_id']}` would find it changed and leave it"
        out.print(terminal(f"no longer in effect: {r['action']} on {r['target_kind']} {r['target']} of case {r['case_id']} "
                         f"({r['case_status']}, ended): released by the rollback of case {r['released_by']} at "
                         f"{str(r['released_at'])[:16].replace('T', ' ')} UTC (to {json.dumps(r['released_to'])}); "
                         f"{after}"), highlight=False)


def contained(
    query: str = typer.Option(None, help="extra Temporal visibility query, ANDed (e.g. \"AlertType='malware'\")"),
    limit: int = typer.Option(500, help="read at most this many cases (those that ran a gated action)"),
    json_out: bool = typer.Option(False, "--json", help="one JSON object per action in effect"),
) -> None:
    """What is contained right now: hosts isolated, accounts disabled, senders blocked, ... by open
    and ended cases, since when, on whose approval, and how to release each (oldest first)."""
    from signoff.client import connect
    from signoff.containment import actions_in_effect, held_for

    if limit < 1:
        fail(f"--limit must be 1 or more, not {limit}")

    async def main() -> tuple[list[dict[str, Any]], list[str], int, list[dict[str, Any]]]:
        client = await connect()
        with Progress(TextColumn("reading cases"), BarColumn(), MofNCompleteColumn(), console=err,
                      transient=True, disable=not sys.stderr.isatty()) as bar:
            task = bar.add_task("cases", total=None)
            return await actions_in_effect(client, query=query, limit=limit,
                                           progress=lambda done, total: bar.update(task, completed=done, total=total))

    rows, problems, irreversible, released = run(main())
    for problem in problems:
        err.print(f"[yellow]not read:[/] {escape(problem)}", highlight=False)
    if json_out:
        for row in rows:
            emit_json(row)
        for row in released:  # not in effect: scripts tell them apart by `released_by`
            emit_json(row)
        return
    if not rows:
        out.print("nothing is contained: no high-impact action is in effect"
                  + (f" ({plural(irreversible, 'irreversible action')} done, which nothing undoes)" if irreversible else ""))
        _say_released(released)
        return
    now = datetime.now(UTC)
    cases = {r["case_id"] for r in rows}
    targets = {(r["target_kind"], r["target"]) for r in rows}
    table = Table(title=f"{plural(len(rows), 'action')} in effect on {plural(len(targets), 'target')}, "
                        f"{plural(len(cases), 'case')}")
    for col in ("since (UTC)", "target", "action", "case", "approved by", "note"):
        table.add_column(col)
    for r in rows:
        notes = []
        if r["also_held_by"]:
            notes.append("also held by " + ", ".join(r["also_held_by"]))
        if not r["case_open"]:
            ended = f"case merged into {r['merged_into']}" if r.get("merged_into") else "case ended"
            notes.append(ended + (f"; undo {r['undo_outcome']}" if r["undo_outcome"] else ""))
        elif r["rollback_open_until"]:
            notes.append(f"verdict given; rollback window until {str(r['rollback_open_until'])[:16].replace('T', ' ')} UTC")
        since = f"{str(r['since'])[:16].replace('T', ' ')} ({held_for(r['since'], now)})" if r["since"] else "?"
        table.add_row(since, terminal(f"{r['target_kind']} {identifier(r['target'])}"),  # "dс01" is not dc01
                      str(r["action"]), f"{r['case_id']} ({r['case_status']})",
                      escape(", ".join(r["approved_by"]) or "?"), escape("; ".join(notes)))
    out.print(table)
    out.print(escape("release one case's actions (its compensations restore the states captured before them; a target "
                     "another case holds stays as it is): signoff rollback CASE --as USER --reason TEXT"))
    if irreversible:
        out.print(f"and {plural(irreversible, 'irreversible action')} done, which nothing undoes")
    _say_released(released)
