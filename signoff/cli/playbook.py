"""`signoff playbook ...`: the playbooks this build registers, and what an edited one would change."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from signoff.cli._common import emit_json, fail, out

app = typer.Typer(help="Playbooks: what each does, and what an edit would have changed on recorded cases.",
                  no_args_is_help=True)


@app.command("list")
def list_playbooks(json_out: bool = typer.Option(False, "--json", help="one JSON object per playbook")) -> None:
    """The registered playbooks: steps, tiers under the policy in force, and digests."""
    policy, playbooks = _registry()
    docs = [_describe(pb, policy) for pb in playbooks.values()]
    if json_out:
        for doc in docs:
            emit_json(doc)
        return
    table = Table("playbook", "steps (tier; * waits for sign-off)", "digest")
    for doc in docs:
        table.add_row(doc["name"], ", ".join(f"{s['step_id']} ({s['tier']}{'*' if s['gated'] else ''})"
                                             for s in doc["steps"]), doc["digest"][:16])
    out.print(table)


@app.command()
def diff(
    name: str = typer.Argument(..., help="the playbook as this build has it (`signoff playbook list`)"),
    cases: int = typer.Option(200, "--cases", metavar="N", help="the newest N recorded cases to plan again"),
    histories: Path = typer.Option(None, "--histories", metavar="DIR", help="case histories exported as JSON "
                                                                          "(`temporal workflow show --output json`) "
                                                                          "instead of a server"),
    json_out: bool = typer.Option(False, "--json", help="one JSON object"),
) -> None:
    """What this build's playbook would have planned for recorded cases that ran an earlier version: steps
    added or dropped, retargeted, moved to another tier. Running cases keep the version they recorded."""
    from signoff.cli._recorded import recorded_cases
    from signoff.playbook_what_if import playbook_diff

    policy, playbooks = _registry()
    if name not in playbooks:
        fail(f"no playbook {name!r} in this build; registered: {', '.join(sorted(playbooks))}")
    if cases < 1:
        fail("--cases takes how many of the newest recorded cases to read (a positive number)")
    doc = playbook_diff(playbooks[name], policy, recorded_cases(histories, 0 if histories else cases))
    if json_out:
        emit_json(doc)
        return
    counts = doc["counts"]
    out.print(f"{name} (digest {doc['digest'][:16]}) on {doc['cases']} recorded case(s) that ran it: "
              f"{counts['changed']} would plan otherwise, {counts['same']} the same, "
              f"{counts['not_reproducible']} not reproducible, {counts['not_planned']} not read", highlight=False)
    for row in doc["rows"]:
        if row["outcome"] == "changed":
            out.print(f"  {row['case_id']}: {'; '.join(row['changes'])}", highlight=False, soft_wrap=True)
        elif row["outcome"] != "same":
            out.print(f"  {row['case_id']}: {row['outcome'].replace('_', ' ')}: {row['why']}", highlight=False,
                      soft_wrap=True)
    if not doc["cases"]:
        out.print("  no recorded case ran this playbook", highlight=False)


def _registry() -> tuple[Any, dict[str, Any]]:
    from playbooks import PLAYBOOKS  # the shipped library registers itself on import
    from policies.loader import PolicyError, load_policy
    from signoff.cli._common import fail_policy

    try:
        policy = load_policy()
    except PolicyError as exc:
        fail_policy(exc)
    return policy, dict(sorted(PLAYBOOKS.items()))


def _describe(pb: Any, policy: Any) -> dict[str, Any]:
    from signoff.models import ActionTarget, StepPlan

    steps = []
    for step in pb.steps:
        plan = StepPlan(step_id=step.step_id, action=step.action.name, tier=step.action.tier,
                        reversibility=step.action.reversibility, compensation=step.action.compensation,
                        target=ActionTarget(kind=step.action.target_kind, id="-"))
        steps.append({"step_id": step.step_id, "action": step.action.name, "target": step.action.target_kind,
                      "tier": policy.effective_tier(plan).value, "gated": not policy.rule_for(plan).auto,
                      "reversibility": step.action.reversibility.value})
    used_by = sorted(t for t, rule in policy.alert_types.items() if rule.playbook == pb.name)
    return {"name": pb.name, "description": pb.description, "digest": pb.record().digest, "alert_types": used_by,
            "steps": steps}
