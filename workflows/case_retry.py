"""Retrying what a failed step stopped (`retry`), once its cause is fixed. Part of CaseWorkflow.

A step that fails (vendor down, credentials expired, a target that vanished) stops the playbook:
the steps after it are skipped and, under `on_step_failure: compensate`, the ones it had already
executed are undone; the case escalates with status `action_failed`. Other tools make the analyst
rebuild the run by hand (Shuffle #345, #486: "replay from a node"). Here a person who may decide
cases asks for a retry once the cause is fixed, and that attempt's steps run again in playbook
order: the failed one, the ones it stopped and the ones its failure undid. Gated steps wait for
**fresh** approvals (those of the failed attempt were given before it failed and are kept in the
history, not re-used); automatic steps run. Steps still in effect are left as they are.

`retry` is an update: refused before anything is written unless the case's last attempt failed and
its failure was handled (a failed compensation needs the rollback first), the case is open, and the
requester may decide cases and signs where the policy wants it. Nothing retries on its own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from policies.engine import close_roles
    from policies.signing import token_nonce
    from signoff.models import MAX_REASON_CHARS, CaseStatus, Decision, RetryRecord, RetryRequest, StepState

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from policies.engine import GovernanceSnapshot
    from signoff.models import CloseRequest, RollbackRequest

MAX_RETRIES = 5  # per case: past it the cause is not fixed; roll back or close, and open a new case


class CaseRetry:
    # Set by CaseWorkflow (workflows/case.py; annotations only: a stub here would shadow it).
    _refuse_while_local_activity: Callable[[], None]  # CaseWorkflow's (annotation only: no stub)
    _signer_unknown: Callable[[str | None, Decision, str, str | None], bool]
    _recheck_unknown_signer: Callable[..., Awaitable[None]]
    gov: GovernanceSnapshot | None
    steps: dict[str, Any]  # step id -> workflows.case._Step
    case_status: CaseStatus
    used_nonces: set[str]
    verdict: CloseRequest | None
    verdict_window_over: bool
    finishing: bool
    rollback_request: RollbackRequest | None
    rollback_checking: bool  # workflows/case_recheck.py
    rollback_done: bool
    escalations: list[str]

    def _init_retry(self) -> None:
        self.retries: list[RetryRecord] = []
        self.retry_pending = False
        self.failed_attempt: tuple[str, ...] = ()  # what a retry would run again, in playbook order

    @workflow.update(description='Run a failed attempt again once its cause is fixed: {"requested_by": "carol", "reason": "EDR API key renewed"}')
    async def retry(self, req: RetryRequest) -> str:
        await self._recheck_unknown_signer(Decision.retry, req.requested_by, req.reason, req.token,
                                           lambda: self._retry_refusal(req), "RetryRefused")
        if req.token:
            self.used_nonces.add(token_nonce(req.token))
        steps = self.failed_attempt
        self.retries.append(RetryRecord(requested_by=req.requested_by, reason=req.reason.strip(), at=workflow.now(),
                                        steps=steps, signed=req.token is not None))
        self.retry_pending = True
        gated = [s for s in steps if not self.steps[s].auto]
        return (f"retry {len(self.retries)} accepted: {', '.join(steps)} run again in playbook order"
                + (f"; {', '.join(gated)} wait for fresh approval" if gated else ""))

    @retry.validator
    def _validate_retry(self, req: RetryRequest) -> None:
        self._refuse_while_local_activity()
        refusal = self._retry_refusal(req)
        if refusal and not self._signer_unknown(refusal, Decision.retry, req.requested_by, req.token):
            raise ApplicationError(refusal, type="RetryRefused", non_retryable=True)

    def _retry_refusal(self, req: RetryRequest) -> str | None:
        if self.gov is None:
            return "the case is still being triaged; nothing has run yet"
        policy = self.gov.policy
        if req.requested_by not in policy.approvers:
            return f"{req.requested_by!r} is not in policy; people in policy: {sorted(policy.approvers)}"
        allowed = close_roles(policy, self.gov.alert_type)
        roles = policy.roles_of(req.requested_by)
        if not set(roles) & set(allowed):
            return f"{req.requested_by!r} has roles {list(roles)}; retrying a case needs one of {list(allowed)}"
        if not req.reason.strip():
            return "a reason is required: say what was fixed"
        if len(req.reason) > MAX_REASON_CHARS:
            return f"the reason is {len(req.reason)} characters; keep it under {MAX_REASON_CHARS} (link a ticket)"
        if self.verdict is not None or self.verdict_window_over or self.finishing:
            return "the case is closed: open a new case to act again"
        if self.retry_pending:
            return "a retry is already under way"
        if self.rollback_request is not None or self.rollback_checking:
            return "the case has been rolled back (or is rolling back): open a new case to act again"
        if self.case_status == CaseStatus.rollback_failed:
            return ("a compensation failed: undo what is left first (`signoff rollback`, or by hand), "
                    "then retry or open a new case")
        if self.case_status != CaseStatus.action_failed or not self.failed_attempt:
            return f"nothing failed on this case (status {self.case_status.value}): there is nothing to retry"
        if len(self.retries) >= MAX_RETRIES:
            return (f"the case was retried {MAX_RETRIES} times, the most it allows: roll it back or close it, "
                    "and open a new case once the cause is fixed")
        return self._case_token_refusal(Decision.retry, req.requested_by, req.token)

    def _record_failed_attempt(self, failed_step: str, stopped: list[str]) -> None:
        """After a failure has been handled: what a retry would run again (state only)."""
        undone = {sid for sid, s in self.steps.items() if s.state == StepState.compensated}
        again = {failed_step, *stopped, *undone}
        self.failed_attempt = tuple(sid for sid in self.steps if sid in again)

    def _supersede_retry(self, by: str) -> None:
        """A retry accepted, then overtaken by a rollback or a verdict before it ran: it never runs."""
        self.retry_pending = False
        self.failed_attempt = ()
        self.escalations.append(f"retry {len(self.retries)} by {self.retries[-1].requested_by} did not run: "
                                f"{by} came first")

    async def _retry(self) -> None:
        """Run the failed attempt's steps again (an accepted `retry`)."""
        self.retry_pending = False
        attempt = len(self.retries) + 1
        for step_id in self.failed_attempt:
            self.steps[step_id].start_over(attempt)
        self.failed_attempt = ()
        self._set_status(CaseStatus.running)
        await self._run_steps(retrying=True)
        self._settle_status_after_steps()

    # Provided by CaseWorkflow.
    def _case_token_refusal(self, decision: Decision, user: str, token: str | None) -> str | None:
        raise NotImplementedError

    def _set_status(self, status: CaseStatus, *, defer: bool = False) -> None:
        raise NotImplementedError

    async def _run_steps(self, *, retrying: bool = False) -> None:
        raise NotImplementedError

    def _settle_status_after_steps(self) -> None:
        raise NotImplementedError
