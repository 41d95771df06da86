"""OpenTelemetry: spans carry the case id, SOC metrics count what happened; off by default."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from temporalio import activity
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from signoff import telemetry
from signoff.autonomy.models import DriftFinding, DriftReport
from signoff.worker import activities, build_worker
from tests.auditkit import PATIENCE, full_story
from tests.casekit import alert as make_alert
from tests.casekit import awaiting, case_input, start_case, wait_for


@activity.defn(name="compute_drift")
async def canned_drift(req: object) -> DriftReport:
    """Stand-in figures: the governance workflow accepts a drift report only from the drift check
    that computed it, so the report reaches it through a real DriftCheckWorkflow."""
    return DriftReport(at=datetime.now(UTC), model_id="m", reference="test", window="7d", findings=(
        DriftFinding(alert_type="phishing", cases=50, verdicts=20, score_psi=0.31,
                     breaches=("score PSI 0.31 above 0.25",)),))


@pytest.fixture
def otel() -> Iterator[tuple[InMemorySpanExporter, InMemoryMetricReader]]:
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    telemetry.configure(tracer_provider, MeterProvider(metric_readers=[reader]))
    yield spans, reader
    telemetry.reset()


def _points(reader: InMemoryMetricReader, name: str) -> list[Any]:
    data = reader.get_metrics_data()
    found = []
    for rm in data.resource_metrics if data else ():
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                if metric.name == name:
                    found.extend(metric.data.data_points)
    return found


def test_off_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    telemetry.reset()
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_TRACES_EXPORTER", raising=False)
    assert telemetry.client_interceptors() == []
    assert telemetry.case_metrics() is None


def test_otlp_from_the_standard_env(monkeypatch: pytest.MonkeyPatch) -> None:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from temporalio.contrib.opentelemetry import TracingInterceptor

    telemetry.reset()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "none")
    try:
        found = telemetry.client_interceptors()
        assert any(isinstance(i, TracingInterceptor) for i in found)
        processors = telemetry._tracer_provider._active_span_processor._span_processors  # type: ignore[union-attr]
        exporters = [getattr(p, "span_exporter", None) or getattr(p, "_exporter", None) for p in processors]
        batch = [p for p in processors if type(p).__name__ == "BatchSpanProcessor"]
        assert batch and any(isinstance(getattr(b, "_batch_processor", b)._exporter, OTLPSpanExporter) for b in batch), exporters
        assert any(isinstance(p, telemetry.CaseIdSpanProcessor) for p in processors)
    finally:
        telemetry.reset()


async def test_spans_carry_the_case_id_and_metrics_count(
    dev_env: WorkflowEnvironment, task_queue: str, otel: tuple[InMemorySpanExporter, InMemoryMetricReader]
) -> None:
    spans, reader = otel
    client = Client(**{**dev_env.client.config(), "interceptors": telemetry.client_interceptors()})
    from activities.drift import compute_drift
    from signoff.autonomy.models import DriftCheckInput
    from workflows.drift import DriftCheckWorkflow

    acts = [canned_drift, *(a for a in activities() if a is not compute_drift)]
    async with build_worker(client, task_queue, activities=acts):
        waiting = case_input(alert_type="malware")
        handle = await start_case(client, task_queue, waiting, make_alert("w1", ("host", f"h-{waiting.case_id}")))
        await wait_for(handle, awaiting("isolate_host"), "waiting", attempts=PATIENCE)
        assert telemetry.start_gauges(client, every_seconds=0.1) is not None  # what `signoff worker` runs
        for _ in range(100):
            if any(p.attributes["alert_type"] == "malware" and p.value >= 1
                   for p in _points(reader, "signoff.cases.awaiting_approval")):
                break
            await asyncio.sleep(0.1)
        telemetry.reset_gauges()
        counts = await telemetry.refresh_awaiting(client)
        assert counts.get("malware", 0) >= 1
        story = await full_story(client, task_queue)
        await handle.terminate("test done")
        # Drift figures arrive with the drift check's report to the governance workflow.
        await client.execute_workflow(DriftCheckWorkflow.run, DriftCheckInput(), id=f"drift-{task_queue}",
                                      task_queue=task_queue)

    finished = spans.get_finished_spans()
    names = {s.name for s in finished}
    assert {"SignalWithStartWorkflow:CaseWorkflow", "RunWorkflow:CaseWorkflow", "RunActivity:execute_action",
            "HandleUpdate:approve", "HandleSignal:approve_signal"} <= names, names
    of_case = [s for s in finished if (s.attributes or {}).get("temporalWorkflowID") == story.case_id]
    assert len(of_case) > 10
    assert all((s.attributes or {}).get(telemetry.CASE_ID_ATTRIBUTE) == story.case_id for s in of_case)

    closed = _points(reader, "signoff.cases.closed")
    assert any(p.attributes["outcome"] == "rolled_back" and p.attributes["alert_type"] == "malware" and p.value >= 1
               for p in closed), closed
    latency = _points(reader, "signoff.approval.latency")
    assert sum(p.count for p in latency if p.attributes["via"] == "update" and p.attributes["outcome"] == "accepted") >= 1
    assert sum(p.count for p in latency if p.attributes["via"] == "signal") >= 2
    rollbacks = _points(reader, "signoff.rollbacks")
    assert any(p.attributes["outcome"] == "rolled_back" and p.value >= 1 for p in rollbacks), rollbacks
    drift = _points(reader, "signoff.drift.value")
    assert [(p.attributes["alert_type"], p.attributes["metric"], p.value) for p in drift] == [
        ("phishing", "score_psi", 0.31)]
    assert _points(reader, "signoff.drift.checks")[0].attributes["breached"] is True
    gauge = _points(reader, "signoff.cases.awaiting_approval")
    assert any(p.attributes["alert_type"] == "malware" and p.value >= 1 for p in gauge), gauge


def test_auto_closed_and_drift_metrics(otel: tuple[InMemorySpanExporter, InMemoryMetricReader]) -> None:
    _, reader = otel
    metrics = telemetry.case_metrics()
    assert metrics is not None
    metrics.record("case_closed", {"outcome": "auto_closed", "alert_type": "phishing", "decision": "auto_close",
                                   "model": "abc"})
    telemetry.record_drift("phishing", "score_psi", 0.31, breached=True)
    auto = _points(reader, "signoff.cases.auto_closed")
    assert [(p.attributes["alert_type"], p.value) for p in auto] == [("phishing", 1)]
    drift = _points(reader, "signoff.drift.value")
    assert [(p.attributes["metric"], p.value) for p in drift] == [("score_psi", 0.31)]
    checks = _points(reader, "signoff.drift.checks")
    assert checks[0].attributes["breached"] is True
