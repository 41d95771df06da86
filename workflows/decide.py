"""The decide step: pure, so the same score under the same policy gives the same decision."""

from __future__ import annotations

from typing import Any

from policies.engine import GovernanceSnapshot
from signoff.models import CaseDecision, DecisionKind, ScoreResult, Verdict


def decide(gov: GovernanceSnapshot, score: ScoreResult | None, scoring_problem: str = "") -> CaseDecision:
    common: dict[str, Any] = dict(
        autonomy=gov.autonomy, threshold=gov.threshold, policy_version=gov.policy_version,
        model_id=score.model_id if score else None, confidence=score.confidence if score else None,
    )
    if score is None:
        why = scoring_problem or "no model scored this case"
        return CaseDecision(kind=DecisionKind.analyst, reason=f"{why}: an analyst decides", **common)
    benign = score.benign_confidence
    if gov.autonomy == "on_the_loop" and gov.threshold is not None and benign >= gov.threshold:
        if gov.review_sampled:
            return CaseDecision(
                kind=DecisionKind.analyst,
                reason=(
                    f"alert type {gov.alert_type} is on the loop and P(not a true positive) = {benign:.4f} "
                    f">= threshold {gov.threshold:.4f}, but this case is in the analysts' review sample "
                    f"({gov.policy.review_sample_rate:.0%} of automatic closes): an analyst reviews it"
                ),
                **common,
            )
        return CaseDecision(
            kind=DecisionKind.auto_close,
            reason=(
                f"alert type {gov.alert_type} is on the loop and P(not a true positive) = {benign:.4f} "
                f">= threshold {gov.threshold:.4f} set by {gov.threshold_set_by}"
            ),
            **common,
        )
    if score.predicted == Verdict.true_positive:
        return CaseDecision(
            kind=DecisionKind.respond,
            reason=(
                f"likely true positive (confidence {score.confidence:.3f}): the playbook runs, "
                "high-impact steps wait for approval"
            ),
            **common,
        )
    if gov.autonomy == "in_the_loop":
        why = f"alert type {gov.alert_type} is in the loop (shadow mode): an analyst decides"
    elif gov.threshold is None:
        why = f"alert type {gov.alert_type} has no threshold set: an analyst decides"
    else:
        why = f"P(not a true positive) = {benign:.4f} is below the threshold {gov.threshold:.4f}: an analyst decides"
    return CaseDecision(kind=DecisionKind.analyst, reason=f"model predicts {score.predicted.value}; {why}", **common)
