"""Playbooks as code: an ordered list of steps, each a declared action aimed at a case entity.

Planning is pure (no I/O), so the case workflow runs it directly and replays it deterministically.
See docs/playbooks.md for the authoring guide.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

from playbooks.actions import ACTIONS, ActionSpec
from signoff.models import ActionTarget, Entity, PlaybookRecord, PlaybookStepRecord, StepPlan


@dataclass(frozen=True)
class Step:
    step_id: str
    action: ActionSpec
    params: dict[str, str] = field(default_factory=dict)
    # Entity types to aim at, in order of preference (default: the action's target kind).
    target_types: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        kind = self.action.target_kind
        if not self.target_types or kind == "any":
            return
        if kind == "case":
            raise ValueError(
                f"step {self.step_id!r}: action {self.action.name!r} acts on the case itself, so "
                f"target_types={self.target_types!r} would be ignored; drop target_types"
            )
        wrong = [t for t in self.target_types if t != kind]
        if wrong:
            raise ValueError(
                f"step {self.step_id!r}: action {self.action.name!r} acts on {kind!r} entities, but "
                f"target_types={self.target_types!r} aims it at {wrong}; drop target_types or use an action "
                f"declared for {wrong[0]!r}"
            )


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

    def record(self) -> PlaybookRecord:
        """This playbook as a case records it (with its policy): running cases keep planning from it."""
        steps = tuple(
            PlaybookStepRecord(
                step_id=s.step_id, action=s.action.name, target_kind=s.action.target_kind, tier=s.action.tier,
                reversibility=s.action.reversibility, compensation=s.action.compensation,
                description=s.action.description, params=dict(s.params), target_types=s.target_types,
            )
            for s in self.steps
        )
        body = {"name": self.name, "description": self.description,
                "steps": [s.model_dump(mode="json") for s in steps]}
        digest = hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
        return PlaybookRecord(name=self.name, description=self.description, steps=steps, digest=digest)

    @classmethod
    def from_record(cls, record: PlaybookRecord) -> Playbook:
        """The playbook a case recorded, as it was then (not registered: the code may have moved on)."""
        return cls(
            name=record.name,
            description=record.description,
            steps=tuple(
                Step(s.step_id, ActionSpec(s.action, s.target_kind, s.tier, s.reversibility, s.compensation,
                                           s.description), dict(s.params), tuple(s.target_types))
                for s in record.steps
            ),
        )


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
    """Add a playbook to the registry the policy's `alert_types.*.playbook` names.

    Refused: an undeclared action, an `ActionSpec` that differs from the action's declaration (its
    tier and undo come from `playbooks.actions.declare`, nowhere else), duplicate step ids, and a
    second, different playbook under a registered name. Registering the identical playbook again
    (a module reload) is a no-op.
    """
    for step in playbook.steps:
        declared = ACTIONS.get(step.action.name)
        if declared is None:
            raise ValueError(
                f"playbook {playbook.name!r} step {step.step_id!r} uses undeclared action {step.action.name!r}; "
                f"declare it in playbooks/actions.py (declared: {sorted(ACTIONS)})"
            )
        if step.action != declared:
            raise ValueError(
                f"playbook {playbook.name!r} step {step.step_id!r} uses an ActionSpec for {declared.name!r} "
                f"(tier {step.action.tier.value}, {step.action.reversibility.value}) that differs from its "
                f"declaration (tier {declared.tier.value}, {declared.reversibility.value}); use the spec "
                "`declare` returned (playbooks.actions)"
            )
    ids = [s.step_id for s in playbook.steps]
    if len(ids) != len(set(ids)):
        raise ValueError(f"playbook {playbook.name!r} has duplicate step ids: {ids}; give each step its own id")
    existing = PLAYBOOKS.get(playbook.name)
    if existing is not None and existing != playbook:
        raise ValueError(
            f"a different playbook named {playbook.name!r} is already registered; choose another name "
            "(or change the registered playbook where it is defined)"
        )
    PLAYBOOKS[playbook.name] = existing or playbook
    return PLAYBOOKS[playbook.name]


def get_playbook(name: str) -> Playbook:
    try:
        return PLAYBOOKS[name]
    except KeyError:
        raise KeyError(f"no playbook named {name!r}; known: {sorted(PLAYBOOKS)}") from None


# The shipped playbooks register themselves on import.
from playbooks import library as _library  # noqa: E402,F401
