"""The decide step (workflows/decide.py): pure rules, and reasons that match the numbers shown."""

from __future__ import annotations

from typing import Any

from policies.engine import GovernanceSnapshot
from policies.loader import load_policy
from signoff.models import DecisionKind, ScoreResult, Verdict
from workflows.decide import decide


def _gov(**overrides: Any) -> GovernanceSnapshot:
    base: dict[str, Any] = dict(policy=load_policy(), policy_version="v1", alert_type="phishing",
                                autonomy="on_the_loop", threshold=0.99, threshold_set_by="carol")
    return GovernanceSnapshot(**{**base, **overrides})


def _score(tp: float, bp: float, fp: float, predicted: Verdict) -> ScoreResult:
    probs = {Verdict.true_positive.value: tp, Verdict.benign_positive.value: bp, Verdict.false_positive.value: fp}
    return ScoreResult(model_id="m", feature_hash="h", probabilities=probs, predicted=predicted,
                       confidence=probs[predicted.value], benign_confidence=1.0 - tp)


def test_auto_close_only_on_the_loop_at_or_above_the_threshold() -> None:
    benign = _score(0.005, 0.9, 0.095, Verdict.benign_positive)
    closed = decide(_gov(), benign)
    assert closed.kind == DecisionKind.auto_close and "set by carol" in closed.reason
    assert decide(_gov(autonomy="in_the_loop"), benign).kind == DecisionKind.analyst
    assert decide(_gov(threshold=None), benign).kind == DecisionKind.analyst
    assert decide(_gov(threshold=0.996), benign).kind == DecisionKind.analyst
    sampled = decide(_gov(review_sampled=True), benign)
    assert sampled.kind == DecisionKind.analyst and "review sample" in sampled.reason


def test_respond_reason_says_likely_only_when_true_positive_is_the_likeliest_grade() -> None:
    likely = decide(_gov(), _score(0.81, 0.1, 0.09, Verdict.true_positive))
    assert likely.kind == DecisionKind.respond
    assert likely.reason.startswith("likely true positive (P(TruePositive) = 0.810")
    # The decision rule (argmax of log p + bias) can pick TruePositive below the top probability:
    # the reason must not call a 23% probability "likely" (QA finding).
    possible = decide(_gov(), _score(0.232, 0.546, 0.222, Verdict.true_positive))
    assert possible.kind == DecisionKind.respond
    assert "likely" not in possible.reason
    assert "P(TruePositive) = 0.232, below P(BenignPositive) = 0.546" in possible.reason


def test_no_score_goes_to_an_analyst_with_the_reason() -> None:
    decision = decide(_gov(), None, "the scoring activity failed")
    assert decision.kind == DecisionKind.analyst
    assert decision.reason == "the scoring activity failed: an analyst decides"


def test_a_drift_case_goes_to_people_whatever_the_triage_model_says() -> None:
    """QA: drift cases were 'respond (likely true positive)': a triage score on the drift check's own
    findings means nothing."""
    drift = decide(_gov(alert_type="model_drift", autonomy="in_the_loop", threshold=None),
                   _score(0.9, 0.05, 0.05, Verdict.true_positive))
    assert drift.kind == DecisionKind.analyst and "detection engineers" in drift.reason
    assert "likely" not in drift.reason
