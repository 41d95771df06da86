"""What an approver reads in the chat before deciding: one message per step waiting for sign-off.

Pure functions over a case's `status` view, the policy in force and the playbook action
declarations: the case, its alert type, the score and the top contributions in words (as
`signoff explain` says them), the action, its tier, the quorum so far and who may approve, the
target it touches (blast radius), whether and how it can be undone. Slack Block Kit out.
"""

from __future__ import annotations

import json
from typing import Any

from playbooks.actions import ACTIONS
from policies.engine import Policy
from policies.signing import channel_text
from signoff.explain import contribution_text
from signoff.models import ApprovalRecord, CaseView, Decision, Reversibility, StepState, StepView

APPROVE_ACTION = "signoff_approve"
REJECT_ACTION = "signoff_reject"
ACTIONS_BLOCK = "signoff_decision"
WAITING = (StepState.awaiting_approval, StepState.escalated)
SECTION_LIMIT = 2900  # Slack refuses section text over 3000 characters
TOP_CONTRIBUTIONS = 3


def waiting_steps(view: CaseView) -> list[StepView]:
    """The steps of a case that wait for a human decision now."""
    return [s for s in view.steps if s.state in WAITING and s.quorum > 0]


def escape(text: str) -> str:
    """Slack mrkdwn escaping: `&`, `<`, `>` (alert titles and reasons are untrusted text)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def who(record: ApprovalRecord) -> str:
    """"alice via Slack U0ABC123", or "alice" for an approval signed by alice herself."""
    return record.approver + (f" via {channel_text(record.channel)}" if record.channel else "")


def _undo(step: StepView) -> str:
    spec = ACTIONS.get(step.action)
    compensation = spec.compensation if spec else None
    if step.reversibility == Reversibility.irreversible:
        return "IRREVERSIBLE: nothing can restore it"
    how = f"`{compensation}` restores the state captured before the action" if compensation else "a compensation"
    if step.reversibility == Reversibility.partial:
        return f"partly reversible: {how}, as far as it can be restored"
    return f"reversible: {how}"


def _approved(step: StepView) -> list[ApprovalRecord]:
    return [a for a in step.approvals if a.accepted and a.decision == Decision.approve]


def context_lines(view: CaseView, step: StepView, policy: Policy) -> list[str]:
    """The context of one step, as lines of Slack mrkdwn."""
    tier = policy.effective_tier(step)
    rule = policy.rule_for(step)
    spec = ACTIONS.get(step.action)
    lines = [f"*Case* `{escape(view.case_id)}`: {escape(view.title or '(no title)')}",
             f"*Alert type* {escape(view.alert_type)} · severity {escape(view.severity)} · "
             f"{view.alert_count} alert(s)"]
    if view.score:
        s = view.score
        lines.append(f"*Score* predicted {s.predicted.value}, calibrated confidence {s.confidence:.2f} "
                     f"(P(not a true positive) {s.benign_confidence:.2f}), model `{s.model_id[:12]}`")
        for c in s.contributions[:TOP_CONTRIBUTIONS]:
            lines.append(f"  • {escape(contribution_text(c, s.predicted.value))}")
    else:
        lines.append("*Score* none")
    if view.decision:
        lines.append(f"*Decision* {view.decision.kind.value}: {escape(view.decision.reason)}")
    lines.append(f"*Action* `{escape(step.step_id)}`: {escape(step.action)}"
                 + (f" ({escape(spec.description)})" if spec and spec.description else ""))
    lines.append(f"*Tier* {tier.value}" + (f" (declared {step.tier.value}, raised: irreversible)"
                                           if tier != step.tier else ""))
    approved = _approved(step)
    lines.append(f"*Quorum* {len(approved)} of {step.quorum} · roles {', '.join(rule.roles) or '-'}"
                 + ("" if rule.requester_may_approve else " · the requester may not approve")
                 + (f" · so far: {escape(', '.join(who(a) for a in approved))}" if approved else ""))
    target = "the case itself" if step.target.kind == "case" else f"{step.target.kind} `{escape(step.target.id)}`"
    lines.append(f"*Touches* {target}")
    lines.append(f"*Undo* {_undo(step)}")
    if step.escalation_chain:  # the tier's escalation chain: who was told, who is next and when
        from signoff.escalation_text import next_stage, reached_text, told

        done, coming = reached_text(step), next_stage(step)
        if done:
            lines.append(f"*Escalated* {escape(done)}")
        if coming is None:
            lines.append("*No further level*: it keeps waiting (it never runs on a timeout; being told lets nobody "
                         "approve)")
        else:
            later = "".join(f", then to {told(s)} at {s.due.strftime('%Y-%m-%d %H:%M UTC')}"
                            for s in step.escalation_chain if s.level > coming.level)
            lines.append(f"*{'Next' if done else 'Deadline'}* escalates to a human at "
                         f"{coming.due.strftime('%Y-%m-%d %H:%M UTC')} if not decided (it never runs on a timeout; "
                         f"being told lets nobody approve): to {escape(told(coming) + later)}")
    elif step.state == StepState.escalated:
        lines.append("*Escalated*: it waited longer than its tier's timeout")
    elif step.escalates_at is not None:
        lines.append(f"*Deadline* escalates to a human at {step.escalates_at.strftime('%Y-%m-%d %H:%M UTC')} if not "
                     "decided (it never runs on a timeout)")
    return lines


def outcome_line(step: StepView) -> str | None:
    """What became of a step that no longer waits, or None while it still does."""
    if step.state in WAITING:
        return None
    rejected = [a for a in step.approvals if a.accepted and a.decision == Decision.reject]
    if rejected:
        r = rejected[-1]
        return f":no_entry: *Rejected* by {escape(who(r))}: {escape(r.reason)}"
    approved = _approved(step)
    if approved:
        return (f":white_check_mark: *Approved* by {escape(', '.join(who(a) for a in approved))} "
                f"({len(approved)} of {step.quorum}); the step is {step.state.value}")
    return f":heavy_minus_sign: No longer waiting: the step is {step.state.value}" + (
        f" ({escape(step.error)})" if step.error else "")


def step_message(view: CaseView, step: StepView, policy: Policy) -> tuple[str, list[dict[str, Any]]]:
    """(fallback text, blocks) of the message for `step`: buttons while it waits, the outcome after."""
    outcome = outcome_line(step)
    head = (f":hourglass: *Approval needed*: {escape(step.action)} on {escape(step.target.kind)} "
            f"`{escape(step.target.id)}`") if outcome is None else outcome
    lines = [head, *context_lines(view, step, policy)]
    text = "\n".join(lines)
    if len(text) > SECTION_LIMIT:
        text = text[: SECTION_LIMIT - 1] + "…"
    blocks: list[dict[str, Any]] = [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]
    if outcome is None:
        value = json.dumps({"case": view.case_id, "step": step.step_id}, separators=(",", ":"))
        blocks.append({"type": "actions", "block_id": ACTIONS_BLOCK, "elements": [
            {"type": "button", "action_id": APPROVE_ACTION, "style": "primary", "value": value,
             "text": {"type": "plain_text", "text": "Approve"}},
            {"type": "button", "action_id": REJECT_ACTION, "style": "danger", "value": value,
             "text": {"type": "plain_text", "text": "Reject"}},
        ]})
    return text, blocks


REASON_BLOCK = "reason"
REASON_ACTION = "reason_input"
MODAL_CALLBACK = "signoff_decision"


def reason_modal(case_id: str, step_id: str, decision: str, channel: str, ts: str) -> dict[str, Any]:
    """The modal asking for the reason (required) after a button click."""
    verb = "Approve" if decision == "approve" else "Reject"
    meta = json.dumps({"case": case_id, "step": step_id, "decision": decision, "channel": channel, "ts": ts},
                      separators=(",", ":"))
    return {
        "type": "modal", "callback_id": MODAL_CALLBACK, "private_metadata": meta,
        "title": {"type": "plain_text", "text": f"{verb} step"},
        "submit": {"type": "plain_text", "text": verb},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn",
                                         "text": f"{verb} `{escape(step_id)}` of case `{escape(case_id)}`"}},
            {"type": "input", "block_id": REASON_BLOCK, "optional": False,
             "label": {"type": "plain_text", "text": "Reason (recorded in the case)"},
             "element": {"type": "plain_text_input", "action_id": REASON_ACTION, "multiline": True,
                         "max_length": 3000}},
        ],
    }


def result_modal(text: str) -> dict[str, Any]:
    return {"type": "modal", "title": {"type": "plain_text", "text": "Signoff"},
            "close": {"type": "plain_text", "text": "Close"},
            "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": escape(text)}}]}
