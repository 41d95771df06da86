"""Before a gated step runs, the policy in force decides whether its approvals still count (QA6: a
revoked key, and a lab case after the switch to a production policy, kept approving for weeks). Part
of CaseWorkflow (a mixin). The rule itself is `policies.revocation`, pure and recorded: the policy
re-read here is a marker in the history, so `signoff explain` reaches the same answer.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.case import Escalation
    from policies.engine import quorum_met
    from policies.revocation import VOIDED, rollback_vote_void_reason, tightened, void_reason
    from policies.signing import CASE_STEP, token_channel, token_claims, token_refusal
    from signoff import search_attributes as sa
    from signoff.models import ApprovalRecord, Decision, RollbackRequest, StepState
    from workflows.feedback import recheck_governance

if TYPE_CHECKING:
    from temporalio.common import SearchAttributeUpdate

    from policies.engine import GovernanceSnapshot
    from signoff.models import CaseInput

# Cases recorded before this check replay without the re-read; taken only for an approved gated step.
RECHECK_APPROVALS = "recheck-approvals"
# Likewise for a rollback whose quorum is met: taken only then.
RECHECK_ROLLBACK = "recheck-rollback"
# A voided rollback request, as the case keeps it among its refusals (`signoff show`, the audit export).
VOIDED_VOTE = "voided before the rollback ran"
# A signed-only case re-reads the identities in force for a signature its own copy of the policy does not
# verify (a rotated key) only if no such request made it re-read them for this long: each such request is
# written to its history, also a forged one. One re-read adopts every key in force, so a rotation is
# missed only if it happened within the hour after another such re-read.
REFRESH_EVERY = timedelta(hours=1)


# Steps whose approvals have not been used yet.
_NOT_RUN = (StepState.awaiting_approval, StepState.escalated, StepState.approved)


class CaseRecheck:
    # Set by CaseWorkflow.
    steps: dict[str, Any]
    inp: CaseInput
    gov: GovernanceSnapshot | None
    escalations: list[str]
    refusals: list[ApprovalRecord]
    used_nonces: set[str]
    rollback_request: RollbackRequest | None
    rollback_done: bool
    rollback_votes: list[RollbackRequest]
    local_race_safe: bool
    # Set in `_init_recheck`.
    rollback_checking: bool
    rollback_check_answer: str
    rollback_check: asyncio.Task[None] | None
    identities_read_at: datetime | None

    def _init_recheck(self) -> None:
        self.rollback_checking = False  # a quorum was met; the identities behind it are being re-read
        self.rollback_check_answer = ""  # what the check made of it (the update's reply)
        self.rollback_check = None
        self.identities_read_at = None  # when a signer the case did not know last made it re-read them

    async def _approvals_still_count(self, step: Any) -> bool:
        """True when the step may run: its quorum holds under the identities in force now. Otherwise its
        voided approvals are marked (who, why), a human is told, and the step waits for approvals again."""
        if step.state != StepState.approved or not workflow.patched(RECHECK_APPROVALS):
            return True
        voided = await self._adopt_identities_in_force("re-read approvers and keys before a gated step runs")
        if not voided:
            return True
        runs = step.state == StepState.approved
        await self._tell_voided(voided, step.plan.step_id, (
            f"step {step.plan.step_id} still has its quorum and runs" if runs else
            f"step {step.plan.step_id} ({step.plan.action} on {step.plan.target.kind} {step.plan.target.id}) "
            "did not run and waits for approvals again"))
        return runs

    def _identity_unknown_to_case(self, token: str | None, approver: str, step: str, decision: str) -> bool:
        """A signed request from a person or key the case's copy of the policy does not know: checked
        against the policy in force instead of refused outright.

        - A case whose policy trusts unsigned requests (a lab-era case; after the switch to a signed-only
          policy the approvers' keys are in force): any such request. There any request may reach the
          history anyway, so a refusal in the handler (recorded) costs nothing.
        - A signed-only case: a known approver whose signature does not verify with the key the case
          knows (a key rotated since the case opened), unless the case re-read the identities in force
          within `REFRESH_EVERY`: each try writes to the history; a forged token is refused and recorded."""
        if token is None or self.gov is None:
            return False
        claims = token_claims(token)
        if claims is None or (claims.get("case"), claims.get("step"), claims.get("decision"),
                              claims.get("approver")) != (self.inp.case_id, step, decision, approver):
            return False  # malformed, or for another case, step or decision: refused at once, as ever
        policy = self.gov.policy
        if not policy.deployment.trust_unsigned_approvals:
            return self._key_maybe_rotated(token, approver, step, decision)
        entry = policy.approvers.get(approver)
        channel = token_channel(token)
        if channel is None:
            return entry is None or entry.public_key is None
        bridge = channel.partition(":")[0]
        return entry is None or bridge not in policy.deployment.chat_bridges or not entry.slack_user

    def _key_maybe_rotated(self, token: str, approver: str, step: str, decision: str) -> bool:
        assert self.gov is not None
        if approver not in self.gov.policy.approvers:
            return False
        last = self.identities_read_at
        if last is not None and workflow.now() - last < REFRESH_EVERY:
            return False
        with workflow.unsafe.imports_passed_through():  # cryptography's lazy backend (see CaseWorkflow._refusal)
            refusal = token_refusal(self.gov.policy, case_id=self.inp.case_id, step=step, decision=decision,
                                    approver=approver, token=token, now=workflow.now(), used_nonces=set())
        return refusal is not None and refusal.startswith("forged or corrupted token: the signature does not verify")

    async def _refresh_identities(self, approver: str) -> None:
        """Before the handler of a request the validator let through because the case's policy did not
        know its signer (`_identity_unknown_to_case`): adopt the identities in force (the handler then
        checks the request against them)."""
        if not workflow.patched(RECHECK_APPROVALS):
            return
        self.identities_read_at = workflow.now()
        voided = await self._adopt_identities_in_force(f"re-read approvers and keys for a signed request from "
                                                       f"{approver[:80]!r}")
        if voided:
            await self._tell_voided(voided, "", "the steps concerned wait for approvals again")

    async def _adopt_identities_in_force(self, why: str) -> dict[str, list[str]]:
        """Re-read the policy in force; void the approvals of steps still to run that it no longer stands
        behind; from here on check approvals against its approvers and keys, trusting unsigned ones only
        if both the case's own policy and the one in force do. Every step still to run is checked at
        once: approvals given ahead of their turn were verified against the same identities."""
        assert self.gov is not None
        # An activity in cases that took LOCAL_RESULT_RACE (workflows/case.py): it runs before a gated step and
        # in update handlers, where another update may come meanwhile.
        fresh = await recheck_governance(self.inp, why=why, local=not self.local_race_safe)
        case_policy = self.gov.policy
        voided: dict[str, list[str]] = {}
        for other in self.steps.values():
            if other.state not in _NOT_RUN:
                continue
            for i, record in enumerate(other.approvals):
                reason = void_reason(case_policy, fresh.policy, other.plan, record)
                if reason:
                    other.approvals[i] = record.model_copy(update={
                        "accepted": False, "refusal": f"{VOIDED}: {reason}"})
                    voided.setdefault(other.plan.step_id, []).append(f"{record.approver}: {reason}")
        self.gov = self.gov.model_copy(update={"policy": tightened(case_policy, fresh.policy)})
        if voided:
            for other in self.steps.values():
                if other.state == StepState.approved and not quorum_met(self.gov.policy, other.plan, other.approvals):
                    other.state = StepState.awaiting_approval
            self._upsert([sa.APPROVERS.value_set(self._all_approvers())])
        return voided

    # ------------------------------------------------------------------ rollback quorum

    def _check_rollback_later(self, req: RollbackRequest) -> bool:
        """`req` meets the rollback quorum: re-read who may roll back before the rollback is accepted
        (a task; the update that met the quorum waits for it). False in cases recorded before the check."""
        if not workflow.patched(RECHECK_ROLLBACK):
            return False
        self.rollback_checking = True
        self.rollback_check_answer = ""
        self.rollback_check = asyncio.create_task(self._check_rollback(req))
        return True

    async def _check_rollback(self, req: RollbackRequest) -> None:
        """A task nothing awaits (an exception in it would only be logged): whatever happens, the flag
        is cleared, so the update that met the quorum answers and the case can end."""
        try:
            await self._check_rollback_quorum(req)
        finally:
            if self.rollback_checking:  # an unexpected error: nothing accepted, the requester is told
                self.rollback_check_answer = self.rollback_check_answer or (
                    "refused: the rollback request could not be checked; nothing was undone: ask again")
                self.rollback_checking = False

    async def _check_rollback_quorum(self, req: RollbackRequest) -> None:
        """Accept the rollback only if the requests behind its quorum still count under the policy in
        force; otherwise the voided ones are dropped (kept among the refusals, a human is told) and the
        rollback waits for more requests. A policy that cannot be read leaves the votes as they were."""
        assert self.gov is not None
        votes = [*self.rollback_votes, req]
        before = self.gov.policy
        try:
            voided_steps = await self._adopt_identities_in_force("re-read who may roll back before a rollback runs")
        except (ActivityError, ApplicationError) as err:
            self.rollback_check_answer = (f"refused: the policy in force could not be read to check who asked "
                                          f"({err.cause or err}); nothing was undone: ask again")
            self.rollback_checking = False
            return
        policy = self.gov.policy
        lost: dict[str, str] = {}
        for vote in votes:
            reason = rollback_vote_void_reason(before, policy, vote.requested_by, vote.token is not None,
                                               token_channel(vote.token))
            if reason:
                lost[vote.requested_by] = reason
        kept = [v for v in votes if v.requested_by not in lost]
        if voided_steps:
            await self._tell_voided(voided_steps, "", "the steps concerned wait for approvals again")
        if len(kept) >= max(policy.rollback_quorum, 1):
            self.rollback_votes = []
            self.rollback_request, self.rollback_done = req, False
            self.rollback_checking = False
            return
        for vote in votes:
            if vote.requested_by in lost:
                self.refusals.append(ApprovalRecord(
                    step=CASE_STEP, approver=vote.requested_by, decision=Decision.rollback, reason=vote.reason,
                    at=workflow.now(), via="rollback_vote", signed=vote.token is not None, accepted=False,
                    refusal=f"{VOIDED_VOTE}: {lost[vote.requested_by]}"))
        self.rollback_votes = kept
        missing = max(policy.rollback_quorum, 1) - len(kept)
        gone = "; ".join(f"{who}: {why}" for who, why in lost.items())
        message = (f"rollback requests no longer count under the policy in force ({gone}); nothing was undone: "
                   f"the rollback needs {missing} more request(s) from people with one of the roles "
                   f"{list(policy.rollback_roles)}")
        # In the words of a counted request (`signoff explain` reads the reply), or the requester's refusal.
        self.rollback_check_answer = (
            f"refused: {lost[req.requested_by]}" if req.requested_by in lost else
            f"rollback requested by {req.requested_by} ({len(kept)}/{max(policy.rollback_quorum, 1)}, asked: "
            f"{', '.join(v.requested_by for v in kept)}): {message}")
        self.escalations.append(message)
        await self._escalate(Escalation(case_id=self.inp.case_id, reason=message, step_id="",
                                        kind="approval_voided"))
        self.rollback_checking = False

    async def _tell_voided(self, voided: dict[str, list[str]], step_id: str, outcome: str) -> None:
        lost = "; ".join(f"{s}: {', '.join(why)}" for s, why in voided.items())
        message = f"approvals no longer count under the policy in force ({lost}); {outcome}"
        self.escalations.append(message)
        await self._escalate(Escalation(case_id=self.inp.case_id, reason=message, step_id=step_id,
                                        kind="approval_voided"))

    def _upsert(self, updates: list[SearchAttributeUpdate[Any]], *, defer: bool = False) -> None:
        raise NotImplementedError  # CaseWorkflow's

    def _all_approvers(self) -> list[str]:
        raise NotImplementedError

    async def _escalate(self, escalation: Escalation) -> None:
        raise NotImplementedError
