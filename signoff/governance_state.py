"""Live governance state (autonomy per alert type, human-set thresholds, active model).

The governance workflow owns this state (workflows/governance.py); until it is running, the
policy file's values apply. This module is the one place activities read it from.
"""

from __future__ import annotations

from policies.engine import GovernanceSnapshot, Policy


async def effective_governance(policy: Policy, alert_type: str) -> GovernanceSnapshot:
    rule = policy.alert_type(alert_type)
    return GovernanceSnapshot(
        policy=policy,
        policy_version=policy.digest(),
        alert_type=alert_type if alert_type in policy.alert_types else policy.default_alert_type,
        autonomy=rule.autonomy,
        threshold=rule.threshold,
        threshold_set_by="policy file",
        model_id=None,
    )
