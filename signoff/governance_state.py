"""Live governance state (autonomy per alert type, human-set thresholds, active model).

The governance workflow owns this state (workflows/governance.py); until it is running, the
policy file's values apply. This module is the one place activities read it from.

The policy version a case records covers both: the policy file's digest alone while no governance
workflow exists, else sha256 of (policy digest, governance revision and live state). The live state is
read from the governance workflow's memo (DescribeWorkflowExecution: the server answers, no worker
needed, so a busy task queue never delays it) and cached for `SIGNOFF_GOVERNANCE_CACHE_S` seconds
(default 1) per worker process. The re-read right before an automatic close bypasses the cache,
so a kill switch is respected by every later automatic close.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from typing import Any

from policies.engine import GovernanceSnapshot, Policy
from signoff.autonomy.models import GovernanceState
from signoff.models import PlaybookRecord

_cache: dict[str, tuple[float, GovernanceState | None]] = {}


def review_sampled(case_id: str, rate: float) -> bool:
    """Deterministic review sample: the case id's sha256 as a number in [0, 1) below the rate."""
    if rate <= 0.0 or not case_id:
        return False
    fraction = int(hashlib.sha256(case_id.encode()).hexdigest()[:12], 16) / float(1 << 48)
    return fraction < rate


def versioned(policy: Policy, live: GovernanceState | None) -> str:
    if live is None or live.revision == 0:
        return policy.digest()
    state = {
        "policy": policy.digest(),
        "revision": live.revision,
        "alert_types": {k: v.model_dump(mode="json") for k, v in sorted(live.alert_types.items())},
        "model": live.model.model_dump(mode="json"),
    }
    return hashlib.sha256(json.dumps(state, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def snapshot(policy: Policy, alert_type: str, live: GovernanceState | None, case_id: str = "") -> GovernanceSnapshot:
    """Pure: the policy file overlaid with the live state, for one alert type (and case)."""
    name = alert_type if alert_type in policy.alert_types else policy.default_alert_type
    rule = policy.alert_type(name)
    autonomy, autonomy_by = rule.autonomy, "policy file"
    threshold, threshold_by = rule.threshold, "policy file"
    model_id = candidate = None
    state = live.alert_types.get(name) if live else None
    if state is not None:
        if state.autonomy is not None:
            autonomy, autonomy_by = state.autonomy, state.autonomy_by
        if state.threshold_set:
            threshold, threshold_by = state.threshold, state.threshold_by
    if live is not None:
        model_id, candidate = live.model.active, live.model.candidate
    if policy.drift.open_case_alert_type in (alert_type, name):
        # drift cases are for people, always: also when the policy does not list their type and
        # they would otherwise be governed as the default type
        autonomy = "in_the_loop"
    return GovernanceSnapshot(
        policy=policy,
        policy_version=versioned(policy, live),
        alert_type=name,
        autonomy=autonomy,
        threshold=threshold,
        threshold_set_by=threshold_by,
        model_id=model_id,
        autonomy_set_by=autonomy_by,
        governance_revision=live.revision if live else 0,
        candidate_model_id=candidate,
        review_sampled=autonomy == "on_the_loop" and review_sampled(case_id, policy.review_sample_rate),
        playbook=_recorded_playbook(rule.playbook),
    )


def _recorded_playbook(name: str) -> PlaybookRecord | None:
    from playbooks import PLAYBOOKS

    playbook = PLAYBOOKS.get(name)
    return playbook.record() if playbook is not None else None


async def read_live_cached(client: Any, task_queue: str, fresh: bool = False) -> GovernanceState | None:
    from signoff.autonomy.client import read_live

    ttl = 0.0 if fresh else float(os.environ.get("SIGNOFF_GOVERNANCE_CACHE_S", "1"))
    now = time.monotonic()
    hit = _cache.get(task_queue)
    if hit is not None and now - hit[0] < ttl:
        return hit[1]
    live = await read_live(client, task_queue)
    _cache[task_queue] = (now, live)
    return live


async def effective_governance(policy: Policy, alert_type: str, case_id: str = "",
                               fresh: bool = False) -> GovernanceSnapshot:
    """Inside an activity: read the governance workflow of this worker's task queue; outside, the file.

    `fresh`: no cache (the re-read right before an automatic close, so a kill switch is never missed)."""
    from temporalio import activity

    live = None
    if activity.in_activity():
        live = await read_live_cached(activity.client(), activity.info().task_queue, fresh)
    return snapshot(policy, alert_type, live, case_id)
