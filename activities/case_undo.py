"""The undo workflow's activity: the case as it ended (workflows/case_undo.py, signoff/undo.py)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict
from temporalio import activity
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from signoff.models import CaseView, HoldHandover
from signoff.undo import EndedCase, UndoInput, UndoView


@activity.defn
async def read_ended_case(inp: UndoInput) -> EndedCase:
    """The case's final view (its workflow result, or the final view its archive kept once Temporal
    deleted it) and the idempotency-key suffix of each step's last action. A case that is not
    there, still runs, or ended without a final view comes back with `problem` said plainly."""
    from signoff.history import load_history

    case_id = inp.case_id
    try:
        h = await load_history(activity.client(), case_id)
    except KeyError as exc:
        return EndedCase(case_id=case_id, problem=str(exc.args[0]) if exc.args else f"no case {case_id!r}")
    except RPCError as exc:
        if exc.status in (RPCStatusCode.INVALID_ARGUMENT, RPCStatusCode.PERMISSION_DENIED):
            raise ApplicationError(f"cannot read case {case_id}: {exc.message}", non_retryable=True) from exc
        raise
    if h.workflow_type and h.workflow_type != "CaseWorkflow":
        return EndedCase(case_id=case_id, problem=f"{case_id!r} is a {h.workflow_type}, not a case")
    if h.close == "running":
        return EndedCase(case_id=case_id, run_id=h.run_id,
                         problem=f"case {case_id} is still running: its own rollback undoes its actions "
                                 f"(`signoff rollback {case_id}` sends the request there)")
    if not isinstance(h.result, dict):
        return EndedCase(case_id=case_id, run_id=h.run_id,
                         problem=f"case {case_id} ended {h.close} without a final view to undo from"
                                 + (f" ({h.failure})" if h.failure else "")
                                 + f": `signoff explain {case_id}` lists each action with the state captured "
                                   "before it, to restore by hand")
    view = CaseView.model_validate(h.result)
    suffix: dict[str, str] = {}
    for run in h.activities_named("execute_action"):
        req = (run.input or {}).get("request") or {}
        step_id, key = req.get("step_id"), req.get("idempotency_key")
        base = f"{case_id}:{step_id}"
        if isinstance(step_id, str) and isinstance(key, str) and key.startswith(base):
            suffix[step_id] = key[len(base):]  # the last attempt's (",a2" from a retry on)
    handed_over = _handed_over(view, [s.args[0] for s in h.signals_named("take_over_hold") if s.args])
    return EndedCase(
        case_id=case_id, run_id=h.run_id, status=view.status, alert_type=view.alert_type,
        policy_version=view.policy_version, verdict=view.verdict, ended_at=h.closed_at,
        source="archive" if h.source == "archive" else "final result", steps=view.steps, attempt_suffix=suffix,
        handed_over=handed_over, rollback_nonces=_rollback_nonces(h),
    )


def _rollback_nonces(h: Any) -> tuple[str, ...]:
    from policies.signing import token_nonce

    sent = [u.args[0] for u in h.updates_named("rollback") if u.args]
    sent += [s.args[0] for s in h.signals_named("rollback_signal") if s.args]
    tokens = {r["token"] for r in sent if isinstance(r, dict) and isinstance(r.get("token"), str)}
    return tuple(sorted(token_nonce(t) for t in tokens))


def _handed_over(view: CaseView, handovers: list[Any]) -> dict[str, dict[str, Any]]:
    """The state each step's rollback restores after the holds other cases handed it (the case's
    `take_over_hold`: a step whose captured state was the other case's action takes that case's
    captured state), applied in the order the case received them."""
    before = {s.step_id: dict(s.result.before) for s in view.steps if s.result is not None}
    taken: dict[str, dict[str, Any]] = {}
    for raw in handovers:
        try:
            handover = HoldHandover.model_validate(raw)
        except ValueError:
            continue
        for s in view.steps:
            if (s.action, s.target) != (handover.action, handover.target) or s.step_id not in before:
                continue
            if before[s.step_id] == handover.after:
                before[s.step_id] = taken[s.step_id] = dict(handover.before)
    return taken


class ArchiveUndo(BaseModel):
    model_config = ConfigDict(frozen=True)

    workflow_id: str
    run_id: str
    final_view: UndoView


@activity.defn
async def archive_undo(req: ArchiveUndo) -> str:
    """Keep the undo's history beside the case's archive (audit retention; `signoff explain` and the
    audit export read it once Temporal has deleted it), its final view standing in for its result."""
    from signoff.history import write_archive

    history = await activity.client().get_workflow_handle(req.workflow_id, run_id=req.run_id).fetch_history()
    return str(write_archive(history, complete=False, final_view=req.final_view.model_dump(mode="json")))


ACTIVITIES = [read_ended_case, archive_undo]
