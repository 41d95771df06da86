"""Working cases: ingest, list, show, approve, reject, roll back, close."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from signoff import settings
from signoff.cli._common import emit_json, emit_json_lines, err, fail, out, run
from signoff.models import ApprovalRequest, CaseView, CloseRequest, RollbackRequest, Verdict


def register(app: typer.Typer) -> None:
    app.command()(ingest)
    app.command()(cases)
    app.command()(show)
    app.command()(explain)
    app.command()(approve)
    app.command()(reject)
    app.command()(rollback)
    app.command(name="close")(close_case)


# ---------------------------------------------------------------- ingest


def ingest(
    path: Path = typer.Argument(..., help="alert file: GUIDE CSV or OCSF JSON Lines (.gz ok)"),
    fmt: str = typer.Option(..., "--format", help="guide | ocsf"),
    json_out: bool = typer.Option(False, "--json", help="last line: a JSON summary"),
    requested_by: str = typer.Option("signoff-ingest", "--as", help="who opens these cases"),
) -> None:
    """Validate alerts and open cases (idempotent); rejected records go to a dead-letter file."""
    if fmt not in ("guide", "ocsf"):
        fail(f"--format must be guide or ocsf, not {fmt!r}")
    if not path.exists():
        fail(f"{path} does not exist")

    async def main() -> dict[str, Any]:
        from signoff.client import connect
        from signoff.ingest import ingest_path

        client = await connect()
        with Progress(TextColumn("ingest {task.description}"), BarColumn(), MofNCompleteColumn(),
                      console=err, transient=True) as bar:
            task = bar.add_task(path.name, total=None)
            summary = await ingest_path(
                client, path, fmt,  # type: ignore[arg-type]
                requested_by=requested_by,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
        return summary.as_json()

    summary = run(main())
    if json_out:
        emit_json(summary)
        return
    out.print(
        f"{summary['records']} records: {summary['accepted']} accepted, {summary['rejected']} rejected, "
        f"{summary['duplicates']} already ingested; {summary['cases_opened']} cases opened, "
        f"{summary['cases_updated']} updated in {summary['seconds']} s"
    )
    if summary["rejected"]:
        out.print(f"rejected records and reasons: {summary['dead_letter']}")


# ---------------------------------------------------------------- list and show


def cases(
    status: str = typer.Option(None, help="only cases in this status (e.g. awaiting_approval)"),
    query: str = typer.Option(None, help="extra Temporal visibility query, ANDed"),
    limit: int = typer.Option(1000, help="at most this many; 0 lists them all"),
    json_out: bool = typer.Option(False, "--json", help="one JSON object per case"),
    with_alerts: bool = typer.Option(False, "--with-alerts", help="with --json: add alert_uids"),
) -> None:
    """List cases from Temporal visibility (the same list the UI and `temporal workflow list` show)."""
    from signoff.embedded_visibility import embedded_db_of_home
    from signoff.listing import case_query, case_rows

    if limit < 0:
        fail(f"--limit must be 0 (all) or more, not {limit}")
    try:
        visibility_query = case_query(status, query)
    except ValueError as exc:
        fail(str(exc))
    rows: list[dict[str, Any]] = []

    def emit(page: list[dict[str, Any]]) -> None:
        if json_out:  # streamed a page at a time: the first cases print while later pages load
            emit_json_lines(page)
        else:
            rows.extend(page)

    # On `signoff dev`'s own server the rows can be read from its visibility table (checked
    # against the API on each run: signoff.listing.case_rows); elsewhere from the API.
    embedded = embedded_db_of_home(settings.temporal_address(), settings.home()) if status and not query else None
    run(case_rows(visibility_query, limit=limit or None, with_alerts=with_alerts and json_out, each=emit,
                  status=status, embedded_db=embedded))
    if json_out:
        return
    table = Table(title=f"{len(rows)} cases" + (f" with status {status}" if status else ""))
    for col in ("case", "status", "alert type", "severity", "alerts", "decision", "approval?"):
        table.add_column(col)
    for row in rows:
        table.add_row(row["case_id"], row["status"], row["alert_type"] or "", row["severity"] or "",
                      str(row["alert_count"]), row["decision"] or "", "yes" if row["awaiting_approval"] else "")
    out.print(table)


async def case_view(case_id: str) -> CaseView:
    from signoff.client import connect
    from workflows.case import CaseWorkflow

    client = await connect()
    handle = client.get_workflow_handle_for(CaseWorkflow.run, case_id)
    return await handle.query(CaseWorkflow.status)


def show(
    case_id: str = typer.Argument(..., help="case id (the workflow id)"),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """One case: alerts, entities, enrichment, score, decision, steps, approvals, compensations."""
    view = run(case_view(case_id))
    if json_out:
        emit_json(view.model_dump(mode="json"))
        return
    print_case(view)


def print_case(view: CaseView) -> None:
    out.print(f"[bold]{view.case_id}[/]  {view.title}")
    out.print(f"status [bold]{view.status.value}[/]  type {view.alert_type}  severity {view.severity}  "
              f"playbook {view.playbook}  policy {view.policy_version[:12]}")
    out.print(f"alerts {view.alert_count}  first seen {view.first_seen}  last seen {view.last_seen}")
    if view.rules:
        top = sorted(view.rules.items(), key=lambda kv: -kv[1])[:8]
        out.print("rules fired: " + ", ".join(f"{r or '?'} x{n}" for r, n in top))
    if view.entities:
        out.print("entities: " + ", ".join(f"{e.type}:{e.value}" for e in view.entities[:12])
                  + (" ..." if len(view.entities) > 12 else ""))
    if view.enrichment:
        out.print(f"enrichment: {view.enrichment.summary}"
                  + (f"; {json.dumps(view.enrichment.facts)}" if view.enrichment.facts else ""))
    if view.score:
        s = view.score
        out.print(f"score: predicted {s.predicted.value} (confidence {s.confidence:.3f}, "
                  f"P(not TP) {s.benign_confidence:.3f}), model {s.model_id[:12]}")
    if view.decision:
        out.print(f"decision: [bold]{view.decision.kind.value}[/] ({view.decision.reason})")
    if view.steps:
        table = Table(title="steps")
        for col in ("step", "action", "target", "tier", "undo", "state", "approvals"):
            table.add_column(col)
        for st in view.steps:
            approvals = ", ".join(f"{a.approver}:{a.decision.value}" for a in st.approvals)
            if st.quorum:
                approvals = f"{approvals} ({sum(1 for a in st.approvals if a.decision == 'approve')}/{st.quorum})"
            table.add_row(st.step_id, st.action, f"{st.target.kind} {st.target.id}", st.tier.value,
                          st.reversibility.value, st.state.value, approvals)
        out.print(table)
    for refusal in view.refusals:
        out.print(f"[red]refused[/] {refusal.via} from {refusal.approver!r} on {refusal.step!r}: {refusal.refusal}")
    for note in view.escalations:
        out.print(f"[yellow]escalation[/] {note}")
    if view.verdict:
        out.print(f"verdict: {view.verdict.verdict.value} by {view.verdict.analyst} ({view.verdict.reason})")


def explain(
    case_id: str = typer.Argument(..., help="case id"),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Why the case was decided as it was, from its workflow history."""
    try:
        from signoff.explain import explain_case, render_explanation
    except ModuleNotFoundError:
        view = run(case_view(case_id))
        if json_out:
            emit_json(view.model_dump(mode="json"))
        else:
            print_case(view)
        return
    explanation = run(explain_case(case_id))
    if json_out:
        emit_json(explanation)
    else:
        out.print(render_explanation(explanation))


# ---------------------------------------------------------------- human decisions


def _audit_refusal(kind: str, case_id: str, payload: dict[str, Any], reason: str) -> None:
    """Refused updates leave no trace in Temporal, so the CLI records them itself."""
    folder = settings.home() / "audit"
    folder.mkdir(parents=True, exist_ok=True)
    record = {"at": datetime.now(UTC).isoformat(), "kind": f"refused_{kind}", "case_id": case_id,
              **{k: v for k, v in payload.items() if k != "token"}, "signed": bool(payload.get("token")),
              "refusal": reason}
    with (folder / "refused.jsonl").open("a") as fh:
        fh.write(json.dumps(record, sort_keys=True) + "\n")


async def _update(case_id: str, name: str, arg: Any, update_id: str) -> str:
    from temporalio.client import WorkflowUpdateFailedError
    from temporalio.service import RPCError

    from signoff.client import connect

    client = await connect()
    handle = client.get_workflow_handle(case_id)
    try:
        return await handle.execute_update(name, arg, id=update_id, result_type=str)
    except WorkflowUpdateFailedError as exc:
        reason = str(exc.cause.message if hasattr(exc.cause, "message") else exc.cause)
        _audit_refusal(name, case_id, arg.model_dump(mode="json"), reason)
        fail(f"refused: {reason}")
    except RPCError as exc:
        if "not found" in exc.message.lower() or "already completed" in exc.message.lower():
            fail(f"case {case_id} is not open: {exc.message}")
        raise


def _signed_token(case_id: str, step: str, decision: str, user: str) -> str | None:
    try:
        from signoff.keys import load_private_key
    except ModuleNotFoundError:
        return None
    key = load_private_key(user)
    if key is None:
        return None
    from policies.signing import sign_approval

    return sign_approval(key, case_id=case_id, step=step, decision=decision, approver=user)


def _decide(case_id: str, step: str, user: str, reason: str, decision: str) -> None:
    token = _signed_token(case_id, step, decision, user)
    req = ApprovalRequest(step=step, approver=user, reason=reason, token=token)
    result = run(_update(case_id, decision, req, update_id=f"{decision}:{case_id}:{step}:{user}"))
    out.print(result)


def approve(
    case_id: str = typer.Argument(..., help="case id"),
    step: str = typer.Argument(..., help="step id (see `signoff show CASE`)"),
    user: str = typer.Option(..., "--as", help="who approves (must be an approver in policy)"),
    reason: str = typer.Option(..., help="why"),
) -> None:
    """Approve a high-impact step; it runs once its tier's quorum is met."""
    _decide(case_id, step, user, reason, "approve")


def reject(
    case_id: str = typer.Argument(..., help="case id"),
    step: str = typer.Argument(..., help="step id"),
    user: str = typer.Option(..., "--as", help="who rejects"),
    reason: str = typer.Option(..., help="why"),
) -> None:
    """Reject a high-impact step: it is skipped, recorded."""
    _decide(case_id, step, user, reason, "reject")


def rollback(
    case_id: str = typer.Argument(..., help="case id"),
    user: str = typer.Option(..., "--as", help="who requests the rollback"),
    reason: str = typer.Option(..., help="why"),
) -> None:
    """Undo every executed action of a case, newest first, restoring the captured states."""
    req = RollbackRequest(requested_by=user, reason=reason)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    out.print(run(_update(case_id, "rollback", req, update_id=f"rollback:{case_id}:{user}:{stamp}")))


def close_case(
    case_id: str = typer.Argument(..., help="case id"),
    user: str = typer.Option(..., "--as", help="the analyst"),
    verdict: Verdict = typer.Option(..., help="TruePositive | BenignPositive | FalsePositive"),
    reason: str = typer.Option(..., help="why"),
) -> None:
    """Close a case with your verdict (steps still waiting are skipped); the verdict is the model's feedback."""
    req = CloseRequest(analyst=user, verdict=verdict, reason=reason)
    out.print(run(_update(case_id, "close", req, update_id=f"close:{case_id}")))
