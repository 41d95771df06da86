"""Secrets never reach histories, logs, spans, explanations or the audit trail.

A connector credential (the Okta API token, used for real against the Okta fake) and the history
encryption key are planted in the environment; a case runs end to end with tracing on and the
codec on; then the fetched history (raw and decoded), every log record at DEBUG, every exported
span, the archive, `explain` and the audit export are searched for both.
"""

from __future__ import annotations

import base64
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from activities.executors import reset_cache
from connectors.fakes.okta import FakeOkta
from connectors.http import use_transport
from signoff import telemetry
from signoff.audit import export
from signoff.codec import converter_with_codec
from signoff.explain import explanation_from_history, render_explanation
from signoff.history import archived_runs, decode_history
from signoff.models import ApprovalRequest, CaseStatus, CloseRequest, RollbackRequest, StepState, Verdict
from signoff.worker import build_worker
from tests.auditkit import PATIENCE
from tests.casekit import alert, awaiting, case_input, start_case, step, wait_for
from workflows.case import CaseWorkflow

TOKEN = "planted-okta-token-7f3a9e21c4"
CODEC_KEY = base64.b64encode(os.urandom(32)).decode()


@pytest.fixture
def planted(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeOkta]:
    fake = FakeOkta()
    fake.token = TOKEN
    monkeypatch.setenv("SIGNOFF_BACKENDS", "disable_account=okta")
    monkeypatch.setenv("SIGNOFF_OKTA_ORG_URL", "https://example.okta.com")
    monkeypatch.setenv("SIGNOFF_OKTA_API_TOKEN", TOKEN)
    monkeypatch.setenv("SIGNOFF_CODEC_KEY", CODEC_KEY)
    use_transport("okta", fake.transport())
    reset_cache()
    yield fake
    use_transport("okta", None)
    reset_cache()


def _absent(where: str, text: str) -> None:
    for secret in (TOKEN, CODEC_KEY):
        assert secret not in text, f"a planted secret leaked into {where}"


async def test_planted_secrets_stay_out_of_everything(
    dev_env: WorkflowEnvironment, task_queue: str, planted: FakeOkta, caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    caplog.set_level(logging.DEBUG)
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    telemetry.configure(provider, None)
    try:
        converter = converter_with_codec(pydantic_data_converter)
        assert converter.payload_codec is not None
        client = Client(**{**dev_env.client.config(), "data_converter": converter,
                           "interceptors": telemetry.client_interceptors()})
        planted.add_user("00u-secret")
        async with build_worker(client, task_queue):
            inp = case_input()
            handle = await start_case(client, task_queue, inp, alert("sec1", ("account", "00u-secret")))
            await wait_for(handle, awaiting("disable_account"), "waiting", attempts=PATIENCE)
            await handle.execute_update(CaseWorkflow.approve, ApprovalRequest(
                step="disable_account", approver="bob", reason="takeover confirmed"))
            await wait_for(handle, lambda v: step(v, "disable_account").state == StepState.executed, "executed",
                           attempts=PATIENCE)
            assert planted.users["00u-secret"]["status"] == "SUSPENDED"  # the token was really used
            await handle.execute_update(CaseWorkflow.rollback, RollbackRequest(requested_by="carol", reason="FP"))
            await wait_for(handle, lambda v: v.status == CaseStatus.rolled_back, "rolled back", attempts=PATIENCE)
            await handle.execute_update(CaseWorkflow.close, CloseRequest(analyst="carol", verdict=Verdict.false_positive,
                                                                         reason="travel"))
            await handle.result()
            trail = tmp_path / "trail.jsonl"
            await export(client, trail)
    finally:
        telemetry.reset()

    history = await handle.fetch_history()
    _absent("the stored history", history.to_json())
    decoded = await decode_history(history, client.data_converter)
    explanation = explanation_from_history(decoded)
    assert explanation["actions"], "the decoded history must hold the actions"
    _absent("the decoded history / explain --json", json.dumps(explanation, default=str))
    _absent("explain", render_explanation(explanation))
    _absent("the audit export", trail.read_text())
    for path in archived_runs(inp.case_id):
        _absent(f"the archive {path}", path.read_text())
    logs = "\n".join(f"{r.name} {r.getMessage()} {r.args!r} {r.exc_text or ''}" for r in caplog.records)
    assert "disable_account" in logs or caplog.records, "logs were captured"
    _absent("the logs", logs)
    finished = spans.get_finished_spans()
    assert any((s.attributes or {}).get(telemetry.CASE_ID_ATTRIBUTE) == inp.case_id for s in finished)
    _absent("the spans", "\n".join(s.to_json() for s in finished))


def test_the_escalation_webhook_can_come_from_a_secret_file(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from activities.case import escalation_webhook

    secret = tmp_path / "webhook"
    secret.write_text("https://hooks.example.invalid/T000/B000/planted-token\n")
    monkeypatch.setenv("SIGNOFF_ESCALATION_WEBHOOK", "https://from-the-environment.invalid/")
    monkeypatch.setenv("SIGNOFF_ESCALATION_WEBHOOK_FILE", str(secret))
    assert escalation_webhook() == "https://hooks.example.invalid/T000/B000/planted-token"  # the file wins
    monkeypatch.setenv("SIGNOFF_ESCALATION_WEBHOOK_FILE", str(tmp_path / "missing"))
    try:
        escalation_webhook()
    except RuntimeError as exc:
        assert "SIGNOFF_ESCALATION_WEBHOOK_FILE" in str(exc) and "planted-token" not in str(exc)
    else:
        raise AssertionError("a missing webhook file must be an error, not a silent fallback")
    monkeypatch.delenv("SIGNOFF_ESCALATION_WEBHOOK_FILE")
    assert escalation_webhook() == "https://from-the-environment.invalid/"
