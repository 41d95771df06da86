"""Case activities: governance context, enrichment, escalation. Small, typed, idempotent."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, SerializerFunctionWrapHandler, model_serializer
from temporalio import activity

from activities.enrichers import enrich_entities
from policies.engine import GovernanceSnapshot
from policies.loader import load_policy
from signoff.models import Enrichment, Entity
from signoff.settings import home


class _In(BaseModel):
    model_config = ConfigDict(frozen=True)


class GovernanceRequest(_In):
    alert_type: str
    case_id: str = ""  # for the deterministic on-the-loop review sample
    fresh: bool = False  # bypass the per-process cache of the live governance state (before an auto-close)


class EnrichRequest(_In):
    case_id: str
    entities: tuple[Entity, ...]


class Escalation(_In):
    case_id: str
    reason: str
    step_id: str = ""
    kind: str = "approval_timeout"  # approval_timeout | action_failed | rollback_failed | verdict_overdue | drift
    # approval_timeout under a tier with an `escalation:` chain: which level (1 = first), the roles it
    # tells and the approvers holding them. Left out of the payload when unset, so an escalation
    # without a chain is the same bytes as before (its command in the history, the queue line).
    level: int = 0
    notify: tuple[str, ...] = ()
    people: tuple[str, ...] = ()

    @model_serializer(mode="wrap")
    def _chain_only_when_set(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        for key in ("level", "notify", "people"):
            if not data.get(key):
                data.pop(key, None)
        return data


@activity.defn
async def load_governance(req: GovernanceRequest) -> GovernanceSnapshot:
    """The policy file plus the live autonomy/threshold state for the alert type."""
    from signoff.governance_state import effective_governance

    policy = load_policy()
    return await effective_governance(policy, req.alert_type, req.case_id, fresh=req.fresh)


@activity.defn
async def enrich_case(req: EnrichRequest) -> Enrichment:
    return await enrich_entities(req.case_id, req.entities)


def escalation_webhook() -> str:
    """`SIGNOFF_ESCALATION_WEBHOOK`, or the contents of the file `SIGNOFF_ESCALATION_WEBHOOK_FILE` names
    (the URL is a bearer secret: a mounted secret file keeps it out of the environment)."""
    path = os.environ.get("SIGNOFF_ESCALATION_WEBHOOK_FILE", "").strip()
    if path:
        try:
            return Path(path).read_text().strip()
        except OSError as exc:
            raise RuntimeError(f"cannot read SIGNOFF_ESCALATION_WEBHOOK_FILE ({path}): {exc.strerror}; "
                               "fix the path or its permissions") from None
    return os.environ.get("SIGNOFF_ESCALATION_WEBHOOK", "").strip()


def webhook_payload(record: dict[str, Any]) -> dict[str, Any]:
    """The escalation as the webhook gets it: every text shown as `signoff.display.clean` shows it. The
    reason quotes targets from alerts and humans' words; in a chat channel a control character, a bidi
    override or a newline then "Approved by alice" would read as something the case never said. The
    queue file keeps the raw record (it is evidence, like the history)."""
    from signoff.display import clean

    def shown(value: Any) -> Any:
        if isinstance(value, str):
            return clean(value)
        if isinstance(value, list | tuple):
            return [shown(v) for v in value]
        return value

    return {key: shown(value) for key, value in record.items()}


@activity.defn
async def escalate(req: Escalation) -> str:
    """Tell a human. Writes the escalation queue file; posts to a webhook when one is configured."""
    record = {"at": datetime.now(UTC).isoformat(), **req.model_dump()}
    path = home() / "escalations.jsonl"
    if activity.info().attempt == 1:  # a retry is for the webhook: the queue already has this escalation
        with path.open("a") as fh:
            fh.write(json.dumps(record, sort_keys=True) + "\n")
    url = escalation_webhook()
    if url:
        try:
            async with httpx.AsyncClient(timeout=10) as http:
                response = await http.post(url, json=webhook_payload(record))
                response.raise_for_status()
        except httpx.HTTPError as exc:
            # The webhook URL is a bearer secret (Slack, Teams): httpx puts it in its messages, and this
            # error lands in the workflow history. Say what failed, never where.
            status = f" (HTTP {exc.response.status_code})" if isinstance(exc, httpx.HTTPStatusError) else ""
            raise RuntimeError(f"the escalation webhook (SIGNOFF_ESCALATION_WEBHOOK) failed: "
                               f"{type(exc).__name__}{status}") from None
    # The reason names targets from alerts: one log line, whatever they hold.
    from signoff.display import clean

    activity.logger.warning("escalated case %s (%s): %s", req.case_id, req.kind, clean(req.reason))
    return str(path)
