"""The drift check: figures (an activity), governance's reaction (demote), and a case for people.

Run by a Temporal Schedule (`signoff-drift-schedule`, interval from policy `drift.schedule`) and on
demand by `signoff drift check`. Its result (the `DriftReport`) stays in its history: the drift
figures over time are the results of these runs (`signoff drift report`).
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.workflow import ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from activities.drift import DriftRequest, apply_drift, compute_drift
    from signoff.autonomy.models import SYSTEM_DRIFT, DriftCheckInput, DriftReport
    from signoff.models import Alert, CaseInput
    from workflows.case import CaseWorkflow

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
        if not inp.act or not breached:
            return report
        demoted = await workflow.execute_activity(
            apply_drift, report, start_to_close_timeout=timedelta(minutes=1), retry_policy=QUICK,
        )
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
