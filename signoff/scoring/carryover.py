"""What the thresholds in force mean when the model that scores cases changes.

A threshold is a line on one model's benign confidence: it was read off that model's safety curve.
Promoting or rolling back a model keeps the line where it is, but the same value on another model's
scores closes another share of cases and of true positives. Nothing moves a threshold with the
model (a human sets it), so the person changing the model is shown, per alert type with a
threshold, what that value buys and risks on the outgoing and the incoming model (their
out-of-fold training predictions, the figures `signoff model recommend-threshold` reads), and the
incoming model's own recommendation for the risk budget.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from policies import Policy
from signoff.autonomy.models import GovernanceState
from signoff.governance_state import snapshot
from signoff.scoring import metrics, model_store


class AtThreshold(BaseModel):
    """One model's out-of-fold training predictions cut at one threshold."""

    model_config = ConfigDict(frozen=True)

    model_id: str
    auto_closed_share: float
    tp_closed: int
    tp_total: int
    upper95: float


class Carryover(BaseModel):
    model_config = ConfigDict(frozen=True)

    alert_type: str
    threshold: float
    set_by: str
    autonomy: str
    outgoing: AtThreshold | None  # None: no out-of-fold predictions for that model on this machine
    incoming: AtThreshold | None
    incoming_recommended: float | None  # the incoming model's threshold for the risk budget (None: infeasible)
    over_budget: bool  # on the incoming model, the threshold's 95% bound exceeds the risk budget


def at_threshold(model_id: str, threshold: float) -> AtThreshold | None:
    oof = model_store.read_manifest(model_id).get("oof") or {}
    if not oof.get("benign_confidence"):
        return None
    benign = np.asarray(oof["benign_confidence"], dtype=np.float64)
    is_tp = np.asarray(oof["true_positive"], dtype=bool)
    closed = benign >= threshold
    k, n = int((closed & is_tp).sum()), int(is_tp.sum())
    return AtThreshold(model_id=model_id, auto_closed_share=float(closed.mean()), tp_closed=k, tp_total=n,
                       upper95=metrics.clopper_pearson_upper(k, n))


def carryover(policy: Policy, live: GovernanceState | None, outgoing: str, incoming: str,
              risk_budget: float) -> list[Carryover]:
    """Per alert type with a threshold in force: that threshold on the outgoing and the incoming model."""
    if outgoing == incoming:
        return []
    recommendation: float | None = None
    from signoff.scoring.evaluate import recommended_for

    try:
        rec = recommended_for(incoming, risk_budget)
        recommendation = rec.threshold if rec.feasible else None
    except ValueError:
        pass
    found: list[Carryover] = []
    for name in sorted(policy.alert_types):
        governed = snapshot(policy, name, live)
        if governed.threshold is None or governed.alert_type != name:
            continue
        new = at_threshold(incoming, governed.threshold)
        found.append(Carryover(
            alert_type=name, threshold=governed.threshold, set_by=governed.threshold_set_by,
            autonomy=governed.autonomy, outgoing=at_threshold(outgoing, governed.threshold), incoming=new,
            incoming_recommended=recommendation, over_budget=new is not None and new.upper95 > risk_budget))
    return found


def _figures(at: AtThreshold | None) -> str:
    if at is None:
        return "no out-of-fold predictions on this machine"
    return (f"closes {at.auto_closed_share:.1%} of its training incidents (out-of-fold), {at.tp_closed}/{at.tp_total} "
            f"true positives, 95% upper bound {at.upper95:.2%}")


def describe(c: Carryover, risk_budget: float) -> str:
    """One paragraph for the person changing the model."""
    incoming = c.incoming.model_id[:12] if c.incoming else "the incoming model"
    outgoing = c.outgoing.model_id[:12] if c.outgoing else "the outgoing model"
    text = (f"{c.alert_type} ({c.autonomy}) keeps threshold {c.threshold:.6f} (set by {c.set_by}): thresholds do "
            f"not follow the model. On {incoming} it {_figures(c.incoming)}; on {outgoing} it "
            f"{_figures(c.outgoing)}.")
    if c.over_budget:
        text += f" That is over the risk budget {risk_budget:.2%}."
    if c.incoming_recommended is not None and abs(c.incoming_recommended - c.threshold) < 5e-7:
        text += f" It is {incoming}'s own threshold for {risk_budget:.2%}."
    elif c.incoming_recommended is not None:
        text += (f" {incoming}'s own threshold for {risk_budget:.2%}: {c.incoming_recommended:.6f} "
                 f"(`signoff policy backtest {c.alert_type} --threshold {c.incoming_recommended:.6f}`, then "
                 f"`signoff policy set-threshold {c.alert_type} VALUE --as YOU --reason ...`).")
    else:
        text += f" {incoming} has no threshold within {risk_budget:.2%}: keep {c.alert_type} in the loop."
    return text


def as_json(items: list[Carryover]) -> list[dict[str, Any]]:
    return [c.model_dump(mode="json") for c in items]
