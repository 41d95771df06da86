"""Model lifecycle through the governance workflow: `signoff model promote|rollback|retrain|shadow`.

signoff/cli/model.py (the scorer's commands) delegates promote and rollback here and registers the
other two, so every change of the active model is a governed, recorded action (quorum to promote;
rollback, the compensation, acts at once).
"""

from __future__ import annotations

import contextlib
import uuid
from pathlib import Path
from typing import Any

import typer

from signoff import settings
from signoff.cli._common import emit_json, fail, out, run


def _result(message: str, as_json: bool, notes: list[str] | None = None, **extra: Any) -> None:
    if as_json:
        emit_json({"result": message, **extra, "threshold_notes": notes or []})
        return
    out.print(message, highlight=False)
    for note in notes or []:
        out.print(f"[yellow]threshold check[/]: {note}", highlight=False)


def governed_promote(model_id: str, user: str, reason: str, as_json: bool, risk_budget: float = 0.005) -> None:
    from signoff.autonomy.models import ModelChange
    from signoff.cli.autonomy import change

    before = run(_scoring_context())
    message = run(change("promote_model", ModelChange(model_id=model_id, by=user, reason=reason)))
    incoming = _stored(model_id)
    notes = [] if "already active" in message or incoming is None else _carryover(before, incoming, risk_budget)
    if notes and "is active" not in message:
        notes = [f"if it is activated: {n}" for n in notes]
    _result(message, as_json, notes, model_id=model_id, by=user, active="is active" in message)


def governed_rollback(user: str, reason: str, as_json: bool, risk_budget: float = 0.005) -> None:
    from signoff.autonomy.models import ModelRollback
    from signoff.cli.autonomy import change

    before = run(_scoring_context())
    message = run(change("rollback_model", ModelRollback(by=user, reason=reason)))
    after = run(_scoring_context())
    notes = _carryover(before, after[2], risk_budget) if after[2] else []
    if after[2] and "model store's previous" in message:  # the workflow cannot name it: say which one that is here
        message += f"\nnow active in this machine's model store: {after[2][:12]}"
    _result(message, as_json, notes, by=user, active_model=after[2])


async def _scoring_context() -> tuple[Any, Any, str | None]:
    """(policy, live governance state, the model cases are scored with as far as this machine can tell)."""
    from policies.loader import load_policy
    from signoff.autonomy.client import read_live
    from signoff.client import connect
    from signoff.scoring import model_store

    live = await read_live(await connect())
    active = live.model.active if live is not None and live.model.active else None
    with contextlib.suppress(model_store.ModelStoreError):  # no readable store here: nothing to compare
        active = active or model_store.active_model_id()
    return load_policy(), live, active


def _stored(model_id: str) -> str | None:
    from signoff.scoring import model_store

    try:
        return model_store.resolve(model_id)
    except model_store.ModelStoreError:
        return None  # not in this machine's store: the workers' answer above says what happened


def _carryover(before: tuple[Any, Any, str | None], incoming: str, risk_budget: float) -> list[str]:
    """Thresholds stay when the model changes: say what each one now means (signoff/scoring/carryover.py)."""
    from signoff.scoring.carryover import carryover, describe

    policy, live, outgoing = before
    if outgoing is None:
        return []
    return [describe(c, risk_budget) for c in carryover(policy, live, outgoing, incoming, risk_budget)]


def shadow(
    model_id: str = typer.Argument(..., help="model id (prefix ok); '-' clears the shadow candidate"),
    user: str = typer.Option(..., "--as", help="who (governance role or detection engineer)"),
    reason: str = typer.Option(..., "--reason", help="why (recorded)"),
) -> None:
    """Score new cases with a candidate model too (recorded next to the active score; never decides)."""
    from signoff.autonomy.models import ModelChange
    from signoff.cli.autonomy import change

    target = "" if model_id == "-" else model_id
    out.print(run(change("set_candidate", ModelChange(model_id=target, by=user, reason=reason))), highlight=False)


def retrain(
    user: str = typer.Option(..., "--as", help="who asks (governance role or detection engineer)"),
    reason: str = typer.Option(..., "--reason", help="why (recorded)"),
    base_data: Path = typer.Option(None, "--base-data", help="GUIDE CSV trained on together with the verdicts"),
    min_verdicts: int = typer.Option(20, help="refuse with fewer analyst verdicts"),
    seed: int = typer.Option(7, help="same verdicts + data + seed → the same model bytes"),
    rounds: int = typer.Option(60, help="boosting rounds per bag (the model averages 5 bags)"),
    as_json: bool = typer.Option(False, "--json", help="one JSON object"),
) -> None:
    """Train a candidate from the analysts' verdicts (a workflow); it scores in shadow until promoted."""
    from activities.retrain import Candidate, RetrainRequest
    from workflows.retrain import RetrainWorkflow

    req = RetrainRequest(requested_by=user, reason=reason, base_data=str(base_data.resolve()) if base_data else None,
                         min_verdicts=min_verdicts, seed=seed, rounds=rounds)

    async def main() -> Candidate:
        from temporalio.client import WorkflowFailureError

        from signoff.client import connect

        client = await connect()
        try:
            return await client.execute_workflow(RetrainWorkflow.run, req, id=f"retrain-{uuid.uuid4().hex[:12]}",
                                                 task_queue=settings.task_queue())
        except WorkflowFailureError as exc:
            cause: Any = exc.cause
            while getattr(cause, "cause", None) is not None:
                cause = cause.cause
            fail(f"retraining failed: {getattr(cause, 'message', cause)}")

    candidate = run(main())
    if as_json:
        emit_json(candidate.model_dump(mode="json"))
        return
    s = candidate.summary
    out.print(f"candidate [bold]{candidate.model_id}[/] from {candidate.verdict_cases} verdict cases + "
              f"{candidate.base_cases} base cases: OOF macro-F1 {s['oof_macro_f1']:.3f}, ECE {s['oof_ece']:.3f}")
    out.print("it scores new cases in shadow now; compare with `signoff autonomy status`, then "
              f"`signoff model promote {candidate.model_id[:12]} --as USER --reason TEXT` (quorum)")


def register(app: typer.Typer) -> None:
    app.command()(retrain)
    app.command()(shadow)
