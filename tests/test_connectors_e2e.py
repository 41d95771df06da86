"""End to end: a case workflow on the real Temporal test server acts on real stand-ins.

SIGNOFF_BACKENDS points isolate_host at nftables (network namespaces), disable_account at the
OpenLDAP directory, deactivate_access_key at moto's IAM. The test approves the gated steps, checks
the effect on each stand-in (traffic blocked except the management port, a real bind refused, the
key Inactive), rolls the case back and checks that each stand-in is back to its captured state.
"""

from __future__ import annotations

from collections.abc import Iterator

import boto3
import pytest
from temporalio.testing import WorkflowEnvironment

from activities.executors import reset_cache
from connectors.http import Secret
from connectors.ldap_directory import LdapDirectory
from connectors.nftables_hosts import NetnsRunner, NftablesHosts
from signoff.models import ApprovalRequest, CaseStatus, RollbackRequest, StepState
from signoff.worker import build_worker
from tests.casekit import alert, awaiting, case_input, start_case, step, wait_for
from tests.standins import (  # noqa: F401
    LdapStandin,
    MotoIam,
    NetnsHosts,
    moto_iam_fixture,
    netns_hosts_fixture,
    slapd_fixture,
    tcp_reachable,
)
from workflows.case import CaseWorkflow


@pytest.fixture
def standin_backends(
    monkeypatch: pytest.MonkeyPatch, slapd: LdapStandin, netns_hosts: NetnsHosts, moto_iam: MotoIam
) -> Iterator[None]:
    env = {
        "SIGNOFF_BACKENDS": "isolate_host=nftables,disable_account=ldap,deactivate_access_key=aws",
        "SIGNOFF_NFTABLES_HOSTS": f"web-7={netns_hosts.server}",
        "SIGNOFF_NFTABLES_MGMT_PORTS": str(netns_hosts.mgmt_port),
        **slapd.env(),
        **moto_iam.env(),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    reset_cache()
    yield
    reset_cache()


def approve(step_id: str, who: str = "bob") -> ApprovalRequest:
    return ApprovalRequest(step=step_id, approver=who, reason="confirmed on the stand-in")


async def test_malware_case_isolates_a_namespace_host_and_locks_an_ldap_account_then_rolls_back(
    time_env: WorkflowEnvironment, task_queue: str, standin_backends: None,
    slapd: LdapStandin, netns_hosts: NetnsHosts,
) -> None:
    h = netns_hosts
    directory = LdapDirectory(slapd.url, slapd.admin_dn, Secret(slapd.admin_password), slapd.base_dn)
    alice = (slapd.dn("alice"), Secret(slapd.users["alice"]))
    assert await directory.can_bind(*alice)
    assert await tcp_reachable(h.client, h.server_ip, h.app_port)

    client = time_env.client
    async with build_worker(client, task_queue):
        inp = case_input(alert_type="malware")
        handle = await start_case(client, task_queue, inp,
                                  alert("m1", ("host", "web-7"), ("account", "alice"), category="Malware"))
        await wait_for(handle, awaiting("isolate_host"), "isolate_host waiting")
        assert await tcp_reachable(h.client, h.server_ip, h.app_port)  # nothing happens before sign-off

        await handle.execute_update(CaseWorkflow.approve, approve("isolate_host"))
        # Approved, isolate_host first re-reads who may approve (an activity), then runs; disable_account waits.
        await wait_for(handle, lambda v: step(v, "isolate_host").state == StepState.executed
                       and awaiting("disable_account")(v), "isolated, disable_account waiting", attempts=600)
        assert not await tcp_reachable(h.client, h.server_ip, h.app_port)
        assert await tcp_reachable(h.client, h.server_ip, h.mgmt_port)

        await handle.execute_update(CaseWorkflow.approve, approve("disable_account"))
        view = await wait_for(handle, lambda v: v.status == CaseStatus.contained, "contained", attempts=600)
        assert not await directory.can_bind(*alice)
        assert step(view, "isolate_host").result.before == {"contained": False}  # type: ignore[union-attr]
        assert step(view, "disable_account").result.before == {"locked_time": None}  # type: ignore[union-attr]

        await handle.execute_update(CaseWorkflow.rollback, RollbackRequest(requested_by="carol",
                                                                           reason="test rollback"))
        view = await wait_for(handle, lambda v: v.status == CaseStatus.rolled_back, "rolled back", attempts=600)
        assert step(view, "isolate_host").state == StepState.compensated
        assert step(view, "disable_account").state == StepState.compensated
    assert await tcp_reachable(h.client, h.server_ip, h.app_port)
    assert not await NftablesHosts(NetnsRunner(), (h.mgmt_port,)).is_contained(h.server)
    assert await directory.can_bind(*alice)


async def test_compromised_account_case_deactivates_a_moto_key_and_restores_it(
    time_env: WorkflowEnvironment, task_queue: str, standin_backends: None,
    slapd: LdapStandin, moto_iam: MotoIam,
) -> None:
    key = moto_iam.target_keys[0]
    iam = boto3.client("iam", endpoint_url=moto_iam.endpoint, region_name="us-east-1",
                       aws_access_key_id=moto_iam.access_key_id, aws_secret_access_key=moto_iam.secret_access_key)

    def status() -> str:
        keys = iam.list_access_keys(UserName=moto_iam.target_user)["AccessKeyMetadata"]
        return next(k["Status"] for k in keys if k["AccessKeyId"] == key)

    assert status() == "Active"
    client = time_env.client
    async with build_worker(client, task_queue):
        inp = case_input(alert_type="compromised_account")
        handle = await start_case(client, task_queue, inp,
                                  alert("c1", ("account", "bob"), ("access_key", key)))
        await wait_for(handle, awaiting("disable_account"), "disable_account waiting")
        await handle.execute_update(CaseWorkflow.approve, approve("disable_account"))
        await wait_for(handle, awaiting("deactivate_access_key"), "deactivate_access_key waiting", attempts=600)
        await handle.execute_update(CaseWorkflow.approve, approve("deactivate_access_key"))
        await wait_for(handle, lambda v: step(v, "deactivate_access_key").state == StepState.executed,
                       "key deactivated", attempts=600)
        assert status() == "Inactive"
        await handle.execute_update(CaseWorkflow.rollback, RollbackRequest(requested_by="carol", reason="FP"))
        view = await wait_for(handle, lambda v: v.status == CaseStatus.rolled_back, "rolled back", attempts=600)
        assert step(view, "deactivate_access_key").state == StepState.compensated
    assert status() == "Active"


async def test_crowdstrike_isolation_through_the_case_workflow_waits_for_the_vendor_and_rolls_back(
    time_env: WorkflowEnvironment, task_queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from connectors.fakes.crowdstrike import FakeCrowdStrike
    from connectors.http import use_transport

    fake = FakeCrowdStrike(pending_reads=3)
    device = fake.add_host("f" * 32)
    monkeypatch.setenv("SIGNOFF_BACKENDS", "isolate_host=crowdstrike")
    monkeypatch.setenv("SIGNOFF_CROWDSTRIKE_CLIENT_ID", fake.client_id)
    monkeypatch.setenv("SIGNOFF_CROWDSTRIKE_CLIENT_SECRET", fake.client_secret)
    monkeypatch.setenv("SIGNOFF_VERIFY_INTERVAL", "0.01")
    use_transport("crowdstrike", fake.transport())
    reset_cache()
    try:
        client = time_env.client
        async with build_worker(client, task_queue):
            inp = case_input(alert_type="malware")
            handle = await start_case(client, task_queue, inp, alert("cs1", ("host", device), category="Malware"))
            await wait_for(handle, awaiting("isolate_host"), "isolate_host waiting")
            assert fake.count("POST", "devices-actions") == 0
            await handle.execute_update(CaseWorkflow.approve, approve("isolate_host"))
            view = await wait_for(handle, lambda v: step(v, "isolate_host").state == StepState.executed,
                                  "isolated", attempts=600)
            assert fake.hosts[device] == "contained"
            result = step(view, "isolate_host").result
            assert result is not None and result.before == {"network": "normal"}
            assert result.after == {"network": "contained"}
            await handle.execute_update(CaseWorkflow.rollback, RollbackRequest(requested_by="carol", reason="FP"))
            await wait_for(handle, lambda v: v.status == CaseStatus.rolled_back, "rolled back", attempts=600)
        assert fake.hosts[device] == "normal"
        assert [c.params.get("action_name") for c in fake.calls if "devices-actions" in c.path] == [
            "contain", "lift_containment"]
    finally:
        use_transport("crowdstrike", None)
        reset_cache()
