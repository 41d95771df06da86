"""What a policy change would have done to cases already recorded: `signoff policy diff BASE NEW --cases`.

`policies.review.weakenings` names each rule a change makes easier; this module measures it on real
cases. For each recorded case it asks, of the new policy: would the steps that ran automatically now
wait for sign-off, would the approvals a step ran on still count (roles, separation of duties, quorum),
would a step have run on fewer of them, and would the case's automatic close (or analyst decision)
come out the other way under the new alert-type rule. A reviewer then reads "12 of the last 200
isolations ran on approvals the new policy refuses" instead of a YAML diff.

Pure: the input is `signoff.explain` explanations (from live histories, archives or exported JSON),
no I/O. Thresholds and autonomy set live through the governance workflow override the policy file in
production; a decision is re-judged only where the change touches the file's rule for that alert type.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from policies.engine import Policy, approval_refusal
from signoff.models import ActionTarget, ApprovalRecord, Decision, Reversibility, RiskTier, StepPlan

_UNDATED = datetime.fromtimestamp(0, UTC)  # the rule never reads an approval's time

RAN = frozenset({"executed", "compensated", "compensation_failed", "kept", "failed", "running"})


class _Step:
    """The tier and reversibility the new policy judges a recorded step by (its action's declaration)."""

    def __init__(self, row: dict[str, Any]) -> None:
        from playbooks.actions import ACTIONS

        # As the case recorded it (the declaration it planned from): a policy change is judged apart from
        # any later change to the action's code.
        declared = ACTIONS.get(str(row.get("action")))
        self.step_id = str(row.get("step_id"))
        self.action = str(row.get("action"))
        self.tier = RiskTier(row["tier"]) if row.get("tier") else declared.tier if declared else RiskTier.high
        self.reversibility = (Reversibility(row["reversibility"]) if row.get("reversibility")
                              else declared.reversibility if declared else Reversibility.reversible)
        self.state = str(row.get("state", ""))
        self.recorded_quorum = int(row.get("quorum") or 0)
        target = row.get("target") or {}
        self.plan = StepPlan(step_id=self.step_id, action=self.action, tier=self.tier,
                             reversibility=self.reversibility, compensation=None,
                             target=ActionTarget(kind=str(target.get("kind", "?")), id=str(target.get("id", "?"))))


def changes_for_case(base: Policy, new: Policy, ex: dict[str, Any]) -> list[dict[str, Any]]:
    """Each way this recorded case would have gone otherwise under `new`; [] when it would not have changed."""
    found: list[dict[str, Any]] = []
    case_id = ex.get("case_id")
    for row in ((ex.get("final") or {}).get("steps") or []):
        found += _step_changes(new, ex, _Step(row))
    found += _decision_change(base, new, ex)
    for change in found:
        change["case_id"] = case_id
    return found


def _step_changes(new: Policy, ex: dict[str, Any], step: _Step) -> list[dict[str, Any]]:
    rule = new.rule_for(step)
    tier = new.effective_tier(step).value
    approvals = [a for a in ex.get("approvals") or []
                 if a.get("step") == step.step_id and a.get("decision") == "approve" and a.get("outcome") == "accepted"]
    base = {"step": step.step_id, "action": step.action, "tier": tier}
    name = step.step_id if step.step_id == step.action else f"{step.step_id} ({step.action})"
    if step.state not in RAN:
        if step.recorded_quorum and rule.auto:
            return [{**base, "kind": "would_run_unapproved",
                     "text": f"step {name} waited for sign-off; tier {tier} would run it at once"}]
        return []
    if rule.auto:
        if approvals or step.recorded_quorum:
            return [{**base, "kind": "would_run_unapproved",
                     "text": f"step {name} ran on {len(approvals)} approval(s); tier {tier} "
                             "would have run it without anyone's sign-off"}]
        return []
    if not approvals and not step.recorded_quorum:
        return [{**base, "kind": "would_wait",
                 "text": f"step {name} ran automatically; tier {tier} would have made it wait "
                         f"for {rule.quorum} approval(s) from {list(rule.roles)}"}]
    # The rule live approvals meet (policies.engine.approval_refusal), asked of each recorded one in turn.
    prior: list[ApprovalRecord] = []
    refused: list[str] = []
    for a in approvals:
        who = str(a.get("approver"))
        why = approval_refusal(new, step.plan, who, Decision.approve, str(ex.get("opened_by")), prior)
        if why:
            refused.append(why)
        else:
            prior.append(ApprovalRecord(step=step.step_id, approver=who, decision=Decision.approve, reason="",
                                        at=_UNDATED, via="update"))
    counted = [r.approver for r in prior]
    if len(counted) < rule.quorum:
        because = f" ({'; '.join(refused)})" if refused else ""
        return [{**base, "kind": "would_not_run", "approvers": [a.get("approver") for a in approvals],
                 "counted": counted,
                 "text": f"step {name} ran on {len(approvals)} approval(s); under the new "
                         f"policy {len(counted)} count and tier {tier} needs {rule.quorum}{because}: it would still be "
                         "waiting"}]
    if rule.quorum < step.recorded_quorum:
        return [{**base, "kind": "fewer_approvals",
                 "text": f"step {name} needed {step.recorded_quorum} approval(s); the new "
                         f"policy would have run it after {rule.quorum}"}]
    return []


def _decision_change(base: Policy, new: Policy, ex: dict[str, Any]) -> list[dict[str, Any]]:
    decision, score = ex.get("decision") or {}, ex.get("score") or {}
    alert_type = (ex.get("governance") or {}).get("alert_type")
    if not decision or alert_type is None or alert_type not in new.alert_types:
        return []
    before, after = base.alert_types.get(alert_type), new.alert_types[alert_type]
    if before is not None and (before.autonomy, before.threshold) == (after.autonomy, after.threshold):
        return []  # the file's rule did not change: the live governance state decided, and still would
    benign = score.get("benign_confidence")
    closes = (after.autonomy == "on_the_loop" and after.threshold is not None and benign is not None
              and benign >= after.threshold)
    kind = decision.get("kind")
    if kind == "auto_close" and not closes:
        return [{"kind": "would_not_close", "alert_type": alert_type,
                 "text": f"closed automatically (P(not a true positive) = {benign}); under the new rule for "
                         f"{alert_type} ({after.autonomy}, threshold {after.threshold}) an analyst would have decided"}]
    if kind in ("analyst", "respond") and closes:
        graded_tp = any(v.get("accepted", True) and v.get("verdict") == "TruePositive" for v in ex.get("verdicts") or [])
        change = {"kind": "would_close", "alert_type": alert_type, "true_positive": graded_tp,
                  "text": f"went to {'its playbook' if kind == 'respond' else 'an analyst'}; under the new rule for "
                          f"{alert_type} (threshold {after.threshold}) P(not a true positive) = {benign:.4f} would have "
                          "closed it automatically (unless it fell in the review sample)"}
        if graded_tp:
            change["text"] += ": an analyst graded it a TRUE POSITIVE"
        return [change]
    return []


KINDS = ("would_wait", "would_not_run", "fewer_approvals", "would_run_unapproved", "would_not_close", "would_close")


def what_if(base: Policy, new: Policy, explanations: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """The changes over many cases, newest first, with counts per kind (JSON-able)."""
    rows = sorted(explanations, key=lambda ex: ex.get("opened_at") or "", reverse=True)
    changes = [c for ex in rows for c in changes_for_case(base, new, ex)]
    counts = {k: sum(1 for c in changes if c["kind"] == k) for k in KINDS}
    counts["true_positives_closed"] = sum(1 for c in changes if c.get("true_positive"))
    # a running case no worker answered for: its steps live in the worker's state, not yet in its history
    steps_unread = [ex.get("case_id") for ex in rows if ex.get("final") is None and ex.get("workflow_status") == "running"]
    return {"cases": len(rows), "cases_changed": len({c["case_id"] for c in changes}), "counts": counts,
            "steps_not_read": steps_unread, "changes": changes}
