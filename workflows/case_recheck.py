"""Before a gated step runs, the policy in force decides whether its approvals still count (QA6: a
revoked key, and a lab case after the switch to a production policy, kept approving for weeks). Part
of CaseWorkflow (a mixin). The rule itself is `policies.revocation`, pure and recorded: the policy
re-read here is a marker in the history, so `signoff explain` reaches the same answer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.case import Escalation
    from policies.engine import quorum_met
    from policies.revocation import VOIDED, tightened, void_reason
    from policies.signing import token_channel, token_claims
    from signoff import search_attributes as sa
    from signoff.models import StepState
    from workflows.feedback import recheck_governance

if TYPE_CHECKING:
    from temporalio.common import SearchAttributeUpdate

    from policies.engine import GovernanceSnapshot
    from signoff.models import CaseInput

# Cases recorded before this check replay without the re-read; taken only for an approved gated step.
RECHECK_APPROVALS = "recheck-approvals"


# Steps whose approvals have not been used yet.
_NOT_RUN = (StepState.awaiting_approval, StepState.escalated, StepState.approved)


class CaseRecheck:
    # Set by CaseWorkflow.
    steps: dict[str, Any]
    inp: CaseInput
    gov: GovernanceSnapshot | None
    escalations: list[str]

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
        """A signed request to a case whose policy trusts unsigned ones (a lab-era case) from a person or key
        that policy does not know: checked against the policy in force instead of refused outright (after
        the switch to a signed-only policy, the approvers' keys are there). Only where unsigned requests
        are trusted: there any request may reach the history anyway, so a refusal in the handler (recorded)
        costs nothing; where they are not, a refused request never reaches the history."""
        if token is None or self.gov is None or not self.gov.policy.deployment.trust_unsigned_approvals:
            return False
        claims = token_claims(token)
        if claims is None or (claims.get("case"), claims.get("step"), claims.get("decision"),
                              claims.get("approver")) != (self.inp.case_id, step, decision, approver):
            return False  # malformed, or for another case, step or decision: refused at once, as ever
        policy = self.gov.policy
        entry = policy.approvers.get(approver)
        channel = token_channel(token)
        if channel is None:
            return entry is None or entry.public_key is None
        bridge = channel.partition(":")[0]
        return entry is None or bridge not in policy.deployment.chat_bridges or not entry.slack_user

    async def _refresh_identities(self, approver: str) -> None:
        """Before the handler of a request the validator let through because the case's policy did not
        know its signer (`_identity_unknown_to_case`): adopt the identities in force (the handler then
        checks the request against them)."""
        if not workflow.patched(RECHECK_APPROVALS):
            return
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
        fresh = await recheck_governance(self.inp, why=why)
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
