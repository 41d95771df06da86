"""`signoff assign` and `signoff note`: a case's owner and its investigation log (workflows/case_log.py);
`signoff detach`: take a wrongly correlated alert out of its case into a case of its own
(workflows/case_detach.py).

Signed with the person's approver key when they have one, like a verdict: a deployment that does
not trust unsigned requests refuses them unsigned. A refusal is recorded in `audit/refused.jsonl`.
"""

from __future__ import annotations

from typing import Any

import typer
from rich.markup import escape

from signoff.cli._common import emit_json, fail, out, run
from signoff.cli.cases import _attempt_id, _signed_token, _still_running, _update, case_view
from signoff.models import AssignRequest, CaseView, DetachRecord, DetachRequest, NoteRequest
from signoff.refused_log import record_refusal


def register(app: typer.Typer) -> None:
    app.command()(assign)
    app.command()(note)
    app.command()(detach)


def assign(
    case_id: str = typer.Argument(..., help="case id"),
    to: str = typer.Option(..., "--to", help="the analyst who works the case (a name in policy)"),
    user: str = typer.Option(..., "--as", help="who assigns it (themselves, or a lead)"),
    reason: str = typer.Option("", help="why (optional)"),
) -> None:
    """Give a case an owner; `signoff cases --assignee NAME` lists theirs, `--unassigned` the rest."""
    from policies.signing import CASE_STEP

    req = AssignRequest(assignee=to, by=user, reason=reason, token=_signed_token(case_id, CASE_STEP, "assign", user))
    out.print(escape(run(_update(case_id, "assign", req, update_id=_attempt_id("assign", case_id, user, to)))))


def note(
    case_id: str = typer.Argument(..., help="case id"),
    text: str = typer.Argument(..., help="what you found or did ('-' reads it from stdin)"),
    user: str = typer.Option(..., "--as", help="the author"),
) -> None:
    """Add an entry to the case's investigation log: attributed, timestamped, in the audit trail."""
    from policies.signing import CASE_STEP

    if text == "-":
        text = typer.get_text_stream("stdin").read()
    if not text.strip():
        fail("the note is empty: give the text as an argument, or '-' to read it from stdin")
    req = NoteRequest(author=user, text=text, token=_signed_token(case_id, CASE_STEP, "note", user))
    out.print(escape(run(_update(case_id, "note", req, update_id=_attempt_id("note", case_id, user)))))


def detach(
    case_id: str = typer.Argument(..., help="case id"),
    alert_uid: str = typer.Argument(..., help="the alert to take out (`signoff show CASE --json`: timeline[].uid)"),
    user: str = typer.Option(..., "--as", help="who decides it (a person in policy who may decide cases)"),
    reason: str = typer.Option(..., help="why the alert does not belong to this case"),
    json_out: bool = typer.Option(False, "--json", help="one JSON object: the detach record"),
) -> None:
    """Take a wrongly correlated alert out of a case: it opens a case of its own (`CASE-dN`).

    Steps not yet run whose target came only from that alert are skipped; executed ones stay (a rollback
    undoes them). The case is not rescored. Running it again for the same alert changes nothing."""
    from policies.signing import CASE_STEP

    view = run(case_view(case_id))
    alert = next((a for a in view.timeline if a.uid == alert_uid), None)  # in full, before it leaves the case
    record = _record_of(view, alert_uid)
    again = record is not None
    if record is None:
        token = _signed_token(case_id, CASE_STEP, "detach", user)
        req = DetachRequest(alert_uid=alert_uid, requested_by=user, reason=reason, token=token)
        if not run(_still_running(case_id)):  # the case has ended: nothing can be sent to it
            refusal = (f"the case is closed (status {view.status.value}): its alerts are final; "
                       f"`signoff explain {case_id}` shows them")
            record_refusal("detach_alert", case_id, req.model_dump(mode="json"), refusal)
            fail(f"refused: {refusal}")
        # A repeat is answered by the case itself (the alert's record, nothing changes), so each run
        # has an id of its own: a refusal recorded for an earlier run never stands for a later one.
        reply = run(_update(case_id, "detach_alert", req, update_id=_attempt_id("detach", case_id, alert_uid)))
        view = run(case_view(case_id))
        record = _record_of(view, alert_uid)
        if record is None:  # cannot happen once the update was accepted; say what the case said
            fail(f"case {case_id} answered {reply!r} but does not list alert {alert_uid} as detached; "
                 f"check `signoff show {case_id}`")
    stored = _store_moves(case_id, record, alert)
    if json_out:
        emit_json({"case_id": case_id, **record.model_dump(mode="json"), "already_detached": again,
                   "alert_count": view.alert_count, "alert_store_updated": stored})
        return
    out.print(escape(_text(case_id, record, again, view.alert_count)))


def _record_of(view: CaseView, alert_uid: str) -> DetachRecord | None:
    return next((r for r in view.detached_alerts if r.alert_uid == alert_uid), None)


def _store_moves(case_id: str, record: DetachRecord, alert: Any) -> bool:
    """This directory's alert store follows the detach, so re-ingesting the alert is a duplicate of its
    new case and `signoff cases --with-alerts` lists it there. Nothing to do where it never was."""
    from signoff import settings
    from signoff.alertstore import AlertStore

    if record.opened.startswith("failed") or record.opened == "":
        return False
    path = settings.home() / "alerts.db"
    if not path.exists():
        return False
    with AlertStore(path) as store:
        return store.move_alert(record.alert_uid, case_id, record.new_case, alert)


def _text(case_id: str, r: DetachRecord, again: bool, remaining: int) -> str:
    lines = [f"alert {r.alert_uid} {'was already' if again else 'is'} detached from case {case_id} by {r.requested_by} "
             f"at {r.at:%Y-%m-%d %H:%M} UTC ({r.reason})" + ("; nothing changed" if again else "")]
    if r.opened.startswith("failed"):
        lines.append(f"its case {r.new_case} could not be opened ({r.opened.removeprefix('failed: ')}): run this "
                     "command again once Temporal is reachable")
    else:
        lines.append(f"its own case: {r.new_case} ({r.opened}); `signoff show {r.new_case}`")
    lines.append(f"case {case_id} now has {remaining} alert{'s' if remaining != 1 else ''}")
    if r.skipped_steps:
        lines.append(f"skipped (their target came only from that alert): {', '.join(r.skipped_steps)}")
    if r.acted_steps:
        lines.append(f"already executed on a target from that alert: {', '.join(r.acted_steps)}; "
                     f"`signoff rollback {case_id} --as USER --reason TEXT` undoes them")
    if r.score_included:
        lines.append(f"the score of case {case_id} was computed with that alert; it is not rescored")
    return "\n".join(lines)
