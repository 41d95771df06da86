"""What an approver reads in the chat before deciding: one message per step waiting for sign-off,
and one per case that waits for its verdict or can be rolled back (`case_message`).

Pure functions over a case's `status` view, the policy in force and the playbook action
declarations: the case, its alert type, the score and the top contributions in words (as
`signoff explain` says them), the action, its tier, the quorum so far and who may approve, the
target it touches (blast radius), whether and how it can be undone. Slack Block Kit out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from playbooks.actions import ACTIONS
from policies.engine import Policy, close_roles
from policies.signing import channel_text, token_channel
from signoff.display import mrkdwn, mrkdwn_code
from signoff.explain import contribution_text
from signoff.models import (
    ApprovalRecord,
    CaseStatus,
    CaseView,
    Decision,
    DecisionKind,
    Reversibility,
    StepState,
    StepView,
    Verdict,
)
from signoff.undo import UndoOutcome, UndoStatus, UndoView, undo_id

APPROVE_ACTION = "signoff_approve"
REJECT_ACTION = "signoff_reject"
ACTIONS_BLOCK = "signoff_decision"
WAITING = (StepState.awaiting_approval, StepState.escalated)
SECTION_LIMIT = 2900  # Slack refuses section text over 3000 characters
TOP_CONTRIBUTIONS = 3
TITLE_LIMIT = 200  # an alert title is the attacker's longest field: it must not crowd out the target and undo


def waiting_steps(view: CaseView) -> list[StepView]:
    """The steps of a case that wait for a human decision now."""
    return [s for s in view.steps if s.state in WAITING and s.quorum > 0]


def escape(text: str) -> str:
    """Untrusted text (alert titles, host names, reasons) as one line of Slack mrkdwn: no mentions or
    spoofed links (`&`, `<`, `>` escaped), no forged lines (a newline then "*Approved* by alice"), no
    hidden or reversed characters (signoff.display)."""
    return mrkdwn(text)


def target_code(target_id: str) -> str:
    """A step's target in a code span: a backtick in a host name cannot end the span, and a long one
    cannot push the *Touches* / *Undo* lines out of the message (Slack's section limit)."""
    return f"`{mrkdwn_code(target_id)}`"


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


def score_lines(view: CaseView) -> list[str]:
    """The case's score (its top contributions) and the decision made on it, as lines of Slack mrkdwn."""
    lines = []
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
    return lines


def context_lines(view: CaseView, step: StepView, policy: Policy) -> list[str]:
    """The context of one step, as lines of Slack mrkdwn."""
    tier = policy.effective_tier(step)
    rule = policy.rule_for(step)
    spec = ACTIONS.get(step.action)
    lines = [f"*Case* `{escape(view.case_id)}`: {mrkdwn(view.title or '(no title)', limit=TITLE_LIMIT)}",
             f"*Alert type* {escape(view.alert_type)} · severity {escape(view.severity)} · "
             f"{view.alert_count} alert(s)"]
    lines += score_lines(view)
    lines.append(f"*Action* `{escape(step.step_id)}`: {escape(step.action)}"
                 + (f" ({escape(spec.description)})" if spec and spec.description else ""))
    lines.append(f"*Tier* {tier.value}" + (f" (declared {step.tier.value}, raised: irreversible)"
                                           if tier != step.tier else ""))
    approved = _approved(step)
    lines.append(f"*Quorum* {len(approved)} of {step.quorum} · roles {', '.join(rule.roles) or '-'}"
                 + ("" if rule.requester_may_approve else " · the requester may not approve")
                 + (f" · so far: {escape(', '.join(who(a) for a in approved))}" if approved else ""))
    target = "the case itself" if step.target.kind == "case" else f"{step.target.kind} {target_code(step.target.id)}"
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
            f"{target_code(step.target.id)}") if outcome is None else outcome
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


# ---------------------------------------------------------------- the case message: verdict and rollback
#
# Besides one message per gated step, a case gets one message of its own (stored under the step
# CASE_ITEM) while it waits for an analyst's verdict or has executed a high-impact action that a
# rollback can restore: its summary, the actions in effect, the verdict, the rollback's progress,
# and the buttons Close with verdict / Request rollback. What either button sends is checked by the
# case (or its undo workflow), as `signoff close` / `signoff rollback` are.

CLOSE_ACTION = "signoff_close"
ROLLBACK_ACTION = "signoff_rollback"
CASE_ACTIONS_BLOCK = "signoff_case"
CLOSE_CALLBACK = "signoff_close"
ROLLBACK_CALLBACK = "signoff_rollback"
GRADE_BLOCK = "grade"
GRADE_ACTION = "grade_select"
CASE_ITEM = "(case)"  # the store's step key of a case message (never a playbook step id)
GRADES = tuple(v.value for v in Verdict)  # TruePositive | BenignPositive | FalsePositive, as `signoff close`
# After the playbook: the case waits for its verdict (a rollback in it keeps the wait).
AFTER_PLAYBOOK = (CaseStatus.contained, CaseStatus.awaiting_verdict, CaseStatus.rolled_back,
                  CaseStatus.rollback_failed, CaseStatus.action_failed)
NOT_YET = (CaseStatus.open, CaseStatus.triage)


@dataclass(frozen=True)
class CaseState:
    """A case as the case message tells it: its view, whether its workflow has ended, and (ended) its undo."""

    view: CaseView
    ended: bool = False
    undo: UndoView | None = None
    # How the workflow ended ("completed", "terminated", ...): only a completed case leaves the final
    # view its undo workflow restores from; a terminated one cannot be rolled back after the fact.
    how: str = ""


def undoable(step: StepView, policy: Policy) -> bool:
    """An executed high-impact step whose captured state a compensation restores (what a rollback is for)."""
    spec = ACTIONS.get(step.action)
    return (step.state == StepState.executed and step.reversibility != Reversibility.irreversible
            and spec is not None and spec.compensation is not None and not policy.rule_for(step).auto)


def verdict_open(state: CaseState) -> bool:
    """The case takes a verdict now: running, none given, and it went to an analyst (or its playbook is done)."""
    view = state.view
    if state.ended or view.verdict is not None or view.decision is None or view.status in NOT_YET:
        return False
    if view.status in (CaseStatus.closed, CaseStatus.auto_closed, CaseStatus.merged) or view.merged_into is not None:
        return False
    return view.decision.kind == DecisionKind.analyst or view.status in AFTER_PLAYBOOK


def rollback_open(state: CaseState, policy: Policy) -> bool:
    """A rollback request can be taken now (the case or its undo workflow decides whether it counts)."""
    view = state.view
    if view.status in (CaseStatus.rolled_back, CaseStatus.rolling_back) or not any(
            undoable(s, policy) for s in view.steps):
        return False
    if not state.ended:
        return True
    if state.how not in ("", "completed"):
        return False
    undo = state.undo
    return undo is None or undo.status not in (UndoStatus.rolled_back, UndoStatus.partly_rolled_back,
                                               UndoStatus.nothing_to_undo, UndoStatus.running)


def wants_case_message(state: CaseState, policy: Policy) -> bool:
    """Whether a case without a case message should get one now: it waits for its verdict (and for no
    approval: while a step waits, its own message speaks for the case), or a rollback can be asked for."""
    return not state.ended and ((verdict_open(state) and not waiting_steps(state.view))
                                or rollback_open(state, policy) or bool(state.view.rollback_votes))


def case_finished(state: CaseState, policy: Policy) -> bool:
    """Nothing more can change what the case message says: ended, and no rollback can come or is under way."""
    if not state.ended:
        return False
    undo = state.undo
    if undo is not None and undo.status in (UndoStatus.waiting, UndoStatus.running, UndoStatus.loading,
                                            UndoStatus.rollback_failed):
        return False
    return not rollback_open(state, policy)


def _by(requested_by: str, token: str | None) -> str:
    channel = token_channel(token)
    return requested_by + (f" via {channel_text(channel)}" if channel else "")


def verdict_line(view: CaseView) -> str | None:
    v = view.verdict
    if v is None:
        return None
    return f":lock: *Closed* with verdict *{v.verdict.value}* by {escape(_by(v.analyst, v.token))}: {escape(v.reason)}"


def rollback_lines(state: CaseState, policy: Policy) -> list[str]:
    """The rollback's progress: requests counted against the quorum, running, done, failed (escalated)."""
    view, lines = state.view, []
    if view.rollback_votes:
        asked = ", ".join(_by(v.requested_by, v.token) for v in view.rollback_votes)
        missing = max(policy.rollback_quorum - len(view.rollback_votes), 1)
        lines.append(f":raised_hand: *Rollback requested* {len(view.rollback_votes)} of {policy.rollback_quorum} "
                     f"(asked: {escape(asked)}): nothing is undone until {missing} more person(s) with one of the "
                     f"roles {', '.join(policy.rollback_roles)} ask")
    if view.status == CaseStatus.rolling_back:
        lines.append(":arrows_counterclockwise: *Rolling back*: the compensations run, newest first")
    elif view.status in (CaseStatus.rolled_back, CaseStatus.rollback_failed) and view.rollback is not None:
        who = escape(_by(view.rollback.requested_by, view.rollback.token))
        restored = [s for s in view.steps if s.compensation is not None]
        if view.status == CaseStatus.rolled_back:
            lines.append(f":leftwards_arrow_with_hook: *Rolled back* (asked by {who}: "
                         f"{escape(view.rollback.reason)}); restored: "
                         + (", ".join(f"`{escape(s.step_id)}` ({escape(s.target.kind)} {target_code(s.target.id)})"
                                      for s in restored) or "nothing"))
        else:
            lines.append(f":warning: *Rollback failed* (asked by {who}): escalated to a human"
                         + (f": {escape(view.escalations[-1])}" if view.escalations else ""))
    undo = state.undo
    if undo is not None:
        lines += _undo_lines(undo)
    elif state.ended and rollback_open(state, policy):
        lines.append(f":rewind: The case has ended; a rollback request now runs through `{escape(undo_id(view.case_id))}`"
                     f" (quorum {policy.rollback_quorum}, roles {', '.join(policy.rollback_roles)})")
    return lines


def _undo_lines(undo: UndoView) -> list[str]:
    name = f"`{escape(undo.undo_id)}`"
    if undo.votes:
        asked = ", ".join(v.requested_by for v in undo.votes)
        return [f":raised_hand: *Rollback after close requested* {len(undo.votes)} of {undo.quorum} (asked: "
                f"{escape(asked)}) in {name}: nothing is undone until {undo.quorum - len(undo.votes)} more person(s) "
                f"with one of the roles {', '.join(undo.rollback_roles)} ask"]
    restored = [s.step_id for s in undo.steps if s.outcome in (UndoOutcome.restored, UndoOutcome.already_restored)]
    left = [f"{s.step_id} ({s.outcome.value})" for s in undo.steps
            if s.outcome in (UndoOutcome.changed_since, UndoOutcome.kept, UndoOutcome.failed)]
    who = ", ".join(undo.runs[-1].requested_by) if undo.runs else ""
    if undo.status == UndoStatus.running:
        return [f":arrows_counterclockwise: *Rolling back after close* in {name} (asked by {escape(who)})"]
    if undo.status in (UndoStatus.rolled_back, UndoStatus.partly_rolled_back):
        words = "Rolled back" if undo.status == UndoStatus.rolled_back else "Partly rolled back"
        return [f":leftwards_arrow_with_hook: *{words} after close* in {name} (asked by {escape(who)}); restored: "
                + (", ".join(f"`{escape(s)}`" for s in restored) or "nothing")
                + (f"; not restored, a human decides: {escape(', '.join(left))}" if left else "")]
    if undo.status == UndoStatus.rollback_failed:
        return [f":warning: *Rollback after close failed* in {name}: escalated to a human"
                + (f": {escape(undo.escalations[-1])}" if undo.escalations else "")
                + "; a new request retries what failed"]
    if undo.status in (UndoStatus.expired, UndoStatus.nothing_to_undo, UndoStatus.unavailable) and undo.problem:
        return [f":heavy_minus_sign: Rollback after close ({undo.status.value}): {escape(undo.problem)}"]
    return []


def case_message(state: CaseState, policy: Policy) -> tuple[str, list[dict[str, Any]]]:
    """(fallback text, blocks) of a case's own message: summary, actions in effect, verdict, rollback, buttons."""
    view = state.view
    closable, undo_possible = verdict_open(state), rollback_open(state, policy)
    verdict = verdict_line(view)
    if closable:
        head = f":mag: *Verdict needed*: case `{escape(view.case_id)}`"
    elif verdict:
        head = verdict
    else:
        head = f":heavy_minus_sign: Case `{escape(view.case_id)}` is {view.status.value}" + (
            f" (its workflow {state.how or 'ended'})" if state.ended else "")
    lines = [head, f"*Case* `{escape(view.case_id)}`: {mrkdwn(view.title or '(no title)', limit=TITLE_LIMIT)} · status {view.status.value}",
             f"*Alert type* {escape(view.alert_type)} · severity {escape(view.severity)} · {view.alert_count} alert(s)"]
    lines += score_lines(view)
    for st in view.steps:
        if st.result is not None and not policy.rule_for(st).auto:  # the high-impact actions that ran
            lines.append(f"*Action* `{escape(st.step_id)}`: {escape(st.action)} on {escape(st.target.kind)} "
                         f"{target_code(st.target.id)} · {st.state.value} · {_undo(st)}")
    if view.rollback_open_until is not None and not state.ended:
        lines.append(f"*Rollback window* open until {view.rollback_open_until.strftime('%Y-%m-%d %H:%M UTC')}")
    lines += rollback_lines(state, policy)
    if closable and view.verdict_due is not None:
        lines.append(f"*Verdict due* {view.verdict_due.strftime('%Y-%m-%d %H:%M UTC')} (verdict_sla {view.verdict_sla})"
                     + (": OVERDUE, escalated" if view.overdue_since is not None else ""))
    if closable:
        lines.append(f"*Who may close* {', '.join(close_roles(policy, view.alert_type))} (the alert type's close_roles)")
    text = "\n".join(lines)
    if len(text) > SECTION_LIMIT:
        text = text[: SECTION_LIMIT - 1] + "…"
    blocks: list[dict[str, Any]] = [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]
    value = json.dumps({"case": view.case_id}, separators=(",", ":"))
    buttons = []
    if closable:
        buttons.append({"type": "button", "action_id": CLOSE_ACTION, "style": "primary", "value": value,
                        "text": {"type": "plain_text", "text": "Close with verdict"}})
    if undo_possible:
        buttons.append({"type": "button", "action_id": ROLLBACK_ACTION, "style": "danger", "value": value,
                        "text": {"type": "plain_text", "text": "Request rollback"}})
    if buttons:
        blocks.append({"type": "actions", "block_id": CASE_ACTIONS_BLOCK, "elements": buttons})
    return text, blocks


def _reason_input(label: str) -> dict[str, Any]:
    return {"type": "input", "block_id": REASON_BLOCK, "optional": False,
            "label": {"type": "plain_text", "text": label},
            "element": {"type": "plain_text_input", "action_id": REASON_ACTION, "multiline": True, "max_length": 3000}}


def close_modal(case_id: str, channel: str, ts: str) -> dict[str, Any]:
    """The modal asking for the verdict (grade, as `signoff close --verdict` takes it) and the reason."""
    meta = json.dumps({"case": case_id, "channel": channel, "ts": ts}, separators=(",", ":"))
    options = [{"text": {"type": "plain_text", "text": g}, "value": g} for g in GRADES]
    return {
        "type": "modal", "callback_id": CLOSE_CALLBACK, "private_metadata": meta,
        "title": {"type": "plain_text", "text": "Close with verdict"},
        "submit": {"type": "plain_text", "text": "Close case"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": f"Close case `{escape(case_id)}` with your verdict "
                                                                   "(steps still waiting are skipped; the verdict is "
                                                                   "the model's feedback)"}},
            {"type": "input", "block_id": GRADE_BLOCK, "optional": False,
             "label": {"type": "plain_text", "text": "Grade"},
             "element": {"type": "static_select", "action_id": GRADE_ACTION, "options": options,
                         "placeholder": {"type": "plain_text", "text": "Choose a grade"}}},
            _reason_input("Reason (recorded in the case)"),
        ],
    }


def rollback_modal(case_id: str, channel: str, ts: str) -> dict[str, Any]:
    """The modal asking for the reason of a rollback request."""
    meta = json.dumps({"case": case_id, "channel": channel, "ts": ts}, separators=(",", ":"))
    return {
        "type": "modal", "callback_id": ROLLBACK_CALLBACK, "private_metadata": meta,
        "title": {"type": "plain_text", "text": "Request rollback"},
        "submit": {"type": "plain_text", "text": "Request rollback"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": (
                f"Request the rollback of case `{escape(case_id)}`: its executed actions are undone newest first, "
                "restoring the state captured before each (the policy's rollback roles and quorum apply)")}},
            _reason_input("Reason (recorded in the case)"),
        ],
    }
