"""`signoff assign` and `signoff note`: a case's owner and its investigation log (workflows/case_log.py).

Signed with the person's approver key when they have one, like a verdict: a deployment that does
not trust unsigned requests refuses them unsigned. A refusal is recorded in `audit/refused.jsonl`.
"""

from __future__ import annotations

import typer
from rich.markup import escape

from signoff.cli._common import fail, out, run
from signoff.cli.cases import _attempt_id, _signed_token, _update
from signoff.models import AssignRequest, NoteRequest


def register(app: typer.Typer) -> None:
    app.command()(assign)
    app.command()(note)


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
