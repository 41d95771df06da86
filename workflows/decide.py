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
    if gov.alert_type == gov.policy.drift.open_case_alert_type:
        # Its alerts are the drift check's findings, not security evidence: the triage model's score
        # means nothing here (the shipped policy marks the type `scored: false`, so there is none;
        # cases from before that carry one in their record). Pure: replay-safe either way.
        return CaseDecision(kind=DecisionKind.analyst, reason=(
            f"a {gov.alert_type} case is for detection engineers: the triage model's score does not apply"),
            **common)
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
        return CaseDecision(kind=DecisionKind.respond, reason=_respond_reason(score), **common)
    if gov.autonomy == "in_the_loop":
        why = f"alert type {gov.alert_type} is in the loop (shadow mode): an analyst decides"
    elif gov.threshold is None:
        why = f"alert type {gov.alert_type} has no threshold set: an analyst decides"
    else:
        why = f"P(not a true positive) = {benign:.4f} is below the threshold {gov.threshold:.4f}: an analyst decides"
    return CaseDecision(kind=DecisionKind.analyst, reason=f"model predicts {score.predicted.value}; {why}", **common)


def _respond_reason(score: ScoreResult) -> str:
    """Why a case goes to its playbook, in words that match the probabilities shown beside it."""
    p_tp = score.probabilities.get(Verdict.true_positive.value, score.confidence)
    likeliest, p_top = max(score.probabilities.items(), key=lambda kv: (kv[1], kv[0]))
    then = "the playbook runs, high-impact steps wait for approval"
    if likeliest == Verdict.true_positive.value:
        return f"likely true positive (P(TruePositive) = {p_tp:.3f}, the likeliest grade): {then}"
    # The decision rule weighs grades (argmax of log p + bias): for organisations the model has no
    # history of, a real incident is under-predicted, so TruePositive can win below the top probability.
    return (
        f"possible true positive: P(TruePositive) = {p_tp:.3f}, below P({likeliest}) = {p_top:.3f}, "
        "but the model's decision rule favours TruePositive at this level so a real incident is not "
        f"missed: {then}"
    )
