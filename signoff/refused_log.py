"""Refused updates leave no trace in Temporal (a validator's refusal is never written to history),
so whoever sent one (the CLI, the chat bridge) records it in `audit/refused.jsonl` under the state
directory. `signoff explain` and the audit export read it back. The token is never kept."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from signoff import settings


def record_refusal(kind: str, case_id: str, payload: dict[str, Any], reason: str) -> None:
    """Append one refused `kind` ("approve", "reject", "rollback", "close") of `case_id`."""
    folder = settings.home() / "audit"
    folder.mkdir(parents=True, exist_ok=True)
    record = {"at": datetime.now(UTC).isoformat(), "kind": f"refused_{kind}", "case_id": case_id,
              **{k: v for k, v in payload.items() if k != "token"}, "signed": bool(payload.get("token")),
              "refusal": reason}
    with (folder / "refused.jsonl").open("a") as fh:
        fh.write(json.dumps(record, sort_keys=True) + "\n")


def record_governance_refusal(kind: str, workflow_id: str, payload: dict[str, Any], reason: str) -> None:
    """Append one governance change ("set_threshold", "set_autonomy", "promote_model", ...) that the
    governance workflow `workflow_id` refused in its validator (a missing or bad token): such a refusal
    is never written to its history. Filed under the workflow's id, like a case's refusals."""
    record_refusal(kind, workflow_id, {**payload, "governance": True}, reason)
