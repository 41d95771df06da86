"""The rollback after close (`<case>-undo`, workflows/case_undo.py) for auditors: `signoff explain`
shows it beside the case, and the audit export records it under the case's id (who asked, when, why,
refused or counted, each step restored or not and why, the policy versions), read from the undo
workflow's own history, live or archived."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from signoff.client import BEST_EFFORT_QUERY
from signoff.history import DecodedHistory
from signoff.undo import UNDO_SUFFIX, UndoView, undo_id


def _iso(at: datetime | None) -> str | None:
    return at.astimezone(UTC).isoformat() if at else None


def _utc(value: Any) -> Any:
    """An ISO time as every other time in explain and the export writes it (`+00:00`, QA8: the undo's
    runs and steps came as pydantic's `Z`); anything else as it is."""
    if not isinstance(value, str) or not value:
        return value
    try:
        at = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return value
    return (at if at.tzinfo else at.replace(tzinfo=UTC)).astimezone(UTC).isoformat()


def _times(row: dict[str, Any]) -> dict[str, Any]:
    return {k: _utc(v) if k in ("at", "started_at", "finished_at") else v for k, v in row.items()}


def _view(h: DecodedHistory, live: UndoView | None = None) -> UndoView | None:
    if isinstance(h.result, dict):
        try:
            return UndoView.model_validate(h.result)
        except ValueError:
            return live
    return live


def undo_explanation_from_history(h: DecodedHistory, live: UndoView | None = None) -> dict[str, Any]:
    """The undo as a JSON-ready dict: requests (accepted, counted or refused), runs, steps, escalations."""
    view = _view(h, live)
    requests = []
    for u in h.updates_named("rollback"):
        req = u.args[0] if u.args and isinstance(u.args[0], dict) else {}
        requests.append({
            "at": _iso(u.accepted_at), "requested_by": req.get("requested_by"), "reason": req.get("reason"),
            "signed": bool(req.get("token")), "identity": u.identity, "update_id": u.update_id,
            "outcome": "refused" if u.failure else ("answered" if u.completed_at else "waiting"),
            "refusal": u.failure, "result": u.result if isinstance(u.result, str) else None,
        })
    compensations = [{
        "step_id": (r.input or {}).get("step_id"), "action": (r.input or {}).get("action"),
        "undoes": (r.input or {}).get("forward_action"), "target": (r.input or {}).get("target"),
        "restore_to": (r.input or {}).get("restore_to"), "restored": (r.result or {}).get("restored"),
        "idempotency_key": (r.input or {}).get("idempotency_key"),
        "started_at": _iso(r.scheduled_at), "completed_at": _iso(r.completed_at),
        "outcome": "failed" if r.failure else ("compensated" if r.completed_at else "running"), "failure": r.failure,
    } for r in h.activities_named("compensate_action")]
    return {
        "undo_id": h.workflow_id, "run_id": h.run_id, "source": f"{h.source} history ({h.event_count} events)",
        "workflow_status": h.close, "started_at": _iso(h.started_at), "closed_at": _iso(h.closed_at),
        "status": view.status.value if view else None,
        "problem": view.problem if view else "",
        "policy_version": view.policy_version if view else None,
        "case_policy_version": view.case_policy_version if view else None,
        "case_verdict": view.case_verdict.model_dump(mode="json", exclude={"token"}) if view and view.case_verdict else None,
        "quorum": view.quorum if view else None,
        "requests": requests,
        "runs": [_times(r.model_dump(mode="json")) for r in view.runs] if view else [],
        "steps": [_times(s.model_dump(mode="json")) for s in view.steps] if view else [],
        "compensations": compensations,
        "escalations": [{"at": _iso(r.scheduled_at), **{k: v for k, v in (r.input or {}).items() if k != "case_id"}}
                        for r in h.activities_named("escalate")],
        "notes": list(view.notes) if view else [],
        "from": "final result" if isinstance(h.result, dict) else ("live status query" if live else "history only"),
    }


async def undo_explanation(client: Any, case_id: str) -> dict[str, Any] | None:
    """The rollback after close of `case_id`, or None when nobody asked for one."""
    from signoff.history import load_history

    try:
        h = await load_history(client, undo_id(case_id))
    except KeyError:
        return None
    live = None
    if h.close == "running":
        try:
            live = await client.get_workflow_handle(h.workflow_id).query("status", result_type=UndoView,
                                                                          rpc_timeout=BEST_EFFORT_QUERY)
        except Exception:  # no worker to answer: the history alone still says who asked and what ran
            live = None
    return undo_explanation_from_history(h, live)


async def archived_undo_explanation(case_id: str) -> dict[str, Any] | None:
    """The newest archived run of the case's undo (Temporal unreachable), or None."""
    from signoff.client import data_converter
    from signoff.history import apply_archive_record, archived_runs, decode_history, read_archive

    decoded = []
    for path in archived_runs(undo_id(case_id)):
        try:
            history, record = read_archive(path)
        except (OSError, ValueError, KeyError):
            continue
        decoded.append(apply_archive_record(await decode_history(history, data_converter(), source="archive"), record))
    return undo_explanation_from_history(max(decoded, key=lambda d: d.started_at)) if decoded else None


def render_undo(ex: dict[str, Any] | None) -> list[str]:
    """`signoff explain` lines for the rollback after close."""
    if not ex:
        return []
    lines = [f"Rollback after close ({ex['undo_id']}, {ex['source']}): {ex['status'] or ex['workflow_status']}"
             + (f" under policy {str(ex['policy_version'])[:16]}" if ex.get("policy_version") else "")
             + (f"; the case ran under {str(ex['case_policy_version'])[:16]}" if ex.get("case_policy_version") else "")]
    if ex.get("problem"):
        lines.append(f"  {ex['problem']}")
    for r in ex["requests"]:
        lines.append(f"  - {r['at']}  requested by {r['requested_by']}" + (" (signed)" if r["signed"] else "")
                     + f" ({r['reason']!r}): " + (f"REFUSED: {r['refusal']}" if r["refusal"] else (r["result"] or r["outcome"])))
    for run in ex["runs"]:
        lines.append(f"  run {run['started_at']} -> {run.get('finished_at') or 'running'} asked by "
                     f"{', '.join(run['requested_by'])} under policy {run['policy_version'][:16]}: {run.get('result') or ''}")
    for s in ex["steps"]:
        if s["outcome"] == "left" and s["why"] == "never ran":
            continue
        lines.append(f"  - {s['step_id']}: {s['action']} on {s['target']['kind']} {s['target']['id']} -> {s['outcome']}"
                     + (f": {s['why']}" if s["why"] else "") + (f" (at {s['at']})" if s.get("at") else ""))
    for e in ex["escalations"]:
        lines.append(f"  Escalation: {e['at']} ({e.get('kind')}): {e.get('reason')}")
    if ex.get("case_verdict"):
        v = ex["case_verdict"]
        lines.append(f"  The case's verdict stays on record: {v['verdict']} by {v['analyst']}")
    return lines


def undo_events(h: DecodedHistory) -> list[dict[str, Any]]:
    """Audit events of one undo run, filed under the case's id (beside the case's own events)."""
    ex = undo_explanation_from_history(h)
    case_id = h.workflow_id.removesuffix(UNDO_SUFFIX)

    def event(at: str | None, kind: str, actor: str | None, **detail: Any) -> dict[str, Any]:
        return {"at": at or "", "kind": kind, "workflow_id": case_id, "run_id": h.run_id, "actor": actor or "",
                "detail": {"undo_workflow": h.workflow_id, "after_close": True, **detail}}

    events = []
    for r in ex["requests"]:
        if r["refusal"]:
            events.append(event(r["at"], "refusal", r["requested_by"], decision="rollback", via="update",
                                reason=r["reason"], refusal=r["refusal"], identity=r["identity"], signed=r["signed"],
                                update_id=r["update_id"]))
        else:
            events.append(event(r["at"], "rollback_request", r["requested_by"], via="update", reason=r["reason"],
                                identity=r["identity"], signed=r["signed"], update_id=r["update_id"],
                                result=r["result"], policy_version=ex["policy_version"]))
    for c in ex["compensations"]:
        events.append(event(c["completed_at"] or c["started_at"],
                            "compensation" if not c["failure"] else "compensation_failed", "signoff",
                            step=c["step_id"], action=c["action"], undoes=c["undoes"], target=c["target"],
                            restored=c["restored"], restore_to=c["restore_to"], outcome=c["outcome"],
                            failure=c["failure"], idempotency_key=c["idempotency_key"]))
    for run in ex["runs"]:
        events.append(event(run.get("finished_at") or run["started_at"], "rollback", ", ".join(run["requested_by"]),
                            reasons=run["reasons"], result=run.get("result"), policy_version=run["policy_version"],
                            case_policy_version=ex["case_policy_version"], steps=run["steps"],
                            outcomes={s["step_id"]: {"outcome": s["outcome"], "why": s["why"], "current": s["current"]}
                                      for s in ex["steps"] if s["step_id"] in run["steps"]}))
    for e in ex["escalations"]:
        events.append(event(e["at"], "escalation", "signoff",
                            **{("escalation_kind" if k == "kind" else k): v for k, v in e.items() if k != "at"}))
    return events
