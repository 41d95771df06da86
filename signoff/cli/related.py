"""`signoff related CASE` and `signoff cases --entity VALUE`: the cases that share a host, an
account, an IP, a file, ... with a case (or hold a value), from Temporal visibility alone
(`CaseEntities`, signoff.entity_index)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import typer
from rich.table import Table

from signoff.cli._common import emit_json, fail, out, plural, run
from signoff.display import terminal

if TYPE_CHECKING:
    from signoff.models import Entity

RELATED_LIMIT = 200


def register(app: typer.Typer) -> None:
    app.command()(related)


def related(
    case_id: str = typer.Argument(..., help="case id (the workflow id)"),
    limit: int = typer.Option(50, help="at most this many related cases, those sharing most first"),
    json_out: bool = typer.Option(False, "--json", help="one JSON object per related case"),
) -> None:
    """Other cases that share an entity (host, account, IP, file, URL, mailbox, ...) with this one."""
    from signoff.cli.cases import case_view
    from signoff.entity_index import keyed

    if limit < 1:
        fail(f"--limit must be 1 or more, not {limit}")
    view = run(case_view(case_id))
    held = keyed((entity.value, entity) for entity in view.entities)  # the digests the case published
    if not held:
        fail(f"case {case_id} holds no entity with a value: nothing to relate it by")
    rows = run(related_rows(case_id, held))
    rows = sorted(rows, key=lambda r: (-len(r["shared"]), r["case_id"]))[:limit]
    if json_out:
        for row in rows:
            emit_json(row)
        return
    if not rows:
        out.print(f"no other case shares an entity with {case_id} ({plural(len(held), 'entity value')} looked for)")
        return
    table = Table(title=f"{plural(len(rows), 'case')} sharing entities with {case_id}")
    for col in ("case", "status", "alert type", "severity", "decision", "shared"):
        table.add_column(col)
    for row in rows:
        shared = ", ".join(f"{s['type']} {s['value']}" for s in row["shared"][:4])
        more = len(row["shared"]) - 4
        table.add_row(row["case_id"], row["status"], row["alert_type"] or "", row["severity"] or "",
                      row["decision"] or "", terminal(shared + (f" (+{more})" if more > 0 else "")))
    out.print(table)


async def related_rows(case_id: str, held: dict[str, Entity]) -> list[dict[str, Any]]:
    from signoff import search_attributes as sa
    from signoff.client import connect
    from signoff.entity_index import any_of_query, keys_of
    from signoff.listing import case_query, case_row, visibility_pages, visibility_value

    client = await connect()
    query = case_query(None, f"{any_of_query(held)} AND WorkflowId != '{case_id}'")
    rows = []
    async for page in visibility_pages(client, query, limit=RELATED_LIMIT):
        for info in page:
            theirs = keys_of(visibility_value(info.search_attributes.indexed_fields, sa.CASE_ENTITIES.name))
            shared = [{"type": held[key].type, "value": held[key].value} for key in theirs & held.keys()]
            row = case_row(info)
            rows.append({"case_id": row["case_id"], "status": row["status"], "alert_type": row["alert_type"],
                         "severity": row["severity"], "decision": row["decision"], "started": row["started"],
                         "workflow_status": row["workflow_status"],
                         "shared": sorted(shared, key=lambda s: (s["type"], s["value"]))})
    return rows


def entity_filter(values: list[str]) -> str | None:
    """The visibility clause of `signoff cases --entity VALUE ...` (any of the values)."""
    from signoff.entity_index import any_of_query, entity_key

    return any_of_query(entity_key(v) for v in values) if values else None
