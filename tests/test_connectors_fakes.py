"""Vendor clients and executors against the stateful fakes of their documented contracts.

For each EDR/IAM vendor: the action goes through the vendor's pending states and is verified by
polling; "already in state" is success without a second call; 429 + Retry-After is honoured; a
rejected credential is non-retryable and says which variable to check; restore puts back the
captured state (not the blind inverse).
"""

from __future__ import annotations

import time

import httpx
import pytest
from temporalio.exceptions import ApplicationError

from activities.executors.base import ActionNotConfirmed
from activities.executors.edr import CrowdStrikeIsolateHost, DefenderIsolateHost, SentinelOneIsolateHost
from activities.executors.identity import (
    GraphDisableAccount,
    GraphRevokeSessions,
    OktaDisableAccount,
    OktaRevokeSessions,
)
from connectors.crowdstrike import CrowdStrike
from connectors.defender import Defender
from connectors.fakes.crowdstrike import FakeCrowdStrike
from connectors.fakes.defender import FakeDefender
from connectors.fakes.graph import FakeGraph
from connectors.fakes.okta import FakeOkta
from connectors.fakes.sentinelone import FakeSentinelOne
from connectors.graph import Graph
from connectors.http import NonRetryableConnectorError, RetryableConnectorError, RetryPolicy, Secret
from connectors.okta import Okta
from connectors.sentinelone import SentinelOne
from signoff.models import ActionTarget

HOST = "0123456789abcdef0123456789abcdef"


class Sleeps:
    """Records the waits a client asks for instead of sleeping (no timed assertions)."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def falcon(fake: FakeCrowdStrike, sleep: Sleeps | None = None, secret: str | None = None, **kw: object) -> CrowdStrike:
    return CrowdStrike("https://api.crowdstrike.com", fake.client_id, Secret(secret or fake.client_secret),
                       transport=fake.transport(), sleep=sleep or Sleeps(), **kw)


def mde(fake: FakeDefender) -> Defender:
    return Defender("https://api.securitycenter.microsoft.com",
                    "https://login.microsoftonline.com/tenant-1/oauth2/v2.0/token",
                    fake.client_id, Secret(fake.client_secret), transport=fake.transport(), sleep=Sleeps())


def s1(fake: FakeSentinelOne, token: str | None = None) -> SentinelOne:
    return SentinelOne("https://usea1.sentinelone.net", Secret(token or fake.token), transport=fake.transport(),
                       sleep=Sleeps())


def okta(fake: FakeOkta, token: str | None = None, sleep: Sleeps | None = None) -> Okta:
    return Okta("https://example.okta.com", Secret(token or fake.token), transport=fake.transport(),
                sleep=sleep or Sleeps())


def graph(fake: FakeGraph) -> Graph:
    return Graph("https://graph.microsoft.com", "https://login.microsoftonline.com/t/oauth2/v2.0/token",
                 fake.client_id, Secret(fake.client_secret), transport=fake.transport(), sleep=Sleeps())


# ---------------------------------------------------------------- CrowdStrike


async def test_crowdstrike_contain_goes_pending_then_is_verified() -> None:
    fake = FakeCrowdStrike(pending_reads=3)
    fake.add_host(HOST)
    ex = CrowdStrikeIsolateHost(falcon(fake), verify_interval=0)
    target = ActionTarget(kind="host", id=HOST)
    before = await ex.capture(target)
    assert before == {"network": "normal"}
    after = await ex.apply(target, before, {}, "case/isolate")
    assert after == {"network": "contained"}
    assert fake.hosts[HOST] == "contained"
    assert fake.count("POST", "devices-actions") == 1
    # the pending state was seen and waited out, not taken for success
    assert fake.count("GET", "/devices/entities/devices/v2") >= 1 + 3 + 1


async def test_crowdstrike_already_contained_is_success_without_a_second_call() -> None:
    fake = FakeCrowdStrike()
    fake.add_host(HOST, "contained")
    ex = CrowdStrikeIsolateHost(falcon(fake), verify_interval=0)
    target = ActionTarget(kind="host", id=HOST)
    before = await ex.capture(target)
    await ex.apply(target, before, {}, "k")
    await ex.restore(target, before, "k-undo")  # it was contained before: it stays contained
    assert fake.count("POST", "devices-actions") == 0
    assert fake.hosts[HOST] == "contained"


async def test_crowdstrike_restore_lifts_containment_back_to_the_captured_state() -> None:
    fake = FakeCrowdStrike()
    fake.add_host(HOST)
    ex = CrowdStrikeIsolateHost(falcon(fake), verify_interval=0)
    target = ActionTarget(kind="host", id=HOST)
    before = await ex.capture(target)
    await ex.apply(target, before, {}, "k")
    assert await ex.restore(target, before, "k-undo") == {"network": "normal"}
    assert fake.hosts[HOST] == "normal"
    assert [c.params.get("action_name") for c in fake.calls if "devices-actions" in c.path] == [
        "contain", "lift_containment"]


async def test_crowdstrike_restore_of_a_pending_capture_keeps_the_host_contained() -> None:
    fake = FakeCrowdStrike(pending_reads=5)
    fake.add_host(HOST, "containment_pending")
    ex = CrowdStrikeIsolateHost(falcon(fake), verify_interval=0)
    target = ActionTarget(kind="host", id=HOST)
    before = await ex.capture(target)
    assert before == {"network": "containing"}
    assert await ex.restore(target, before, "k-undo") == {"network": "contained"}


async def test_crowdstrike_429_retry_after_is_honoured() -> None:
    fake = FakeCrowdStrike()
    fake.add_host(HOST)
    sleeps = Sleeps()
    client = falcon(fake, sleeps)
    fake.fail_next(429, headers={"Retry-After": "7"})
    fake.fail_next(429, headers={"X-RateLimit-RetryAfter": str(int(time.time()) + 1000)})
    client.retry = RetryPolicy(max_wait=2000)
    assert await client.status(HOST) == "normal"
    assert sleeps.waits[0] == 7.0
    assert 900 < sleeps.waits[1] <= 1000


async def test_crowdstrike_long_retry_after_becomes_a_retryable_activity_error_with_the_delay() -> None:
    fake = FakeCrowdStrike()
    fake.add_host(HOST)
    ex = CrowdStrikeIsolateHost(falcon(fake), verify_interval=0)
    fake.fail_next(429, headers={"Retry-After": "120"})
    with pytest.raises(ApplicationError) as err:
        await ex.capture(ActionTarget(kind="host", id=HOST))
    assert not err.value.non_retryable
    assert err.value.next_retry_delay is not None and err.value.next_retry_delay.total_seconds() == 120


async def test_crowdstrike_rejected_credentials_are_non_retryable_and_name_the_variables() -> None:
    fake = FakeCrowdStrike()
    fake.add_host(HOST)
    planted = "planted-falcon-secret-0042"
    with pytest.raises(NonRetryableConnectorError) as err:
        await falcon(fake, secret=planted).status(HOST)
    assert "SIGNOFF_CROWDSTRIKE_CLIENT_SECRET" in str(err.value)
    assert planted not in str(err.value)
    # a token the API rejects: one refresh, then a non-retryable 401 naming the variables
    fake.fail_next(401, times=2)
    ex = CrowdStrikeIsolateHost(falcon(fake), verify_interval=0)
    with pytest.raises(ApplicationError) as app_err:
        await ex.capture(ActionTarget(kind="host", id=HOST))
    assert app_err.value.non_retryable and "SIGNOFF_CROWDSTRIKE_CLIENT_ID" in str(app_err.value)
    assert fake.tokens_issued == 2  # the first token, then one refresh after the first 401


async def test_crowdstrike_token_is_cached_across_calls() -> None:
    fake = FakeCrowdStrike()
    fake.add_host(HOST)
    client = falcon(fake)
    for _ in range(3):
        await client.status(HOST)
    assert fake.tokens_issued == 1


async def test_crowdstrike_5xx_is_retried_then_retryable() -> None:
    fake = FakeCrowdStrike()
    fake.add_host(HOST)
    client = falcon(fake)
    fake.fail_next(503, times=10)
    with pytest.raises(RetryableConnectorError):
        await client.status(HOST)
    assert fake.count("GET", "/devices/entities/devices/v2") == client.retry.attempts


async def test_crowdstrike_bad_device_id_never_reaches_the_vendor() -> None:
    fake = FakeCrowdStrike()
    ex = CrowdStrikeIsolateHost(falcon(fake), verify_interval=0)
    with pytest.raises(ApplicationError) as err:
        await ex.capture(ActionTarget(kind="host", id="web-1"))
    assert err.value.non_retryable and fake.calls == []


async def test_crowdstrike_unconfirmed_containment_is_retryable_not_success() -> None:
    fake = FakeCrowdStrike(pending_reads=1000)
    fake.add_host(HOST)
    ex = CrowdStrikeIsolateHost(falcon(fake), verify_interval=0)
    ex.verify_attempts = 3
    target = ActionTarget(kind="host", id=HOST)
    with pytest.raises(ActionNotConfirmed):
        await ex.apply(target, await ex.capture(target), {}, "k")


# ---------------------------------------------------------------- Defender for Endpoint


async def test_defender_isolate_is_polled_through_machine_actions_and_restored() -> None:
    fake = FakeDefender(pending_reads=2)
    fake.add_machine("m-1")
    ex = DefenderIsolateHost(mde(fake), verify_interval=0)
    target = ActionTarget(kind="host", id="m-1")
    before = await ex.capture(target)
    assert before == {"network": "normal"}
    assert await ex.apply(target, before, {"isolation_type": "Selective"}, "case-9/isolate") == {
        "network": "contained", "scope": "Selective"}
    statuses = [a["status"] for a in fake.actions.values()]
    assert statuses == ["Succeeded"]
    assert "case-9/isolate" in next(iter(fake.actions.values()))["requestorComment"]
    assert await ex.restore(target, before, "case-9/isolate/undo") == {"network": "normal"}


async def test_defender_selective_isolation_from_before_is_restored_selective() -> None:
    fake = FakeDefender()
    fake.add_machine("m-2", isolated="Selective")
    ex = DefenderIsolateHost(mde(fake), verify_interval=0)
    target = ActionTarget(kind="host", id="m-2")
    before = await ex.capture(target)
    assert before == {"network": "contained", "scope": "Selective"}
    await ex.apply(target, before, {}, "k")  # already isolated: no new action
    assert fake.count("POST", "/isolate") == 0
    # someone releases it meanwhile; the rollback restores what was captured: Selective isolation
    await ex.connector.unisolate("m-2", "manual")
    await ex.verify(target, {"network": "normal"})
    assert await ex.restore(target, before, "k-undo") == {"network": "contained", "scope": "Selective"}


async def test_defender_failed_action_is_not_success() -> None:
    fake = FakeDefender(pending_reads=1, outcome="Failed")
    fake.add_machine("m-3")
    ex = DefenderIsolateHost(mde(fake), verify_interval=0)
    ex.verify_attempts = 5
    target = ActionTarget(kind="host", id="m-3")
    with pytest.raises(ActionNotConfirmed):
        await ex.apply(target, await ex.capture(target), {}, "k")


async def test_defender_pending_action_is_followed_not_duplicated() -> None:
    fake = FakeDefender(pending_reads=4)
    fake.add_machine("m-4")
    client = mde(fake)
    await client.isolate("m-4", "first try")
    ex = DefenderIsolateHost(client, verify_interval=0)
    target = ActionTarget(kind="host", id="m-4")
    before = await ex.capture(target)
    assert before["network"] == "containing"
    await ex.apply(target, before, {}, "retry")  # 400 ActiveRequestAlreadyExists → follow the pending one
    assert len(fake.actions) == 1


async def test_defender_unknown_machine_is_non_retryable() -> None:
    fake = FakeDefender()
    ex = DefenderIsolateHost(mde(fake), verify_interval=0)
    with pytest.raises(ApplicationError) as err:
        await ex.capture(ActionTarget(kind="host", id="nope"))
    assert err.value.non_retryable and err.value.type == "NotFoundError"


# ---------------------------------------------------------------- SentinelOne


async def test_sentinelone_disconnect_is_verified_and_reconnect_restores() -> None:
    fake = FakeSentinelOne(pending_reads=2)
    fake.add_agent("1001")
    ex = SentinelOneIsolateHost(s1(fake), verify_interval=0)
    target = ActionTarget(kind="host", id="1001")
    before = await ex.capture(target)
    assert await ex.apply(target, before, {}, "k") == {"network": "contained"}
    assert fake.agents["1001"] == "disconnected"
    assert await ex.restore(target, before, "k-undo") == {"network": "normal"}
    assert fake.agents["1001"] == "connected"
    bodies = [c.body for c in fake.calls if c.method == "POST"]
    assert all(b == {"filter": {"ids": ["1001"]}} for b in bodies)  # explicit ids, never a bulk filter


async def test_sentinelone_already_disconnected_no_call_and_bad_token_is_helpful() -> None:
    fake = FakeSentinelOne()
    fake.add_agent("1002", "disconnected")
    ex = SentinelOneIsolateHost(s1(fake), verify_interval=0)
    target = ActionTarget(kind="host", id="1002")
    await ex.apply(target, await ex.capture(target), {}, "k")
    assert fake.count("POST", "/actions/") == 0
    with pytest.raises(NonRetryableConnectorError) as err:
        await s1(fake, token="planted-s1-token-55").network_status("1002")
    assert "SIGNOFF_SENTINELONE_API_TOKEN" in str(err.value) and "planted-s1-token-55" not in str(err.value)


async def test_sentinelone_unknown_agent_is_not_found() -> None:
    fake = FakeSentinelOne()
    ex = SentinelOneIsolateHost(s1(fake), verify_interval=0)
    with pytest.raises(ApplicationError) as err:
        await ex.capture(ActionTarget(kind="host", id="404"))
    assert err.value.non_retryable


# ---------------------------------------------------------------- Okta


async def test_okta_suspend_then_unsuspend_restores_active() -> None:
    fake = FakeOkta()
    fake.add_user("00u1")
    ex = OktaDisableAccount(okta(fake), verify_interval=0)
    target = ActionTarget(kind="account", id="00u1")
    before = await ex.capture(target)
    assert await ex.apply(target, before, {}, "k") == {"status": "SUSPENDED"}
    assert await ex.restore(target, before, "k-undo") == {"status": "ACTIVE"}


async def test_okta_already_suspended_is_success_and_stays_suspended() -> None:
    fake = FakeOkta()
    fake.add_user("00u2", status="SUSPENDED")
    ex = OktaDisableAccount(okta(fake), verify_interval=0)
    target = ActionTarget(kind="account", id="00u2")
    before = await ex.capture(target)
    await ex.apply(target, before, {}, "k")
    await ex.restore(target, before, "k-undo")
    assert fake.count("POST", "/lifecycle/") == 0
    assert fake.users["00u2"]["status"] == "SUSPENDED"


async def test_okta_user_okta_cannot_suspend_is_refused_with_a_reason() -> None:
    fake = FakeOkta()
    fake.add_user("00u3", status="PASSWORD_EXPIRED")
    ex = OktaDisableAccount(okta(fake), verify_interval=0)
    target = ActionTarget(kind="account", id="00u3")
    with pytest.raises(ApplicationError) as err:
        await ex.apply(target, await ex.capture(target), {}, "k")
    assert err.value.non_retryable and "ACTIVE" in str(err.value)


async def test_okta_429_reset_header_honoured_and_401_helpful() -> None:
    fake = FakeOkta()
    fake.add_user("00u4")
    sleeps = Sleeps()
    client = okta(fake, sleep=sleeps)
    fake.fail_next(429, headers={"X-Rate-Limit-Reset": str(int(time.time()) + 5)})
    assert await client.status("00u4") == "ACTIVE"
    assert 3 <= sleeps.waits[0] <= 5
    with pytest.raises(NonRetryableConnectorError) as err:
        await okta(fake, token="planted-okta-token").status("00u4")
    assert "Invalid token provided" in str(err.value) and "SIGNOFF_OKTA_API_TOKEN" in str(err.value)
    assert "planted-okta-token" not in str(err.value)


async def test_okta_revoke_sessions_is_confirmed_by_the_system_log_and_is_irreversible() -> None:
    fake = FakeOkta(log_lag_reads=2)
    fake.add_user("00u5")
    ex = OktaRevokeSessions(okta(fake), verify_interval=0)
    target = ActionTarget(kind="account", id="00u5")
    before = await ex.capture(target)
    assert before == {"sessions_cleared_at": None}
    after = await ex.apply(target, before, {}, "k")
    assert after["sessions_cleared_at"] is not None and after["revoked"] is True
    assert fake.sessions["00u5"] == 0
    await ex.apply(target, before, {}, "k")  # a retried activity: the log shows it happened, no 2nd call
    assert fake.count("DELETE", "/sessions") == 1
    with pytest.raises(ApplicationError) as err:
        await ex.restore(target, before, "k-undo")
    assert err.value.non_retryable and err.value.type == "Irreversible"


# ---------------------------------------------------------------- Graph


async def test_graph_disable_waits_for_replication_and_restore_reenables() -> None:
    fake = FakeGraph(replication_reads=2)
    fake.add_user("u@example.com")
    ex = GraphDisableAccount(graph(fake), verify_interval=0)
    target = ActionTarget(kind="account", id="u@example.com")
    before = await ex.capture(target)
    assert await ex.apply(target, before, {}, "k") == {"account_enabled": False}
    assert await ex.restore(target, before, "k-undo") == {"account_enabled": True}
    assert fake.count("PATCH", "/users/") == 2


async def test_graph_disabled_before_stays_disabled_after_rollback() -> None:
    fake = FakeGraph()
    fake.add_user("d@example.com", enabled=False)
    ex = GraphDisableAccount(graph(fake), verify_interval=0)
    target = ActionTarget(kind="account", id="d@example.com")
    before = await ex.capture(target)
    await ex.apply(target, before, {}, "k")
    await ex.restore(target, before, "k-undo")
    assert fake.count("PATCH", "/users/") == 0 and fake.users["d@example.com"]["accountEnabled"] is False


async def test_graph_revoke_sessions_moves_the_validity_time_and_cannot_be_undone() -> None:
    fake = FakeGraph(replication_reads=1)
    fake.add_user("r@example.com")
    ex = GraphRevokeSessions(graph(fake), verify_interval=0)
    target = ActionTarget(kind="account", id="r@example.com")
    before = await ex.capture(target)
    after = await ex.apply(target, before, {}, "k")
    assert after["sessions_valid_from"] > before["sessions_valid_from"]
    with pytest.raises(ApplicationError):
        await ex.restore(target, before, "k-undo")


async def test_graph_wrong_client_secret_is_non_retryable() -> None:
    fake = FakeGraph()
    client = Graph("https://graph.microsoft.com", "https://login.microsoftonline.com/t/oauth2/v2.0/token",
                   fake.client_id, Secret("planted-graph-secret"), transport=fake.transport())
    with pytest.raises(NonRetryableConnectorError) as err:
        await client.user("x")
    assert "SIGNOFF_GRAPH_CLIENT_SECRET" in str(err.value) and "planted-graph-secret" not in str(err.value)


async def test_transport_errors_are_retryable_with_a_hint() -> None:
    def broken(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    client = Okta("https://example.okta.com", Secret("t"), transport=httpx.MockTransport(broken), sleep=Sleeps())
    with pytest.raises(RetryableConnectorError) as err:
        await client.status("x")
    assert "network path" in str(err.value)


# ---------------------------------------------------------------- registry and configuration


@pytest.mark.parametrize(
    ("action", "backend", "variable"),
    [
        ("isolate_host", "crowdstrike", "SIGNOFF_CROWDSTRIKE_CLIENT_ID"),
        ("isolate_host", "defender", "SIGNOFF_DEFENDER_TENANT_ID"),
        ("isolate_host", "sentinelone", "SIGNOFF_SENTINELONE_BASE_URL"),
        ("disable_account", "okta", "SIGNOFF_OKTA_ORG_URL"),
        ("disable_account", "graph", "SIGNOFF_GRAPH_TENANT_ID"),
        ("disable_account", "ldap", "SIGNOFF_LDAP_URL"),
        ("revoke_sessions", "graph", "SIGNOFF_GRAPH_TENANT_ID"),
        ("revoke_sessions", "okta", "SIGNOFF_OKTA_ORG_URL"),
        ("deactivate_access_key", "aws", "SIGNOFF_AWS_ACCESS_KEY_ID"),
    ],
)
async def test_builtin_executors_load_without_credentials_and_say_what_is_missing(
    action: str, backend: str, variable: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    from activities.executors import executor_for, reset_cache

    for name in list(os.environ):
        if name.startswith("SIGNOFF_") and name not in ("SIGNOFF_HOME", "SIGNOFF_POLICY"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("SIGNOFF_BACKENDS", f"{action}={backend}")
    reset_cache()
    try:
        executor = executor_for(action)  # registered and built with no vendor configured
        with pytest.raises(ApplicationError) as err:
            await executor.capture(ActionTarget(kind="x", id=HOST))
        assert err.value.non_retryable and variable in str(err.value)
    finally:
        reset_cache()
