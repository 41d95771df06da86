"""signoff/governance_state.snapshot: the policy file overlaid with the live state, per alert type."""

from __future__ import annotations

from policies.loader import load_policy
from signoff.autonomy.models import AlertTypeState, GovernanceState
from signoff.governance_state import snapshot


def test_a_drift_case_stays_with_people_even_when_the_policy_does_not_list_its_type() -> None:
    policy = load_policy()
    drift = policy.drift.open_case_alert_type
    policy = policy.model_copy(update={"alert_types": {k: v for k, v in policy.alert_types.items() if k != drift}})
    default = policy.default_alert_type
    live = GovernanceState(revision=2, alert_types={default: AlertTypeState(
        autonomy="on_the_loop", autonomy_by="carol", threshold_set=True, threshold=0.5, threshold_by="carol")})
    assert snapshot(policy, default, live).autonomy == "on_the_loop"
    governed = snapshot(policy, drift, live)  # governed as the default type, but never automated
    assert governed.alert_type == default and governed.autonomy == "in_the_loop"
