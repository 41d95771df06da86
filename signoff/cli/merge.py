"""`signoff merge SOURCE --into TARGET`: two cases that are one incident (workflows/case_merge.py).

The source sends its alerts to the target and ends `merged` (no verdict, nothing to the model's
feedback); its executed actions stay in effect and `signoff rollback SOURCE` still undoes them.
Signed with the person's approver key when they have one, like a verdict. A refusal is recorded in
`audit/refused.jsonl`; checks that need the other case (the source or the target has ended, a cycle)
are made here before anything is sent.
"""

from __future__ import annotations

import typer
from rich.markup import escape

from signoff.cli._common import emit_json, fail, out, run
from signoff.cli.cases import _attempt_id, _signed_token, _still_running, _update, case_view
from signoff.client import BEST_EFFORT_QUERY
from signoff.models import CaseView, MergedInto, MergeRequest
from signoff.refused_log import record_refusal


def register(app: typer.Typer) -> None:
    app.command()(merge)


def merge(
    source: str = typer.Argument(..., help="the case that ends: its alerts go to TARGET"),
    into: str = typer.Option(..., "--into", help="the running case that carries the incident on"),
    user: str = typer.Option(..., "--as", help="who decides it (a person in policy who may close SOURCE)"),
    reason: str = typer.Option(..., help="why the two cases are one incident"),
    json_out: bool = typer.Option(False, "--json", help="one JSON object: the merge record"),
) -> None:
    """Merge a case into another that is the same incident (`signoff related CASE` finds them).

    SOURCE's alerts (and the entities they brought) go to TARGET, which is not rescored. SOURCE skips
    its steps not yet run and ends `merged`, with no verdict; what it executed stays in effect
    (`signoff rollback SOURCE` undoes it). Running it again changes nothing."""
    from policies.signing import CASE_STEP

    view = run(case_view(source))
    req = MergeRequest(target=into, requested_by=user, reason=reason)

    def refuse(refusal: str) -> None:
        record_refusal("merge_into", source, req.model_dump(mode="json"), refusal)
        fail(f"refused: {refusal}")

    record = view.merged_into
    again = record is not None and record.target == into
    if record is not None and not again:
        refuse(f"case {source} was already merged into {record.target} by {record.by}; merge {record.target} instead")
    if record is None:
        if into == source:
            refuse(f"a case cannot be merged into itself ({source}); `signoff related {source}` lists other cases")
        if not run(_still_running(source)):
            refuse(f"case {source} has ended (status {view.status.value}): only a running case can be merged; "
                   f"`signoff explain {source}` shows it")
        if (problem := run(_target_problem(source, into))) is not None:
            refuse(problem)
        req = req.model_copy(update={"token": _signed_token(source, CASE_STEP, "merge", user)})
        # A repeat is answered by the case itself (its record, nothing changes), so each run has an
        # id of its own; retries inside this run keep it and Temporal answers them with the first reply.
        reply = run(_update(source, "merge_into", req, update_id=_attempt_id("merge", source, into)))
        view = run(case_view(source))
        record = view.merged_into
        if record is None or record.target != into:  # the delivery failed: the case escalated and stays open
            fail(reply)
    assert record is not None
    stored = _store_moves(source, into)
    target_view = run(case_view(into))
    if json_out:
        emit_json({"case_id": source, **record.model_dump(mode="json"), "already_merged": again,
                   "status": view.status.value, "target_alert_count": target_view.alert_count,
                   "alert_store_moved": stored})
        return
    out.print(escape(_text(source, record, again, view, target_view.alert_count)))


async def _target_problem(source: str, target: str) -> str | None:
    """Why `target` cannot take the merge, seen from outside (None: it is a running case)."""
    from temporalio.client import WorkflowExecutionStatus
    from temporalio.service import RPCError, RPCStatusCode

    from signoff import search_attributes as sa
    from signoff.client import connect

    client = await connect()
    try:
        described = await client.get_workflow_handle(target).describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND or "not found" in exc.message.lower():
            return f"there is no case {target!r}; `signoff related {source}` lists the cases sharing its entities"
        raise
    if described.status == WorkflowExecutionStatus.RUNNING:
        return None
    status = described.typed_search_attributes.get(sa.CASE_STATUS) or "ended"
    try:
        ended: CaseView | None = await client.get_workflow_handle(target).query(
            "status", result_type=CaseView, rpc_timeout=BEST_EFFORT_QUERY)
    except Exception:  # noqa: BLE001 - no worker to answer: the status attribute says enough
        ended = None
    if ended is not None and ended.merged_into is not None and ended.merged_into.target == source:
        return (f"case {target} was merged into {source}: merging {source} into it would make a cycle "
                f"(it has ended; {source} holds its alerts)")
    if ended is not None and ended.merged_into is not None:
        return (f"case {target} was merged into {ended.merged_into.target} (status merged): "
                f"merge into {ended.merged_into.target} instead")
    return f"case {target} has ended (status {status}): merge into a running case"


def _store_moves(source: str, target: str) -> int:
    """This directory's alert store follows the merge, every alert of the source (past the case's
    timeline cap too): a re-ingest of one is a duplicate of the target, `cases --with-alerts` lists it
    there. Returns how many moved (0 where the store never had them, or on a repeat)."""
    from signoff import settings
    from signoff.alertstore import AlertStore
    from signoff.ingest import record_merge_routes

    path = settings.home() / "alerts.db"
    if not path.exists():
        return 0
    with AlertStore(path) as store:
        record_merge_routes(store, {source: target})  # a GUIDE re-ingest of its alerts: duplicates of the target
        return sum(1 for uid in store.uids(source) if store.move_alert(uid, source, target))


def _text(source: str, r: MergedInto, again: bool, view: CaseView, target_count: int) -> str:
    lines = [f"case {source} {'was already' if again else 'is'} merged into {r.target} by {r.by} at "
             f"{r.at:%Y-%m-%d %H:%M} UTC ({r.reason})" + ("; nothing changed" if again else "")]
    lines.append(f"{r.alerts} alert(s) sent; case {r.target} now has {target_count} alert(s) "
                 f"(not rescored; `signoff show {r.target}`)")
    lines.append(f"case {source}: status {view.status.value}, no verdict (nothing goes to the model's feedback)")
    if r.skipped_steps:
        lines.append(f"skipped, never run: {', '.join(r.skipped_steps)}")
    if r.acted_steps:
        lines.append(f"still in effect: {', '.join(r.acted_steps)}; `signoff rollback {source} --as USER --reason TEXT` "
                     "undoes them")
    if r.handed_over_steps:
        lines.append(f"handed over to {r.target}, which holds the same: {', '.join(r.handed_over_steps)} "
                     f"(`signoff rollback {r.target}` undoes them)")
    return "\n".join(lines)
