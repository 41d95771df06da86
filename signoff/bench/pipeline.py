"""Scenario `pipeline`: real GUIDE cases through the governed pipeline vs bare Temporal.

Governed: `ingest_path` (validate, group, signal-with-start per case) → load_governance → enrich →
score → decide → low-tier playbook steps (capture + execute each) → the case settles: waiting for
an approval or a verdict, or closed automatically. Timed from the start of ingest until visibility
shows every case settled.

Baseline, same server and worker, same run: `BareWorkflow` running as many trivial activities as
a governed case ran on average (counted from the governed histories: scheduled activities plus
local-activity markers), all as ordinary activities, started with the same concurrency, timed
until all completed: `baseline_cases_per_s` and `ratio`. A second baseline has the governed mix
of ordinary and local activities: `same_mix_cases_per_s` and `ratio_same_mix`, the cost of the
governance code alone.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from temporalio.api.enums.v1 import EventType

from signoff.bench.bare import BareWorkflow
from signoff.bench.cases import open_waiting_cases
from signoff.bench.data import guide_path, slice_guide
from signoff.bench.harness import Bench, bench, load_average

Report = Callable[[str, int, int], None]
SETTLED = ("awaiting_approval", "awaiting_verdict", "auto_closed", "closed", "contained", "escalated",
           "action_failed", "rollback_failed", "rolled_back")
SETTLED_QUERY = "WorkflowType='CaseWorkflow' AND CaseStatus IN ({})".format(", ".join(f"'{s}'" for s in SETTLED))
HISTORY_SAMPLE = 40
WARMUP = 1
POLL_S = 0.5  # visibility polls share the dev server's single SQLite connection: not too often
STARTERS = 64  # concurrent starts, as ingest uses


async def activity_counts(b: Bench, case_ids: list[str]) -> tuple[float, float]:
    """Average (activities scheduled, local activities) per case, from a sample of histories."""
    sample = case_ids[:HISTORY_SAMPLE]
    scheduled = local = 0
    for case_id in sample:
        history = await b.client.get_workflow_handle(case_id).fetch_history()
        for event in history.events:
            if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
                scheduled += 1
            elif (event.event_type == EventType.EVENT_TYPE_MARKER_RECORDED
                  and event.marker_recorded_event_attributes.marker_name == "core_local_activity"):
                local += 1
    return scheduled / len(sample), local / len(sample)


def _per_case(before: dict[str, float], after: dict[str, float], cases: int) -> dict[str, float]:
    """CPU milliseconds per case by process: a measure the other load on the machine barely moves."""
    used = {name: (after[name] - before[name]) * 1000 / cases for name in before}
    return {name: round(ms, 1) for name, ms in {**used, "total": sum(used.values())}.items()}


async def _bare(b: Bench, cases: int, shape: tuple[int, int], batch: int, report: Report) -> float:
    """Run `cases` bare workflows of (regular, local) activities; batch numbers the run on this server."""
    gate = asyncio.Semaphore(STARTERS)
    started = time.monotonic()

    async def start(i: int) -> None:
        async with gate:
            await b.client.start_workflow(BareWorkflow.run, args=list(shape), id=f"bare-{batch}-{i}",
                                          task_queue=b.task_queue)

    await asyncio.gather(*(start(i) for i in range(cases)))
    label = f"bare Temporal ({shape[0]} activities, {shape[1]} local)"
    done = await b.wait_count("WorkflowType='BareWorkflow' AND ExecutionStatus='Completed'", cases * batch,
                              timeout=60 + cases * 2, interval=POLL_S,
                              progress=lambda n, t: report(label, n - cases * (batch - 1), cases))
    return done - started


async def run_pipeline(cases: int = 300, report: Report | None = None) -> dict[str, Any]:
    from signoff.ingest import ingest_path

    report = report or (lambda *_: None)
    async with bench() as b:
        source = guide_path()
        sliced = b.home / "bench-slice.csv"
        incidents = slice_guide(source, cases, sliced)
        # Warm-up: one case through the whole path first, so imports, the model load and the lab's
        # first connection are not timed (a running worker has done them long before).
        warm = await open_waiting_cases(b, WARMUP, "warmup", report)
        load_before = load_average()
        cpu0 = b.cpu()
        started = time.monotonic()
        summary = await ingest_path(b.client, sliced, "guide", task_queue=b.task_queue,
                                    progress=lambda n, t: report("ingest", n, t))
        opened = summary.cases_opened
        ingested = time.monotonic()
        settled = await b.wait_count(SETTLED_QUERY, opened + len(warm), timeout=120 + opened * 2,
                                     interval=POLL_S, progress=lambda n, t: report("governed pipeline", n, t))
        seconds = settled - started
        cpu1 = b.cpu()
        scheduled, local = await activity_counts(b, summary.case_ids)
        per_case = scheduled + local
        # Baseline: a bare workflow with as many activities, all ordinary activities (what a plain
        # Temporal implementation of the same steps costs); and the same mix of local activities
        # as the governed cases (the overhead of the governance code alone).
        plain = (round(per_case), 0)
        baseline_seconds = await _bare(b, opened, plain, 1, report)
        cpu2 = b.cpu()
        mix = (round(scheduled), round(local))
        mix_seconds = await _bare(b, opened, mix, 2, report)
        cpu3 = b.cpu()
        statuses: dict[str, int] = {}
        for status in SETTLED:
            count = await b.count(f"WorkflowType='CaseWorkflow' AND CaseStatus='{status}'")
            if status == "awaiting_approval":
                count -= len(warm)
            if count:
                statuses[status] = count
        rate = opened / seconds
        baseline_rate = opened / baseline_seconds
        return {
            "scenario": "pipeline",
            "cases": opened,
            "seconds": round(seconds, 3),
            "cases_per_s": round(rate, 2),
            "baseline_cases_per_s": round(baseline_rate, 2),
            "baseline_seconds": round(baseline_seconds, 3),
            "ratio": round(rate / baseline_rate, 3),
            "activities_per_case": round(per_case, 2),
            "scheduled_activities_per_case": round(scheduled, 2),
            "local_activities_per_case": round(local, 2),
            "baseline_activities_per_case": plain[0],
            "same_mix_cases_per_s": round(opened / mix_seconds, 2),
            "same_mix_activities_per_case": sum(mix),
            "same_mix_local_activities_per_case": mix[1],
            "ratio_same_mix": round(seconds and mix_seconds / seconds, 3),
            "ingest_seconds": round(ingested - started, 3),
            "cpu_ms_per_case": _per_case(cpu0, cpu1, opened),
            "baseline_cpu_ms_per_case": _per_case(cpu1, cpu2, opened),
            "same_mix_cpu_ms_per_case": _per_case(cpu2, cpu3, opened),
            "load_average_before": load_before,
            "load_average_after": load_average(),
            "alerts": summary.accepted,
            "incidents_requested": cases,
            "incidents_in_slice": incidents,
            "statuses": statuses,
            "source": source.name,
            "durable": "sqlite file, journal_mode=wal, synchronous=normal",
            "worker_settings": b.worker_settings,
        }
