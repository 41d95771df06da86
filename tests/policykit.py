"""Policy versions in tests: fields added to the policy after the first version hash only when
set, so a policy file that does not use them keeps the version its cases recorded."""

from __future__ import annotations

import hashlib
import json
from typing import Any


def digest_as_before(dumped: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of `dumped` (a `Policy.model_dump(mode="json")`) with every
    later-added field that is at its default left out, as the policy was hashed before it existed."""
    dumped = json.loads(json.dumps(dumped))
    deployment = dumped["deployment"]
    if not deployment.get("chat_bridges"):
        deployment.pop("chat_bridges", None)
    if not deployment.get("ingest_keys"):
        deployment.pop("ingest_keys", None)
    if not deployment.get("require_signed_ingest"):
        deployment.pop("require_signed_ingest", None)
    for bridge in deployment.get("chat_bridges", {}).values():
        if bridge.get("team_id") is None:
            bridge.pop("team_id", None)
    for entry in dumped["approvers"].values():
        if entry.get("slack_user") is None:
            entry.pop("slack_user", None)
    if dumped.get("rollback_quorum") == 1:
        dumped.pop("rollback_quorum")
    if dumped.get("rollback_window") is None:
        dumped.pop("rollback_window", None)
    if not dumped.get("verdict_sla"):
        dumped.pop("verdict_sla", None)
    for rule in dumped["alert_types"].values():
        if rule.get("scored") is True:
            rule.pop("scored")
        if rule.get("close_roles") is None:
            rule.pop("close_roles", None)
    for tier in dumped["tiers"].values():
        if not tier.get("escalation"):
            tier.pop("escalation", None)
    return hashlib.sha256(json.dumps(dumped, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
