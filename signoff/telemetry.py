"""OpenTelemetry for Signoff: traces through Temporal's TracingInterceptor, SOC metrics through OTel meters.

Off unless asked for. With neither `OTEL_EXPORTER_OTLP_ENDPOINT` nor `OTEL_TRACES_EXPORTER` set (and
no explicit `configure(...)`), `client_interceptors()` returns nothing: no spans, no meters, no cost.
When set, the standard OTEL_* variables configure the OTLP/HTTP exporters (endpoint, headers,
`OTEL_SERVICE_NAME`, `OTEL_METRICS_EXPORTER=none` to skip metrics, ...).

Traces: every Temporal span (start, run, activities, updates, queries, signals) of a case carries
`signoff.case_id` (the case id is the workflow id). Span attributes never hold payloads, so alert
data and secrets stay out of traces.

Metrics (meter `signoff`):
  signoff.cases.closed            counter    cases by outcome (final status), alert type, decision
  signoff.cases.auto_closed       counter    automatically closed cases, by alert type and model
  signoff.cases.awaiting_approval gauge      open cases waiting for a human (from Temporal visibility)
  signoff.approval.latency        histogram  seconds from case opened to each approval decision
  signoff.rollbacks               counter    rollbacks by outcome (rolled_back / rollback_failed)
  signoff.drift.checks            counter    drift measurements, by alert type, metric and breach
  signoff.drift.value             gauge      the last drift statistic per alert type and metric
Case metrics (and drift figures, from the governance workflow's `drift_report` update) are emitted
by a worker interceptor outside workflow code, never during replay.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.metrics import CallbackOptions, Meter, MeterProvider, Observation
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.trace import Tracer
from temporalio import client as temporal_client
from temporalio import workflow
from temporalio.worker import (
    ExecuteWorkflowInput,
    HandleSignalInput,
    HandleUpdateInput,
    Interceptor,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
)

CASE_ID_ATTRIBUTE = "signoff.case_id"
_WORKFLOW_ID_ATTRIBUTE = "temporalWorkflowID"
_EXTERN = "__signoff_case_metrics"
CASE_WORKFLOW = "CaseWorkflow"
GOVERNANCE_WORKFLOW = "GovernanceWorkflow"


def is_case_id(workflow_id: str) -> bool:
    """Signoff's own long-lived workflows (governance, drift) are named `signoff-...`; cases are not."""
    return bool(workflow_id) and not workflow_id.startswith("signoff-")


class CaseIdSpanProcessor(SpanProcessor):
    """Copies the workflow id of Temporal's spans into `signoff.case_id`, so traces filter by case."""

    def on_start(self, span: Span, parent_context: Any = None) -> None:
        workflow_id = (span.attributes or {}).get(_WORKFLOW_ID_ATTRIBUTE)
        if isinstance(workflow_id, str) and is_case_id(workflow_id):
            span.set_attribute(CASE_ID_ATTRIBUTE, workflow_id)

    def on_end(self, span: ReadableSpan) -> None:
        return None


# ---------------------------------------------------------------- metrics


@dataclass
class CaseMetrics:
    meter: Meter
    awaiting: dict[str, int] = field(default_factory=dict)  # alert type -> open cases waiting for approval
    drift: dict[tuple[str, str], float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        m = self.meter
        self.closed = m.create_counter("signoff.cases.closed", unit="{case}",
                                       description="Cases closed, by outcome (final status), alert type and decision")
        self.auto_closed = m.create_counter("signoff.cases.auto_closed", unit="{case}",
                                            description="Cases closed automatically (human on the loop)")
        self.approval_latency = m.create_histogram(
            "signoff.approval.latency", unit="s", description="Seconds from case opened to an approval decision")
        self.rollbacks = m.create_counter("signoff.rollbacks", unit="{rollback}",
                                          description="Case rollbacks, by outcome")
        self.drift_checks = m.create_counter("signoff.drift.checks", unit="{check}",
                                             description="Drift measurements, by alert type, metric and breach")
        m.create_observable_gauge("signoff.cases.awaiting_approval", callbacks=[self._observe_awaiting],
                                  unit="{case}", description="Open cases waiting for a human approval")
        m.create_observable_gauge("signoff.drift.value", callbacks=[self._observe_drift],
                                  description="Last drift statistic per alert type and metric")

    def _observe_awaiting(self, options: CallbackOptions) -> list[Observation]:
        return [Observation(n, {"alert_type": t}) for t, n in sorted(self.awaiting.items())]

    def _observe_drift(self, options: CallbackOptions) -> list[Observation]:
        return [Observation(v, {"alert_type": t, "metric": m}) for (t, m), v in sorted(self.drift.items())]

    def record(self, kind: str, attrs: Mapping[str, Any]) -> None:
        """Called from the workflow interceptor (outside the sandbox, never during replay)."""
        if kind == "case_closed":
            labels = {"outcome": attrs["outcome"], "alert_type": attrs["alert_type"], "decision": attrs["decision"]}
            self.closed.add(1, labels)
            if attrs["outcome"] == "auto_closed":
                self.auto_closed.add(1, {"alert_type": attrs["alert_type"], "model": attrs.get("model", "")})
        elif kind == "approval":
            self.approval_latency.record(float(attrs["seconds"]), {
                "decision": attrs["decision"], "via": attrs["via"], "outcome": attrs["outcome"]})
        elif kind == "rollback":
            self.rollbacks.add(1, {"outcome": attrs["outcome"]})
        elif kind == "drift":
            self.drift[(attrs["alert_type"], attrs["metric"])] = float(attrs["value"])
            self.drift_checks.add(1, {"alert_type": attrs["alert_type"], "metric": attrs["metric"],
                                      "breached": bool(attrs["breached"])})


_tracer_provider: TracerProvider | None = None
_meter_provider: MeterProvider | None = None
_metrics: CaseMetrics | None = None
_from_env_done = False


def env_enabled() -> bool:
    traces = os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    return bool(os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()) or traces not in ("", "none")


def configure(tracer_provider: TracerProvider | None = None, meter_provider: MeterProvider | None = None) -> None:
    """Use these providers (tests: in-memory exporter and reader). The case-id processor is added here."""
    global _tracer_provider, _meter_provider, _metrics
    if tracer_provider is not None:
        tracer_provider.add_span_processor(CaseIdSpanProcessor())
    _tracer_provider, _meter_provider = tracer_provider, meter_provider
    _metrics = CaseMetrics(meter_provider.get_meter("signoff")) if meter_provider is not None else None


def reset_gauges() -> None:
    """Stop the awaiting-approval refresher (tests; the worker's runs for the life of the process)."""
    global _refresher
    if _refresher is not None:
        _refresher.cancel()
        _refresher = None


def reset() -> None:
    global _tracer_provider, _meter_provider, _metrics, _from_env_done, _refresher
    _tracer_provider = _meter_provider = _metrics = None
    _from_env_done = False
    if _refresher is not None:
        _refresher.cancel()
        _refresher = None


def shutdown() -> None:
    """Export what is buffered and stop the providers (the CLI ends its process right after)."""
    for provider in (_tracer_provider, _meter_provider):
        stop = getattr(provider, "shutdown", None)
        if stop is not None:
            try:
                stop()
            except Exception:  # telemetry never turns a command's result into a failure
                logging.getLogger("signoff.telemetry").warning("telemetry shutdown failed", exc_info=True)


def _configure_from_env() -> None:
    """OTLP over HTTP, configured by the standard OTEL_* variables; only when they ask for it."""
    global _from_env_done
    if _from_env_done or _tracer_provider is not None or not env_enabled():
        return
    _from_env_done = True
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider as SdkMeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", "signoff")})
    tracer_provider = TracerProvider(resource=resource)
    if os.environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() not in ("none", "console"):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    elif os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        tracer_provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    meter_provider = None
    if os.environ.get("OTEL_METRICS_EXPORTER", "otlp").strip().lower() != "none":
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

        meter_provider = SdkMeterProvider(resource=resource,
                                          metric_readers=[PeriodicExportingMetricReader(OTLPMetricExporter())])
        metrics.set_meter_provider(meter_provider)
    trace.set_tracer_provider(tracer_provider)
    configure(tracer_provider, meter_provider)


def tracer() -> Tracer | None:
    _configure_from_env()
    return _tracer_provider.get_tracer("signoff") if _tracer_provider is not None else None


def case_metrics() -> CaseMetrics | None:
    _configure_from_env()
    return _metrics


def client_interceptors() -> list[temporal_client.Interceptor]:
    """What `signoff.client.connect` installs: nothing unless telemetry is configured."""
    from temporalio.contrib.opentelemetry import TracingInterceptor

    found: list[temporal_client.Interceptor] = []
    t = tracer()
    if t is not None:
        found.append(TracingInterceptor(t))
    if case_metrics() is not None:
        found.append(CaseMetricsInterceptor())
    return found


def record_drift(alert_type: str, metric: str, value: float, breached: bool) -> None:
    """For the drift check: one measurement (e.g. PSI of the scores) and whether it breached policy."""
    m = case_metrics()
    if m is not None:
        m.record("drift", {"alert_type": alert_type, "metric": metric, "value": value, "breached": breached})


async def refresh_awaiting(client: temporal_client.Client) -> dict[str, int]:
    """Count open cases waiting for approval per alert type (Temporal visibility is the truth)."""
    m = case_metrics()
    counts: dict[str, int] = {}
    async for wf in client.list_workflows(
        f"WorkflowType='{CASE_WORKFLOW}' AND ExecutionStatus='Running' AND AwaitingApproval=true"
    ):
        alert_type = wf.search_attributes.get("AlertType", ["?"])
        name = str(alert_type[0]) if isinstance(alert_type, list) and alert_type else "?"
        counts[name] = counts.get(name, 0) + 1
    if m is not None:
        m.awaiting = counts
    return counts


_refresher: asyncio.Task[None] | None = None


def start_gauges(client: temporal_client.Client, every_seconds: float = 30.0) -> asyncio.Task[None] | None:
    """Keep `signoff.cases.awaiting_approval` current from visibility (workers call this; no-op when off)."""
    global _refresher
    if case_metrics() is None or (_refresher is not None and not _refresher.done()):
        return _refresher

    async def loop() -> None:
        while True:
            try:
                await refresh_awaiting(client)
            except Exception as exc:  # visibility hiccup: keep the last value, try again later
                logging.getLogger(__name__).debug("awaiting-approval gauge refresh failed: %s", exc)
            await asyncio.sleep(every_seconds)

    _refresher = asyncio.get_running_loop().create_task(loop(), name="signoff-awaiting-gauge")
    return _refresher


# ---------------------------------------------------------------- the worker interceptor


class CaseMetricsInterceptor(temporal_client.Interceptor, Interceptor):
    """Installed on the client; workers built from it inherit it (worker side only does anything)."""

    def workflow_interceptor_class(
        self, input: WorkflowInterceptorClassInput
    ) -> type[WorkflowInboundInterceptor] | None:
        input.unsafe_extern_functions[_EXTERN] = _record_outside
        return _CaseMetricsInbound


def _record_outside(kind: str, attrs: dict[str, Any]) -> None:
    m = _metrics
    if m is not None:
        m.record(kind, attrs)


def _emit(kind: str, attrs: dict[str, Any]) -> None:
    if workflow.unsafe.is_replaying():
        return
    fn: Callable[[str, dict[str, Any]], None] = workflow.extern_functions()[_EXTERN]  # type: ignore[assignment]
    fn(kind, attrs)


def _emit_drift(report: Any) -> None:
    """Drift figures from the governance workflow's `drift_report` update (the drift check's result)."""
    for finding in getattr(report, "findings", ()) or ():
        breaches = tuple(getattr(finding, "breaches", ()) or ())
        for metric in ("score_psi", "feature_psi_max", "override_rate"):
            value = getattr(finding, metric, None)
            if value is not None:
                _emit("drift", {"alert_type": str(finding.alert_type), "metric": metric, "value": float(value),
                                "breached": any(metric.split("_")[0] in b.lower() for b in breaches)})


class _CaseMetricsInbound(WorkflowInboundInterceptor):
    async def execute_workflow(self, input: ExecuteWorkflowInput) -> Any:
        result = await super().execute_workflow(input)
        if workflow.info().workflow_type == CASE_WORKFLOW:
            status = getattr(result, "status", None)
            decision = getattr(result, "decision", None)
            score = getattr(result, "score", None)
            _emit("case_closed", {
                "outcome": str(getattr(status, "value", status) or "unknown"),
                "alert_type": str(getattr(result, "alert_type", "") or ""),
                "decision": str(getattr(getattr(decision, "kind", None), "value", "") or ""),
                "model": str(getattr(score, "model_id", "") or "")[:16],
            })
        return result

    async def handle_update_handler(self, input: HandleUpdateInput) -> Any:
        result = await super().handle_update_handler(input)
        if workflow.info().workflow_type == GOVERNANCE_WORKFLOW and input.update == "drift_report" and input.args:
            _emit_drift(input.args[0])
        if workflow.info().workflow_type != CASE_WORKFLOW:
            return result
        if input.update in ("approve", "reject"):
            text = str(result)
            _emit("approval", {"decision": input.update, "via": "update",
                               "outcome": "refused" if text.startswith("refused") else "accepted",
                               "seconds": (workflow.now() - workflow.info().start_time).total_seconds()})
        elif input.update == "rollback":
            text = str(result)
            _emit("rollback", {"outcome": text.split(":", 1)[0].removeprefix("rollback ").strip() or "unknown"})
        return result

    async def handle_signal(self, input: HandleSignalInput) -> None:
        await super().handle_signal(input)
        if workflow.info().workflow_type == CASE_WORKFLOW and input.signal in ("approve_signal", "reject_signal"):
            _emit("approval", {"decision": input.signal.removesuffix("_signal"), "via": "signal",
                               "outcome": "recorded",
                               "seconds": (workflow.now() - workflow.info().start_time).total_seconds()})
