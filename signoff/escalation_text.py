"""A waiting step's escalation chain in words, for `signoff show` and the chat bridge.

The chain is the step's own record (`StepView.escalation_chain`, from the policy the case decided
under): which levels fired and when, who they told, and when the next one is due.
"""

from __future__ import annotations

from datetime import datetime

from signoff.models import EscalationStage, StepView

WHEN = "%Y-%m-%d %H:%M UTC"


def told(stage: EscalationStage) -> str:
    """`lead (carol, dave)`: the level's roles and the approvers holding them."""
    people = ", ".join(stage.people) or "nobody holds it now"
    return f"{'/'.join(stage.notify)} ({people})"


def _at(when: datetime | None) -> str:
    return when.strftime(WHEN) if when else "?"


def reached(step: StepView) -> list[EscalationStage]:
    return [s for s in step.escalation_chain if s.at is not None]


def next_stage(step: StepView) -> EscalationStage | None:
    return next((s for s in step.escalation_chain if s.at is None), None)


def reached_text(step: StepView) -> str:
    """`to lead (carol) at ..., then to ir_manager (dave) at ... (level 2 of 3)`: the levels fired."""
    done = reached(step)
    if not done:
        return ""
    return (", then ".join(f"to {told(s)} at {_at(s.at)}" for s in done)
            + f" (level {done[-1].level} of {len(step.escalation_chain)})")


def upcoming_text(step: StepView) -> str:
    """`lead (carol) at ..., then ir_manager (dave) at ...`: the levels still to come."""
    return ", then to ".join(f"{told(s)} at {_at(s.due)}" for s in step.escalation_chain if s.at is None)


def chain_text(step: StepView) -> str:
    """What the chain did and does next ("" for a step without one): "escalated to lead (carol) at
    ... (level 1 of 2); next: ir_manager (dave) at ..."."""
    if not step.escalation_chain:
        return ""
    if not reached(step):
        return f"escalates to {upcoming_text(step)}"
    text = f"escalated {reached_text(step)}"
    coming = upcoming_text(step)
    return f"{text}; next: {coming}" if coming else f"{text}; that was the last level"


def chain_summary(step: StepView) -> str:
    """What `signoff show` says about a waiting step's chain ("" for a step without one)."""
    text = chain_text(step)
    if not text:
        return ""
    if not reached(step):
        text = f"if the approvals are not in, it {text} (waiting since {_at(step.waiting_since)})"
    tail = "it keeps waiting, with no further deadline" if next_stage(step) is None else "it keeps waiting"
    return (f"{text}; {tail}, and never runs on a timeout (being told lets nobody approve: the tier's roles "
            "and quorum still decide)")
