"""Case-workflow steps for earned autonomy, kept out of workflows/case.py so its edits stay small.

* `shadow_score`: when a candidate model is in shadow, score the case with it too (recorded in the
  case's history and view; it never decides).
* `recheck_governance`: right before an automatic close, read the live governance state again, so
  a kill switch pulled while the case was enriching or scoring is respected.
* `record_verdict_of`: after an analyst's verdict, count it as evidence in the governance workflow.

Failures here never fail a case: evidence and shadow scores are best effort, decisions are not.
"""

from __future__ import annotations

import contextlib
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.case import GovernanceRequest, load_governance
    from activities.governance import record_verdict
    from activities.scoring import ScoreRequest, score_case
    from policies.engine import GovernanceSnapshot
    from signoff.autonomy.models import VerdictRecord
    from signoff.models import Alert, CaseDecision, CaseInput, CloseRequest, ScoreResult

QUICK = RetryPolicy(initial_interval=timedelta(milliseconds=200), maximum_attempts=5)


async def shadow_score(inp: CaseInput, gov: GovernanceSnapshot, alerts: tuple[Alert, ...],
                       score: ScoreResult | None) -> ScoreResult | None:
    candidate = gov.candidate_model_id
    if not candidate or not alerts or (score is not None and score.model_id == candidate):
        return None
    try:
        return await workflow.execute_activity(
            score_case, ScoreRequest(case_id=inp.case_id, alerts=alerts, model_id=candidate),
            start_to_close_timeout=timedelta(seconds=60), retry_policy=QUICK,
            summary=f"shadow score with candidate {candidate[:12]}",
        )
    except ActivityError:
        return None


async def recheck_governance(inp: CaseInput, why: str = "re-read governance before an automatic close",
                             *, local: bool = True) -> GovernanceSnapshot:
    # A local activity like the case's first read (a marker in history, no extra server round trip);
    # an activity (`local=False`) where a human's update may come while it runs (workflows/case.py
    # LOCAL_RESULT_RACE).
    request = GovernanceRequest(alert_type=inp.alert_type, case_id=inp.case_id, fresh=True)
    if not local:
        return await workflow.execute_activity(
            load_governance, request, start_to_close_timeout=timedelta(seconds=30), retry_policy=QUICK, summary=why,
        )
    return await workflow.execute_local_activity(
        load_governance, request, start_to_close_timeout=timedelta(seconds=30), retry_policy=QUICK, summary=why,
    )


async def record_verdict_of(inp: CaseInput, gov: GovernanceSnapshot | None, score: ScoreResult | None,
                            decision: CaseDecision | None, verdict: CloseRequest | None,
                            shadow: ScoreResult | None) -> None:
    if verdict is None or gov is None:
        return
    record = VerdictRecord(
        case_id=inp.case_id, alert_type=gov.alert_type, verdict=verdict.verdict, analyst=verdict.analyst,
        reason=verdict.reason, at=workflow.now(),
        model_id=score.model_id if score else None, predicted=score.predicted if score else None,
        benign_confidence=score.benign_confidence if score else None,
        threshold=decision.threshold if decision else gov.threshold, autonomy=gov.autonomy,
        decision=decision.kind.value if decision else "", review_sampled=gov.review_sampled,
        candidate_model_id=shadow.model_id if shadow else None,
        candidate_predicted=shadow.predicted if shadow else None,
        candidate_benign_confidence=shadow.benign_confidence if shadow else None,
    )
    # On failure the verdict is still in this case's history; only the counters miss it.
    with contextlib.suppress(ActivityError):
        await workflow.execute_activity(
            record_verdict, record, start_to_close_timeout=timedelta(seconds=30), retry_policy=QUICK,
        )
