"""Governance activities: read the policy, verify and activate models, record verdicts.

Drift and retraining activities live in activities/drift.py and activities/retrain.py and are
registered through this module's `ACTIVITIES` list.
"""

from __future__ import annotations

import asyncio
from typing import Literal

from pydantic import BaseModel, ConfigDict
from temporalio import activity
from temporalio.exceptions import ApplicationError

from policies.engine import Policy
from policies.loader import PolicyError, load_policy
from signoff.autonomy.models import VerdictRecord


class ModelSync(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    action: Literal["promote", "rollback"]
    model_id: str | None  # the model active afterwards (None: the store's previous / shipped default)
    rolled_back: str | None = None
    by: str
    reason: str


@activity.defn
async def governance_policy() -> Policy:
    """The policy file in force on this worker (roles, quorums, evidence rules)."""
    try:
        return load_policy()
    except PolicyError as exc:
        raise ApplicationError(str(exc), type="PolicyError", non_retryable=True) from exc


@activity.defn
async def resolve_model(model_id: str) -> str:
    """The full id of a stored model (unique prefix accepted), verified against its artifact bytes."""
    from signoff.scoring import model_store

    def check() -> str:
        full = model_store.resolve(model_id)
        model_store.read_artifact(full)
        return full

    try:
        return await asyncio.to_thread(check)
    except model_store.ModelStoreError as exc:
        raise ApplicationError(str(exc), type="ModelUnavailable", non_retryable=True) from exc


@activity.defn
async def sync_model_store(req: ModelSync) -> str:
    """Mirror a governed model change into the model store's pointer (`signoff model list` reads it)."""
    from signoff.scoring import model_store

    def apply() -> str:
        active = model_store.active_model_id()
        if req.action == "promote":
            assert req.model_id is not None
            if active != req.model_id:
                model_store.promote(req.model_id, req.by, req.reason)
            return req.model_id
        stack = model_store._stack(model_store.history())
        if stack and stack[-1] == req.rolled_back:
            model_store.rollback(req.by, req.reason)
        elif req.model_id and active != req.model_id:
            model_store.promote(req.model_id, req.by, f"rollback: {req.reason}")
        return model_store.active_model_id()

    try:
        return await asyncio.to_thread(apply)
    except model_store.ModelStoreError as exc:
        raise ApplicationError(str(exc), type="ModelUnavailable", non_retryable=True) from exc


@activity.defn
async def record_verdict(rec: VerdictRecord) -> str:
    """Count an analyst's verdict as evidence: signal(-with-start) the governance workflow."""
    from signoff.autonomy.client import governance_id, signal_verdict

    queue = activity.info().task_queue
    await signal_verdict(activity.client(), rec, queue)
    return governance_id(queue)


def _more() -> list:
    found: list = []
    for module in ("activities.drift", "activities.retrain"):
        try:
            mod = __import__(module, fromlist=["ACTIVITIES"])
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
            continue
        found.extend(getattr(mod, "ACTIVITIES", ()))
    return found


ACTIVITIES = [governance_policy, resolve_model, sync_model_store, record_verdict, *_more()]
