"""A credential planted in a connector's environment never shows up in logs, activity results or
workflow histories, on success or on failure (a rejected credential's error names the variable,
never the value)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from temporalio.testing import WorkflowEnvironment

from activities.executors import reset_cache
from connectors.fakes.okta import FakeOkta
from connectors.http import use_transport
from signoff.models import ApprovalRequest, CaseStatus, RollbackRequest, StepState
from signoff.worker import build_worker
from tests.casekit import alert, awaiting, case_input, start_case, step, wait_for
from workflows.case import CaseWorkflow

PLANTED = "planted-okta-secret-5b1e9c0d7a"


@pytest.fixture
def okta_backend(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeOkta]:
    fake = FakeOkta()
    fake.token = PLANTED  # the fake accepts exactly the planted credential
    monkeypatch.setenv("SIGNOFF_BACKENDS", "disable_account=okta")
    monkeypatch.setenv("SIGNOFF_OKTA_ORG_URL", "https://example.okta.com")
    monkeypatch.setenv("SIGNOFF_OKTA_API_TOKEN", PLANTED)
    use_transport("okta", fake.transport())
    reset_cache()
    yield fake
    use_transport("okta", None)
    reset_cache()


async def history_text(handle) -> str:  # type: ignore[no-untyped-def]
    return (await handle.fetch_history()).to_json()


async def test_planted_secret_stays_out_of_logs_results_and_history(
    time_env: WorkflowEnvironment, task_queue: str, okta_backend: FakeOkta,
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.DEBUG)  # everything: httpx, httpcore, temporalio, signoff
    fake = okta_backend
    fake.add_user("00u-ok")
    fake.add_user("00u-bad")
    client = time_env.client
    async with build_worker(client, task_queue):
        # success: disable through Okta, then roll back
        ok = await start_case(client, task_queue, case_input(), alert("s1", ("account", "00u-ok")))
        await wait_for(ok, awaiting("disable_account"), "waiting")
        await ok.execute_update(CaseWorkflow.approve, ApprovalRequest(step="disable_account", approver="bob",
                                                                      reason="secret test"))
        view = await wait_for(ok, lambda v: step(v, "disable_account").state == StepState.executed, "executed",
                              attempts=600)
        assert fake.users["00u-ok"]["status"] == "SUSPENDED"
        result = step(view, "disable_account").result
        assert result is not None and PLANTED not in result.model_dump_json()
        await ok.execute_update(CaseWorkflow.rollback, RollbackRequest(requested_by="carol", reason="secret test"))
        await wait_for(ok, lambda v: v.status == CaseStatus.rolled_back, "rolled back", attempts=600)
        assert fake.users["00u-ok"]["status"] == "ACTIVE"

        # failure: the vendor now rejects the credential; the error must not carry it
        fake.token = "rotated-by-the-vendor"
        bad = await start_case(client, task_queue, case_input(), alert("s2", ("account", "00u-bad")))
        await wait_for(bad, awaiting("disable_account"), "waiting")
        await bad.execute_update(CaseWorkflow.approve, ApprovalRequest(step="disable_account", approver="bob",
                                                                       reason="secret test"))
        view = await wait_for(bad, lambda v: step(v, "disable_account").state == StepState.failed, "failed",
                              attempts=600)
        error = step(view, "disable_account").error
        assert "SIGNOFF_OKTA_API_TOKEN" in error and PLANTED not in error

        for handle in (ok, bad):
            text = await history_text(handle)
            assert PLANTED not in text
        assert "SIGNOFF_OKTA_API_TOKEN" in await history_text(bad)  # the failure is there, helpfully
    assert caplog.records, "nothing was logged: the check would be vacuous"
    assert PLANTED not in caplog.text
    assert all(PLANTED not in repr(r.args) for r in caplog.records)
