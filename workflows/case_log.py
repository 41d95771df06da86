"""What people add to a case besides decisions: who owns it (`assign`) and its investigation log
(`note`). Part of CaseWorkflow (a mixin: the handlers are the case's own).

Both are updates, so a bad request is refused before anything is written: a person not in the
policy, an empty or oversized text, a case already closed, or (in deployments that do not trust
unsigned requests) a request not signed by that person's key. What is accepted is in the history,
who, when and what, and so in `signoff explain` and the audit export (the audit trail the
investigation log of other tools lacks: TheHive #2344). Neither changes what the case does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from policies.signing import token_nonce
    from signoff import search_attributes as sa
    from signoff.models import MAX_REASON_CHARS, Assignment, AssignRequest, CaseNote, Decision, NoteRequest

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from temporalio.common import SearchAttributeUpdate

    from policies.engine import GovernanceSnapshot

MAX_NOTE_CHARS = MAX_REASON_CHARS
MAX_NOTES = 500  # a case's log; past it, link a ticket (each note is a history event)
MAX_ASSIGNMENTS = 200  # hand-overs per case: past it someone is bouncing the case (each is a history event)


class CaseLog:
    # Set by CaseWorkflow.
    _refuse_while_local_activity: Callable[[], None]  # CaseWorkflow's (annotation only: no stub)
    _signer_unknown: Callable[[str | None, Decision, str, str | None], bool]
    _recheck_unknown_signer: Callable[..., Awaitable[None]]
    gov: GovernanceSnapshot | None
    used_nonces: set[str]
    verdict_window_over: bool
    finishing: bool

    def _init_log(self) -> None:
        self.assignee: str | None = None
        self.assignments: list[Assignment] = []
        self.notes: list[CaseNote] = []

    @workflow.update(description='Give the case an owner: {"assignee": "bob", "by": "carol", "reason": "on shift"}')
    async def assign(self, req: AssignRequest) -> str:
        await self._recheck_unknown_signer(Decision.assign, req.by, req.reason, req.token,
                                           lambda: self._assign_refusal(req), "AssignRefused")
        self._take_token(req.token)
        self.assignments.append(Assignment(assignee=req.assignee, by=req.by, reason=req.reason.strip(),
                                           at=workflow.now(), signed=req.token is not None))
        self.assignee = req.assignee
        self._upsert([sa.ASSIGNEE.value_set(req.assignee)])
        return f"assigned to {req.assignee} by {req.by}"

    @assign.validator
    def _validate_assign(self, req: AssignRequest) -> None:
        self._refuse_while_local_activity()
        refusal = self._assign_refusal(req)
        if refusal and not self._signer_unknown(refusal, Decision.assign, req.by, req.token):
            raise ApplicationError(refusal, type="AssignRefused", non_retryable=True)

    def _assign_refusal(self, req: AssignRequest) -> str | None:
        refusal = self._log_refusal(Decision.assign, req.by, req.reason, req.token, text_required=False)
        if refusal is None and self.gov is not None and req.assignee not in self.gov.policy.approvers:
            refusal = (f"{req.assignee!r} is not in policy, so could not decide the case; "
                       f"assign one of {sorted(self.gov.policy.approvers)}")
        if refusal is None and req.assignee == self.assignee:
            refusal = f"the case is already assigned to {req.assignee}"
        if refusal is None and len(self.assignments) >= MAX_ASSIGNMENTS:
            refusal = (f"the case was handed over {MAX_ASSIGNMENTS} times, the most it keeps: ask a lead to take it "
                       "(`signoff note` the hand-over instead)")
        return refusal

    @workflow.update(description='Add to the investigation log: {"author": "alice", "text": "user confirms travel"}')
    async def note(self, req: NoteRequest) -> str:
        await self._recheck_unknown_signer(Decision.note, req.author, req.text, req.token,
                                           lambda: self._note_refusal(req), "NoteRefused")
        self._take_token(req.token)
        self.notes.append(CaseNote(author=req.author, text=req.text.strip(), at=workflow.now(),
                                   signed=req.token is not None))
        return f"note {len(self.notes)} added by {req.author}"

    @note.validator
    def _validate_note(self, req: NoteRequest) -> None:
        self._refuse_while_local_activity()
        refusal = self._note_refusal(req)
        if refusal and not self._signer_unknown(refusal, Decision.note, req.author, req.token):
            raise ApplicationError(refusal, type="NoteRefused", non_retryable=True)

    def _note_refusal(self, req: NoteRequest) -> str | None:
        refusal = self._log_refusal(Decision.note, req.author, req.text, req.token, text_required=True)
        if refusal is None and len(self.notes) >= MAX_NOTES:
            refusal = f"the case has {MAX_NOTES} notes, the most it keeps; link a ticket for the rest"
        return refusal

    def _log_refusal(self, decision: Decision, user: str, text: str, token: str | None, *,
                     text_required: bool) -> str | None:
        if self.gov is None:
            return "the case is still being triaged; try again in a moment"
        if self.verdict_window_over or self.finishing:
            return "the case is closed: its log and owner are final (`signoff explain` shows them)"
        if user not in self.gov.policy.approvers:
            return f"{user!r} is not in policy; people in policy: {sorted(self.gov.policy.approvers)}"
        if text_required and not text.strip():
            return "the note is empty"
        if len(text) > MAX_NOTE_CHARS:
            return (f"the text is {len(text)} characters; keep it under {MAX_NOTE_CHARS} "
                    "(link a ticket or an attachment store for the details)")
        return self._case_token_refusal(decision, user, token)

    def _take_token(self, token: str | None) -> None:
        if token:
            self.used_nonces.add(token_nonce(token))

    def _log_view(self) -> dict[str, Any]:
        return {"assignee": self.assignee, "assignments": tuple(self.assignments), "notes": tuple(self.notes)}

    # Provided by CaseWorkflow.
    def _upsert(self, updates: list[SearchAttributeUpdate[Any]], *, defer: bool = False) -> None:
        raise NotImplementedError

    def _case_token_refusal(self, decision: Decision, user: str, token: str | None) -> str | None:
        raise NotImplementedError
