"""What is contained right now: every high-impact action in effect, across cases open and ended.

A SOC lead's morning question ("which hosts are isolated, which accounts disabled, since when, on
whose approval, and how do I release them?") has no answer in a case list: a case that ended keeps
its actions in effect until someone rolls it back, and a case can hold a target another case holds
too. This reads Temporal alone: visibility finds the cases whose history executed a gated action
(`ExecutedActions`), each case's own state says which are still in effect (running: its `status`
query; ended: its result, less what its undo workflow restored since), and its history says when
each ran. Irreversible actions (revoking sessions) are done, not in effect: they are counted apart.

A case that has ended (closed, merged) cannot be told when another case's rollback restores a target
it holds too (signoff/holds.py hands a target over to open cases only): its own state still says
"executed". So the compensations recorded in the histories read here (the cases' and their undo
workflows') are compared with each row: one by another case, after the row's action, that restored
another state than the row's action left, means the target is no longer as that case left it. Such a
row is reported apart ("released"), with the case whose rollback released it and when.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from signoff.models import Reversibility, StepState

if TYPE_CHECKING:
    from signoff.history import DecodedHistory

# Cases read at once (each is a describe, a query or result, and a history fetch).
CONCURRENCY = 8
# Steps whose action is in effect: executed, or executed and then not restored by the case's own rollback
# (its compensation failed: the host is still isolated, `rollback_failed`).
_IN_EFFECT = (StepState.executed, StepState.compensation_failed)
# What an ended case's undo left in effect (its outcome for the step): the rest was undone or handed over.
_UNDO_LEAVES = {"to_restore", "changed_since", "failed", "left"}


def gated_actions() -> list[str]:
    """Reversible actions above the low tier, by name (those a case holds a target with)."""
    import playbooks.library  # noqa: F401 (registers the actions)
    from playbooks.actions import ACTIONS

    return sorted(a.name for a in ACTIONS.values()
                  if a.tier.value != "low" and a.reversibility != Reversibility.irreversible)


def containment_query(extra: str | None = None) -> str:
    from signoff.listing import case_query

    names = ", ".join(f"'{n}'" for n in gated_actions())
    return case_query(None, f"ExecutedActions IN ({names})" + (f" AND ({extra})" if extra else ""))


async def actions_in_effect(client: Any, *, query: str | None = None, limit: int = 500,
                            progress: Callable[[int, int], None] | None = None,
                            ) -> tuple[list[dict[str, Any]], list[str], int, list[dict[str, Any]]]:
    """(rows, problems, irreversible, released): one row per gated action in effect, the oldest first;
    the cases that could not be read, with why; how many irreversible actions those cases ran; the
    rows of ended cases whose target another case's rollback restored since (`released_by`, `released_at`)."""
    from signoff.listing import visibility_pages

    case_ids: list[str] = []
    async for page in visibility_pages(client, containment_query(query), limit=limit + 1):
        case_ids += [info.execution.workflow_id for info in page]
    more = len(case_ids) > limit  # the rest is not read: said, never silently left out
    case_ids = case_ids[:limit]
    gate = asyncio.Semaphore(CONCURRENCY)
    done = 0

    async def one(case_id: str) -> tuple[list[dict[str, Any]], str, int, list[dict[str, Any]]]:
        nonlocal done
        async with gate:
            try:
                return await _case_rows(client, case_id)
            except Exception as exc:  # one unreadable case must not hide the others
                return [], f"{case_id}: {exc}", 0, []
            finally:
                done += 1
                if progress is not None:
                    progress(done, len(case_ids))

    results = await asyncio.gather(*(one(c) for c in case_ids))
    rows = [row for found, _, _, _ in results for row in found]
    rows, released = _split_released(rows, [r for _, _, _, found in results for r in found])
    _mark_shared(rows)
    rows.sort(key=lambda r: (r["since"] or "9999", r["case_id"], r["step_id"]))
    released.sort(key=lambda r: (r["released_at"], r["case_id"], r["step_id"]))
    problems = [p for _, p, _, _ in results if p]
    if more:
        problems.append(f"more than {limit} case{'s' if limit != 1 else ''} ran a gated action: only {limit} "
                        f"{'were' if limit != 1 else 'was'} read, actions of the others "
                        "may be in effect too: raise --limit, or narrow with --query")
    return rows, problems, sum(n for _, _, n, _ in results), released


def _split_released(rows: list[dict[str, Any]], restores: list[dict[str, Any]],
                    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(in effect, released): a row whose target another case restored, after the row's action, to
    another state than the one the row's action left is no longer in effect (the newest restore decides)."""
    kept, released = [], []
    for row in rows:
        later = sorted((r for r in restores
                        if (r["action"], r["target_kind"], r["target"]) == (row["action"], row["target_kind"], row["target"])
                        and r["case_id"] != row["case_id"] and row["since"] is not None and r["at"] > row["since"]),
                       key=lambda r: r["at"])
        if later and later[-1]["restored"] != row["state"]:
            last = later[-1]
            released.append({**row, "released_by": last["case_id"], "released_at": last["at"],
                             "released_to": last["restored"]})
        else:
            kept.append(row)
    return kept, released


async def _case_rows(client: Any, case_id: str,
                     ) -> tuple[list[dict[str, Any]], str, int, list[dict[str, Any]]]:
    from temporalio.client import WorkflowExecutionStatus

    from signoff.case_view import read_case_view
    from signoff.history import load_history
    from signoff.undo import read_undo, undo_id

    described = await client.get_workflow_handle(case_id).describe()
    running = described.status == WorkflowExecutionStatus.RUNNING
    if not running and described.status != WorkflowExecutionStatus.COMPLETED:
        return [], f"{case_id}: the case {described.status.name.lower()}: read it with `signoff explain {case_id}`", 0, []
    view = await read_case_view(client, case_id, completed=not running, run_id=None if running else described.run_id)
    left: dict[str, str] = {}
    if not running:
        undo = await read_undo(client, case_id)
        left = {s.step_id: s.outcome.value for s in undo.steps} if undo is not None else {}
    irreversible = sum(1 for s in view.steps if s.state == StepState.executed and s.quorum > 0
                       and s.reversibility == Reversibility.irreversible)
    steps = [s for s in view.steps if s.state in _IN_EFFECT and s.quorum > 0 and s.result is not None
             and s.reversibility != Reversibility.irreversible and left.get(s.step_id, "to_restore") in _UNDO_LEAVES]
    gated = {s.action for s in view.steps if s.quorum > 0}
    if not gated:
        return [], "", irreversible, []
    history = await load_history(client, case_id)  # read once: restores and execution times
    restores = _restores(history, case_id, gated)
    if not running and left:
        # KeyError: an undo deleted by retention and not archived (its outcome was read already)
        with contextlib.suppress(KeyError):
            restores += _restores(await load_history(client, undo_id(case_id)), case_id, gated)
    if not steps:
        return [], "", irreversible, restores
    since = _executed_at(history)
    rows = []
    for s in steps:
        approvers = sorted({a.approver for a in s.approvals if a.accepted and a.decision.value == "approve"})
        rows.append({
            "target_kind": s.target.kind, "target": s.target.id, "action": s.action, "step_id": s.step_id,
            "case_id": case_id, "case_status": view.status.value, "case_open": running,
            "since": since.get(s.step_id), "approved_by": approvers,
            "undo_outcome": left.get(s.step_id) if not running else None,
            "rollback_open_until": view.rollback_open_until.isoformat() if view.rollback_open_until else None,
            "how_to_release": f"signoff rollback {case_id} --as USER --reason TEXT",
            "also_held_by": [],
            "merged_into": view.merged_into.target if view.merged_into is not None else None,
            "state": s.result.after if s.result is not None else None,
            "before": s.result.before if s.result is not None else None,
        })
    return rows, "", irreversible, restores


def _restores(history: DecodedHistory, case_id: str, actions: set[str]) -> list[dict[str, Any]]:
    """The compensations of gated actions of `case_id` in `history` (the case's, or its undo workflow's
    after it ended): which target, restored to what, when."""
    found = []
    for run in history.activities_named("compensate_action"):
        req = run.input or {}
        target = req.get("target") or {}
        if run.failure or run.completed_at is None or req.get("forward_action") not in actions:
            continue
        restored = (run.result or {}).get("restored", req.get("restore_to"))
        found.append({"case_id": case_id, "action": req.get("forward_action"), "target_kind": target.get("kind"),
                      "target": target.get("id"), "at": run.completed_at.isoformat(), "restored": restored})
    return found


def _executed_at(history: DecodedHistory) -> dict[str, str]:
    """When each step's action last completed, from the case's history (its latest run)."""
    at: dict[str, datetime] = {}
    for run in history.activities_named("execute_action"):
        step = ((run.input or {}).get("request") or {}).get("step_id")
        if step and run.completed_at and not run.failure:
            at[step] = run.completed_at
    return {step: when.isoformat() for step, when in at.items()}


def _mark_shared(rows: list[dict[str, Any]]) -> None:
    """Each row names the other cases holding the same action on the same target (rolling one back
    keeps the target as it is while another holds it: signoff/holds.py)."""
    holders: dict[tuple[str, str, str], list[str]] = {}
    for row in rows:
        holders.setdefault((row["action"], row["target_kind"], row["target"]), []).append(row["case_id"])
    for row in rows:
        others = holders[(row["action"], row["target_kind"], row["target"])]
        row["also_held_by"] = sorted({c for c in others if c != row["case_id"]})


def held_for(since: str | None, now: datetime) -> str:
    """"3d 4h" since the action ran ("?" when the history did not say)."""
    if since is None:
        return "?"
    seconds = max(int((now - datetime.fromisoformat(since)).total_seconds()), 0)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    if days:
        return f"{days}d {hours}h"
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m"
