"""What a playbook in this build would have planned for cases already handled: `signoff playbook diff NAME`.

Cases plan from the playbook recorded with their governance, so an edited playbook changes new cases
only; its engineer still wants to know what it will do to them. Every recorded case of that playbook
is planned again, from the entities it held when it planned, with the playbook as the code has it
now, and compared with the steps the case ran: steps added or dropped, a step aimed at another
target, a step whose action moved to another tier (and whether it now waits for sign-off).

A replay is only as good as its inputs: the case's entities are rebuilt from the alert batches in its
history before its first step, and the playbook it recorded must plan exactly the steps it ran from
them. Where it does not (batches refused, merged in or detached), the case is listed as not
reproducible instead of being compared; a case from before playbooks were recorded names none and is
not read. Pure over decoded histories.
"""

from __future__ import annotations

from typing import Any

from playbooks import Playbook
from policies.engine import Policy
from signoff.history import DecodedHistory
from signoff.models import Alert, Entity, PlaybookRecord

STEP_ACTIVITIES = ("capture_state", "execute_action")


def recorded_playbook(h: DecodedHistory) -> PlaybookRecord | None:
    """The playbook the case recorded with its governance (None in histories from before that)."""
    for run in h.activities_named("load_governance"):
        if isinstance(run.result, dict) and run.result.get("playbook"):
            return PlaybookRecord.model_validate(run.result["playbook"])
    return None


def entities_at_planning(h: DecodedHistory) -> tuple[Entity, ...]:
    """The case's entities, first sighting first, from the alert batches before its first step ran."""
    first_step = min((a.event_id for a in h.activities if a.name in STEP_ACTIVITIES), default=None)
    seen: dict[tuple[str, str], Entity] = {}
    for sig in h.signals_named("add_alerts"):
        if first_step is not None and sig.event_id > first_step:
            break
        batch = sig.args[0] if sig.args and isinstance(sig.args[0], dict) else {}
        for raw in batch.get("alerts") or ():
            try:
                alert = Alert.model_validate(raw)
            except ValueError:
                continue
            for entity in alert.entities:
                seen.setdefault((entity.type, entity.value), entity)
    return tuple(seen.values())


def _steps(plans: Any, policy: Policy) -> list[dict[str, Any]]:
    return [{"step_id": p.step_id, "action": p.action, "tier": policy.effective_tier(p).value,
             "gated": not policy.rule_for(p).auto, "target": f"{p.target.kind}:{p.target.id}",
             "params": dict(p.params)} for p in plans]


def _ran(ex: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"step_id": s["step_id"], "action": s["action"], "target": f"{s['target']['kind']}:{s['target']['id']}"}
            for s in ((ex.get("final") or {}).get("steps") or [])]


def case_diff(playbook: Playbook, policy: Policy, h: DecodedHistory, ex: dict[str, Any]) -> dict[str, Any]:
    """One case: `same`, `changed` (with what), `not_reproducible` (and why) or `not_planned`."""
    out: dict[str, Any] = {"case_id": ex.get("case_id"), "opened_at": ex.get("opened_at")}
    ran = _ran(ex)
    if ex.get("final") is None:
        return {**out, "outcome": "not_planned", "why": "running case whose steps no worker reported"}
    recorded = recorded_playbook(h)
    if recorded is None:
        return {**out, "outcome": "not_reproducible", "why": "its history has no recorded playbook (recorded "
                                                              "before playbooks were)"}
    entities = entities_at_planning(h)
    case_id = _case_id(h, ex)
    replanned = _steps(Playbook.from_record(recorded).plan(case_id, entities), policy)
    key = ("step_id", "action", "target")
    if [{k: s[k] for k in key} for s in replanned] != ran:
        return {**out, "outcome": "not_reproducible",
                "why": "its recorded playbook does not plan the steps it ran from the alerts in its history "
                       "(alerts refused, merged in or detached)"}
    new = _steps(playbook.plan(case_id, entities), policy)
    before = {s["step_id"]: s for s in replanned}
    after = {s["step_id"]: s for s in new}
    changes: list[str] = []
    for sid, s in after.items():
        if sid not in before:
            gated = ", waits for sign-off" if s["gated"] else ""
            changes.append(f"adds {sid} ({s['action']} on {s['target']}, tier {s['tier']}{gated})")
    for sid, s in before.items():
        if sid not in after:
            changes.append(f"drops {sid} ({s['action']} on {s['target']})")
    for sid in before.keys() & after.keys():
        b, a = before[sid], after[sid]
        if b["action"] != a["action"]:
            changes.append(f"{sid}: action {b['action']} -> {a['action']}")
        if b["target"] != a["target"]:
            changes.append(f"{sid}: target {b['target']} -> {a['target']}")
        if b["params"] != a["params"]:
            changes.append(f"{sid}: params {b['params']} -> {a['params']}")
        if b["tier"] != a["tier"]:
            changes.append(f"{sid}: tier {b['tier']} -> {a['tier']}")
    if [s["step_id"] for s in new if s["step_id"] in before] != [s["step_id"] for s in replanned if s["step_id"] in after]:
        changes.append("runs its steps in another order")
    if not changes:
        return {**out, "outcome": "same"}
    return {**out, "outcome": "changed", "changes": changes, "recorded_digest": recorded.digest}


def _case_id(h: DecodedHistory, ex: dict[str, Any]) -> str:
    """The id the case planned with: its start input's (an exported history file names no workflow id)."""
    start = h.start_args[0] if h.start_args and isinstance(h.start_args[0], dict) else {}
    return str(start.get("case_id") or ex.get("case_id"))


def playbook_diff(playbook: Playbook, policy: Policy,
                  cases: list[tuple[DecodedHistory, dict[str, Any]]]) -> dict[str, Any]:
    """Every recorded case of `playbook`, newest first, with counts per outcome (JSON-able)."""
    mine = [(h, ex) for h, ex in cases
            if ((ex.get("governance") or {}).get("playbook") or {}).get("name") == playbook.name]
    mine.sort(key=lambda pair: pair[1].get("opened_at") or "", reverse=True)
    rows = [case_diff(playbook, policy, h, ex) for h, ex in mine]
    counts = {k: sum(1 for r in rows if r["outcome"] == k) for k in ("same", "changed", "not_reproducible",
                                                                      "not_planned")}
    return {"playbook": playbook.name, "digest": playbook.record().digest, "cases": len(rows), "counts": counts,
            "rows": rows}
