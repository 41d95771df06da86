"""The escalation chain of a waiting step (policy `tiers.X.escalation`). Part of CaseWorkflow.

A gated step that waits past its tier's timeout escalates: the step and the case go to `escalated`,
the case's `escalations` say so and an `Escalation` goes to the queue file and the webhook. A tier
with an `escalation:` chain escalates once more at each later level, each `after` counted from when
the step started waiting, telling the approvers who hold that level's `notify` roles (level number,
roles and people in the payload). A decision (approval quorum, rejection, verdict, rollback) stops
the chain. Escalation never executes and never changes who may approve: the tier's roles and quorum
still decide, whoever was told. After the last level the step keeps waiting with no deadline.

Replay: a tier without `escalation:` runs exactly the commands it always ran (one timer, one
escalation; the payload leaves the chain fields out). The chain's later timers are new commands,
taken only in cases that took `workflow.patched(ESCALATION_CHAIN)`, asked in the main line right
before the first of them (so only cases that actually reach a second level record the marker).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.case import Escalation
    from policies.engine import parse_duration
    from signoff.models import CaseStatus, EscalationStage, StepState

if TYPE_CHECKING:
    from policies.engine import GovernanceSnapshot
    from signoff.models import CaseInput

ESCALATION_CHAIN = "escalation-chain"


class CaseEscalation:
    # Set by CaseWorkflow.
    gov: GovernanceSnapshot | None
    inp: CaseInput
    escalations: list[str]

    def _escalation_chain(self, since: datetime, step: Any) -> tuple[EscalationStage, ...]:
        """The chain of `step`'s tier as it will run from `since` (state only: no command); () for a
        tier without `escalation:` (its one level is the timeout)."""
        assert self.gov is not None
        policy = self.gov.policy
        return tuple(
            EscalationStage(level=n, after=level.after, notify=level.notify, people=policy.holders_of(level.notify),
                            due=since + parse_duration(level.after))
            for n, level in enumerate(policy.rule_for(step.plan).escalation, start=1)
        )

    async def _escalate_waiting(self, step: Any, timeout: timedelta, decided: Callable[[], bool]) -> None:
        """The step's timeout passed without a decision: escalate, level by level, and keep waiting.
        `step` is a workflows.case._Step whose `chain` came from `_escalation_chain`."""
        chain: tuple[EscalationStage, ...] = step.chain
        level = 1
        while True:
            step.state = StepState.escalated
            step.escalation_level = level
            where = step.plan.target
            if not chain:  # one level: word for word what it always was
                message = (f"step {step.plan.step_id} ({step.plan.action} on {where.kind} {where.id}) waited "
                           f"{timeout} without the approvals its tier needs")
                escalation = Escalation(case_id=self.inp.case_id, reason=message, step_id=step.plan.step_id)
            else:
                stage = chain[level - 1].model_copy(update={"at": workflow.now()})
                step.chain = chain = (*chain[:level - 1], stage, *chain[level:])
                following = chain[level] if level < len(chain) else None
                step.escalates_at = following.due if following else None
                message = (f"step {step.plan.step_id} ({step.plan.action} on {where.kind} {where.id}) waited "
                           f"{stage.after} without the approvals its tier needs: escalation level {level} of "
                           f"{len(chain)}, to {_told(stage)}" + ("" if following else "; no further level")
                           + "; escalation never approves: the tier's roles and quorum still decide")
                escalation = Escalation(case_id=self.inp.case_id, reason=message, step_id=step.plan.step_id,
                                        level=level, notify=stage.notify, people=stage.people)
            self.escalations.append(message)
            self._set_status(CaseStatus.escalated)
            await self._escalate(escalation)
            if level >= len(chain) or decided():
                break
            # The next level's timer is a command histories recorded before the chain never had.
            if not workflow.patched(ESCALATION_CHAIN):
                break
            remaining = chain[level].due - workflow.now()
            if remaining > timedelta(0):
                try:
                    await workflow.wait_condition(decided, timeout=remaining)
                    return
                except TimeoutError:
                    pass
            if decided():
                return
            level += 1
        # Escalation never executes: the step keeps waiting for a human decision.
        await workflow.wait_condition(decided)

    # Provided by CaseWorkflow.
    def _set_status(self, status: CaseStatus, *, defer: bool = False) -> None:
        raise NotImplementedError

    async def _escalate(self, escalation: Escalation) -> None:
        raise NotImplementedError


def _told(stage: EscalationStage) -> str:
    people = ", ".join(stage.people) or "nobody holds these roles now"
    return f"{'/'.join(stage.notify)} ({people})"
