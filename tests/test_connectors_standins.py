"""Connectors and executors against real stand-ins: slapd+ppolicy, netns+nftables, moto server (IAM)."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from temporalio.exceptions import ApplicationError

from activities.executors.aws import AwsDeactivateAccessKey
from activities.executors.ldap import LdapDisableAccount
from activities.executors.nftables import NftablesIsolateHost
from connectors.aws_iam import AwsIam, SigV4Auth
from connectors.http import NonRetryableConnectorError, Secret
from connectors.ldap_directory import PERMANENT_LOCK, LdapDirectory
from connectors.nftables_hosts import TABLE, NetnsRunner, NftablesHosts
from signoff.models import ActionTarget
from tests.standins import (  # noqa: F401
    LdapStandin,
    MotoIam,
    NetnsHosts,
    moto_iam_fixture,
    netns_hosts_fixture,
    slapd_fixture,
    tcp_reachable,
)

# ---------------------------------------------------------------- LDAP (slapd + ppolicy)


def directory(stand: LdapStandin, password: str | None = None) -> LdapDirectory:
    return LdapDirectory(stand.url, stand.admin_dn, Secret(password or stand.admin_password), stand.base_dn)


async def test_ldap_lock_makes_a_real_bind_fail_and_unlock_restores_it(slapd: LdapStandin) -> None:
    d = directory(slapd)
    alice, pw = slapd.dn("alice"), Secret(slapd.users["alice"])
    assert await d.can_bind(alice, pw)
    assert await d.lock_time("alice") is None
    await d.lock("alice")
    assert await d.lock_time("alice") == PERMANENT_LOCK
    assert not await d.can_bind(alice, pw)
    await d.unlock("alice")
    await d.unlock("alice")  # noSuchAttribute: already unlocked is success
    assert await d.can_bind(alice, pw)


async def test_ldap_executor_disables_then_restores_the_captured_state(slapd: LdapStandin) -> None:
    ex = LdapDisableAccount(directory(slapd))
    target = ActionTarget(kind="account", id="bob")
    before = await ex.capture(target)
    assert before == {"locked_time": None}
    after = await ex.apply(target, before, {}, "case-1/disable_account")
    assert after == {"locked_time": PERMANENT_LOCK}
    assert not await ex.connector.can_bind(slapd.dn("bob"), Secret(slapd.users["bob"]))
    restored = await ex.restore(target, before, "case-1/disable_account/undo")
    assert restored == {"locked_time": None}
    assert await ex.connector.can_bind(slapd.dn("bob"), Secret(slapd.users["bob"]))


async def test_ldap_restore_puts_back_an_earlier_lockout_not_the_blind_inverse(slapd: LdapStandin) -> None:
    ex = LdapDisableAccount(directory(slapd))
    target = ActionTarget(kind="account", id="carol")
    earlier = "20260101000000Z"  # a lockout ppolicy set before Signoff acted
    await ex.connector.set_lock_time("carol", earlier)
    before = await ex.capture(target)
    assert before == {"locked_time": earlier}
    await ex.apply(target, before, {}, "k")
    assert await ex.capture(target) == {"locked_time": PERMANENT_LOCK}
    await ex.restore(target, before, "k-undo")
    assert await ex.capture(target) == {"locked_time": earlier}  # still locked, as it was
    await ex.connector.unlock("carol")


async def test_ldap_wrong_service_password_is_non_retryable_and_names_the_variable(slapd: LdapStandin) -> None:
    planted = "planted-wrong-password-7f3a"
    ex = LdapDisableAccount(directory(slapd, planted))
    with pytest.raises(ApplicationError) as err:
        await ex.capture(ActionTarget(kind="account", id="alice"))
    assert err.value.non_retryable
    assert "SIGNOFF_LDAP_BIND_PASSWORD" in str(err.value)
    assert planted not in str(err.value)


async def test_ldap_unknown_account_is_non_retryable(slapd: LdapStandin) -> None:
    ex = LdapDisableAccount(directory(slapd))
    with pytest.raises(ApplicationError) as err:
        await ex.capture(ActionTarget(kind="account", id="nobody"))
    assert err.value.non_retryable and err.value.type == "NotFoundError"


async def test_ldap_executor_from_env(slapd: LdapStandin, monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in slapd.env().items():
        monkeypatch.setenv(k, v)
    assert await LdapDisableAccount().capture(ActionTarget(kind="account", id="alice")) == {"locked_time": None}


# ---------------------------------------------------------------- netns + nftables


async def test_nftables_isolation_blocks_all_but_the_management_port_then_restores(netns_hosts: NetnsHosts) -> None:
    h = netns_hosts
    hosts = NftablesHosts(NetnsRunner(names={"web-1": h.server}), mgmt_ports=(h.mgmt_port,))
    ex = NftablesIsolateHost(hosts)
    target = ActionTarget(kind="host", id="web-1")
    assert await tcp_reachable(h.client, h.server_ip, h.app_port)
    assert await tcp_reachable(h.client, h.server_ip, h.mgmt_port)

    before = await ex.capture(target)
    assert before == {"contained": False}
    assert await ex.apply(target, before, {}, "case-2/isolate_host") == {"contained": True}
    assert not await tcp_reachable(h.client, h.server_ip, h.app_port)
    assert await tcp_reachable(h.client, h.server_ip, h.mgmt_port)

    # idempotent: applying again leaves exactly one table with the same rules
    await hosts.contain("web-1")
    listing = await hosts.runner.run("web-1", ["nft", "list", "ruleset"])
    assert listing.stdout.count(f"table inet {TABLE}") == 1

    assert await ex.restore(target, before, "case-2/isolate_host/undo") == {"contained": False}
    assert await tcp_reachable(h.client, h.server_ip, h.app_port)
    await hosts.release("web-1")  # already released: success


async def test_nftables_restore_keeps_a_host_that_was_already_contained(netns_hosts: NetnsHosts) -> None:
    h = netns_hosts
    hosts = NftablesHosts(NetnsRunner(), mgmt_ports=(h.mgmt_port,))
    ex = NftablesIsolateHost(hosts)
    target = ActionTarget(kind="host", id=h.server)
    await hosts.contain(h.server)  # contained by someone else before the case
    try:
        before = await ex.capture(target)
        assert before == {"contained": True}
        await ex.apply(target, before, {}, "k")
        await ex.restore(target, before, "k-undo")
        assert await hosts.is_contained(h.server)
        assert not await tcp_reachable(h.client, h.server_ip, h.app_port)
    finally:
        await hosts.release(h.server)
    assert await tcp_reachable(h.client, h.server_ip, h.app_port)


async def test_nftables_unknown_host_is_non_retryable() -> None:
    ex = NftablesIsolateHost(NftablesHosts(NetnsRunner(), mgmt_ports=(22,)))
    with pytest.raises(ApplicationError) as err:
        await ex.capture(ActionTarget(kind="host", id="no-such-namespace-xyz"))
    assert err.value.non_retryable and "SIGNOFF_NFTABLES_HOSTS" in str(err.value)


# ---------------------------------------------------------------- moto server (IAM, SigV4)


class Counting(httpx.AsyncBaseTransport):
    """A real HTTP transport that records the IAM actions sent through it."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.actions: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        form = dict(httpx.QueryParams(request.content.decode()))
        self.actions.append(form.get("Action", "?"))
        return await self.inner.handle_async_request(request)


def iam(stand: MotoIam, transport: httpx.AsyncBaseTransport | None = None, secret: str | None = None) -> AwsIam:
    auth = SigV4Auth(Secret(stand.access_key_id), Secret(secret or stand.secret_access_key), "us-east-1", "iam")
    return AwsIam(stand.endpoint, auth, transport=transport)


async def test_aws_deactivate_then_restore_access_key(moto_iam: MotoIam) -> None:
    import boto3

    counting = Counting()
    ex = AwsDeactivateAccessKey(iam(moto_iam, counting))
    key = moto_iam.target_keys[0]
    target = ActionTarget(kind="access_key", id=key)
    before = await ex.capture(target)
    assert before == {"status": "Active", "user": "mallory"}
    after = await ex.apply(target, before, {}, "case-3/deactivate_access_key")
    assert after["status"] == "Inactive"
    # read back through a different client (boto3) with the same signed identity
    check = boto3.client("iam", endpoint_url=moto_iam.endpoint, region_name="us-east-1",
                         aws_access_key_id=moto_iam.access_key_id, aws_secret_access_key=moto_iam.secret_access_key)
    statuses = {k["AccessKeyId"]: k["Status"] for k in check.list_access_keys(UserName="mallory")["AccessKeyMetadata"]}
    assert statuses[key] == "Inactive"
    assert counting.actions.count("UpdateAccessKey") == 1
    restored = await ex.restore(target, before, "case-3/deactivate_access_key/undo")
    assert restored["status"] == "Active"
    assert counting.actions.count("UpdateAccessKey") == 2


async def test_aws_key_already_inactive_is_success_without_a_write_and_stays_inactive(moto_iam: MotoIam) -> None:
    counting = Counting()
    ex = AwsDeactivateAccessKey(iam(moto_iam, counting))
    target = ActionTarget(kind="access_key", id=f"mallory:{moto_iam.target_keys[1]}")
    before = await ex.capture(target)
    assert before["status"] == "Inactive"
    await ex.apply(target, before, {}, "k")
    await ex.restore(target, before, "k-undo")
    assert "UpdateAccessKey" not in counting.actions
    assert (await ex.capture(target))["status"] == "Inactive"


async def test_aws_bad_signature_is_non_retryable_with_a_hint(moto_iam: MotoIam) -> None:
    planted = "planted-aws-secret-91b2c3"
    client = iam(moto_iam, secret=planted)
    with pytest.raises(NonRetryableConnectorError) as err:
        await client.list_access_keys("mallory")
    assert "SignatureDoesNotMatch" in str(err.value) and "SIGNOFF_AWS_SECRET_ACCESS_KEY" in str(err.value)
    assert planted not in str(err.value)


async def test_aws_executor_from_env(moto_iam: MotoIam, monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in moto_iam.env().items():
        monkeypatch.setenv(k, v)
    state = await AwsDeactivateAccessKey().capture(ActionTarget(kind="access_key", id=moto_iam.target_keys[0]))
    assert state["user"] == "mallory"


async def test_aws_unknown_key_is_non_retryable(moto_iam: MotoIam) -> None:
    ex = AwsDeactivateAccessKey(iam(moto_iam))
    with pytest.raises(ApplicationError) as err:
        await ex.capture(ActionTarget(kind="access_key", id="mallory:AKIANOSUCHKEY0000000"))
    assert err.value.non_retryable


def test_asyncio_subprocess_is_used_by_the_runner() -> None:
    # the host runner is a coroutine: nothing in the connector blocks the event loop
    assert asyncio.iscoroutinefunction(NetnsRunner().run)
