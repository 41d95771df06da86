"""Who may decide a case as a whole (close it, retry a failed attempt, detach an alert). Part of CaseWorkflow.

The approving tiers' roles (`policies.engine.close_roles`), unless the case's alert type names its
own `close_roles` in the policy (the drift check's `model_drift` cases are for detection engineers).
No patch: the policy recorded in the case's history decides, and a policy from before
`close_roles` existed has none, so such a case decides as it did.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from policies.engine import close_roles

if TYPE_CHECKING:
    from policies.engine import GovernanceSnapshot


def decider_roles(gov: GovernanceSnapshot, *, in_handler: bool = False) -> tuple[str, ...]:
    """The roles that may decide this case (`in_handler` is kept for the callers: validators and handlers
    answer alike)."""
    return close_roles(gov.policy, gov.alert_type)
