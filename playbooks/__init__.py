"""Playbooks as code: an ordered list of steps, each a declared action aimed at a case entity.

Planning is pure (no I/O), so the case workflow runs it directly and replays it deterministically.
See docs/playbooks.md for the authoring guide.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from playbooks.actions import ACTIONS, ActionSpec
from signoff.models import ActionTarget, Entity, StepPlan


@dataclass(frozen=True)
class Step:
    step_id: str
    action: ActionSpec
    params: dict[str, str] = field(default_factory=dict)
    # Entity types to aim at, in order of preference (default: the action's target kind).
    target_types: tuple[str, ...] = ()


@dataclass(frozen=True)
class Playbook:
    name: str
    description: str
    steps: tuple[Step, ...]

    def plan(self, case_id: str, entities: tuple[Entity, ...]) -> list[StepPlan]:
        """Resolve each step's target from the case's entities; steps with no target are left out."""
        plans = []
        for step in self.steps:
            target = _choose_target(step, case_id, entities)
            if target is None:
                continue
            plans.append(
                StepPlan(
                    step_id=step.step_id,
                    action=step.action.name,
                    tier=step.action.tier,
                    reversibility=step.action.reversibility,
                    compensation=step.action.compensation,
                    target=target,
                    params=dict(step.params),
                    description=step.action.description,
                )
            )
        return plans


def _choose_target(step: Step, case_id: str, entities: tuple[Entity, ...]) -> ActionTarget | None:
    kind = step.action.target_kind
    if kind == "case":
        return ActionTarget(kind="case", id=case_id)
    wanted = step.target_types or ((kind,) if kind != "any" else ("account", "host", "ip"))
    for wanted_type in wanted:
        # Impacted entities first: they are what the alert is about.
        ranked = sorted(
            (e for e in entities if e.type == wanted_type), key=lambda e: (e.role != "impacted", e.value)
        )
        if ranked:
            return ActionTarget(kind=wanted_type, id=ranked[0].value)
    return None


PLAYBOOKS: dict[str, Playbook] = {}


def register(playbook: Playbook) -> Playbook:
    for step in playbook.steps:
        if step.action.name not in ACTIONS:
            raise ValueError(f"playbook {playbook.name!r} uses undeclared action {step.action.name!r}")
    ids = [s.step_id for s in playbook.steps]
    if len(ids) != len(set(ids)):
        raise ValueError(f"playbook {playbook.name!r} has duplicate step ids: {ids}")
    PLAYBOOKS[playbook.name] = playbook
    return playbook


def get_playbook(name: str) -> Playbook:
    try:
        return PLAYBOOKS[name]
    except KeyError:
        raise KeyError(f"no playbook named {name!r}; known: {sorted(PLAYBOOKS)}") from None


# The shipped playbooks register themselves on import.
from playbooks import library as _library  # noqa: E402,F401
