"""The drift check: figures (an activity), governance's reaction (demote), and a case for people.

Run by a Temporal Schedule (`signoff-drift-schedule`, interval from policy `drift.schedule`) and on
demand by `signoff drift check`. Its result (the `DriftReport`) stays in its history: the drift
figures over time are the results of these runs (`signoff drift report`).

Every breach demotes the breached alert types (idempotent in governance). The drift case is one
per (model, breached alert types) while it is open: a later check finding the same breach adds its
measurement to it (`add_alerts`); after it closes, the next breach opens the next one.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.workflow import ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from activities.drift import DriftCaseRequest, DriftRequest, apply_drift, compute_drift, open_drift_case
    from signoff.autonomy.models import (
        DRIFT_WORKFLOW_ID,
        SYSTEM_DRIFT,
        DriftCheckInput,
        DriftFinding,
        DriftReport,
    )
    from signoff.models import Alert, CaseInput
    from workflows.case import CaseWorkflow

REPORT_CLEAN_CHECKS = "report-clean-drift-checks"  # workflow.patched: histories before it replay as they ran
QUICK = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_attempts=5)


@workflow.defn(name="DriftCheckWorkflow")
class DriftCheckWorkflow:
    @workflow.run
    async def run(self, inp: DriftCheckInput) -> DriftReport:
        report = await workflow.execute_activity(
            compute_drift, DriftRequest(alert_types=inp.alert_types),
            start_to_close_timeout=timedelta(minutes=10), retry_policy=QUICK,
        )
        breached = [f for f in report.findings if f.breaches]
        if not inp.act:
            return report
        if not breached:
            # QA5: a clean check never reached the governance workflow, so its `last_drift` kept the last
            # breach, and "promote after a clean drift check" could never be met. A clean check of every
            # alert type now replaces it (one for some types only does not clear the others).
            if not inp.alert_types and workflow.patched(REPORT_CLEAN_CHECKS):
                await workflow.execute_activity(
                    apply_drift, report, start_to_close_timeout=timedelta(minutes=1), retry_policy=QUICK,
                )
            return report
        demoted = await workflow.execute_activity(
            apply_drift, report, start_to_close_timeout=timedelta(minutes=1), retry_policy=QUICK,
        )
        if not workflow.patched("drift-case-dedupe"):
            return await self._open_case_per_check(inp, report, demoted, breached)
        # One drift case per (model, breached alert types) while it is open: a later check that
        # finds the same breach adds its measurement to that case instead of opening another.
        info = workflow.info()
        summary = "; ".join(f"{f.alert_type}: {', '.join(f.breaches)}" for f in breached)
        types = tuple(sorted(f.alert_type for f in breached))
        finding = Alert(
            uid=f"drift-check:{info.workflow_id}:{info.run_id}", source="signoff-drift", time=workflow.now(),
            title=f"Model drift on {', '.join(types)}: {summary}"[:200], rule="drift-check",
            category="ModelDrift", severity="high",
            attributes={"model_id": report.model_id, "breaches": summary[:2000], "demoted": ",".join(demoted),
                        "drift_check": info.workflow_id, "trigger": _trigger(info.workflow_id),
                        "measured_at": report.at.isoformat()},
        )
        case = await workflow.execute_activity(
            open_drift_case,
            DriftCaseRequest(model_id=report.model_id, alert_types=types, case_alert_type=inp.drift_case_alert_type,
                             title=f"Model drift: {summary}"[:200], requested_by=SYSTEM_DRIFT, finding=finding),
            start_to_close_timeout=timedelta(minutes=1), retry_policy=QUICK,
        )
        return report.model_copy(update=dict(demoted=tuple(demoted), drift_case_id=case.case_id,
                                             drift_case_joined=not case.opened))

    async def _open_case_per_check(self, inp: DriftCheckInput, report: DriftReport, demoted: list[str],
                                   breached: list[DriftFinding]) -> DriftReport:
        """Before `drift-case-dedupe`: a new child case per breaching check (kept for replay)."""
        case_id = f"model-drift-{report.model_id[:12]}-{workflow.now():%Y%m%dT%H%M%S}"
        summary = "; ".join(f"{f.alert_type}: {', '.join(f.breaches)}" for f in breached)
        alert = Alert(
            uid=f"{case_id}:finding", source="signoff-drift", time=workflow.now(),
            title=f"Model drift on {', '.join(f.alert_type for f in breached)}"[:200], rule="drift-check",
            category="ModelDrift", severity="high",
            attributes={"model_id": report.model_id, "breaches": summary[:2000],
                        "demoted": ",".join(demoted), "drift_check": workflow.info().workflow_id},
        )
        await workflow.start_child_workflow(
            CaseWorkflow.run,
            CaseInput(case_id=case_id, alert_type=inp.drift_case_alert_type, severity="high",
                      title=f"Model drift: {summary}"[:200], requested_by=SYSTEM_DRIFT, alerts=(alert,)),
            id=case_id, parent_close_policy=ParentClosePolicy.ABANDON,
        )
        return report.model_copy(update=dict(demoted=tuple(demoted), drift_case_id=case_id))


def _trigger(workflow_id: str) -> str:
    """How the check was started: the Schedule's runs carry its action's workflow id as a prefix."""
    return "schedule" if workflow_id.startswith(DRIFT_WORKFLOW_ID) else "on demand"
