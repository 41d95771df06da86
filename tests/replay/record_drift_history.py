"""Record a golden DriftCheckWorkflow history that breaches: figures -> demote -> drift case.

    python -m tests.replay.record_drift_history [generation]   # tests/replay/histories/drift/<generation>.json

The figures and the governance hand-off are stand-ins with the real activity names (a replay only
needs the recorded results); the drift case itself is a real CaseWorkflow start. Runs on the
time-skipping test server. `tests/test_qa_drift_explain.py` replays every file against the current
DriftCheckWorkflow: histories recorded before a patched change must keep replaying.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from temporalio import activity

from signoff.autonomy.models import DriftFinding, DriftReport

OUT = Path(__file__).resolve().parent / "histories" / "drift"
MODEL_ID = "0123456789abcdef0123456789abcdef"


def breached_report() -> DriftReport:
    return DriftReport(
        at=datetime(2026, 11, 28, 12, 0, tzinfo=UTC), model_id=MODEL_ID, reference="guide_slice (replay)",
        window="7d",
        findings=(DriftFinding(alert_type="phishing", cases=60, verdicts=0, score_psi=0.649,
                               breaches=("score PSI 0.649 > 0.25",)),),
        policy_thresholds={"score_psi": 0.25},
    )


@activity.defn(name="compute_drift")
async def stand_in_compute_drift(req: object) -> DriftReport:
    return breached_report()


@activity.defn(name="apply_drift")
async def stand_in_apply_drift(report: DriftReport) -> list[str]:
    return ["phishing"]


async def record(generation: str, out: Path = OUT) -> Path:
    os.environ.setdefault("SIGNOFF_HOME", tempfile.mkdtemp(prefix="signoff-replay-drift-"))

    from activities.drift import ACTIVITIES, apply_drift, compute_drift
    from signoff.autonomy.models import DriftCheckInput
    from signoff.worker import build_worker
    from tests.replay.record_histories import recording_env
    from workflows.drift import DriftCheckWorkflow

    real = [a for a in ACTIVITIES if a not in (compute_drift, apply_drift)]
    out.mkdir(parents=True, exist_ok=True)
    async with recording_env() as env:
        queue = "replay-drift-recording"
        async with build_worker(env.client, queue, workflows=[DriftCheckWorkflow],
                                activities=[stand_in_compute_drift, stand_in_apply_drift, *real]):
            handle = await env.client.start_workflow(DriftCheckWorkflow.run, DriftCheckInput(),
                                                     id="replay-drift-check", task_queue=queue)
            report = await handle.result()
            assert report.drift_case_id, report
            history = await handle.fetch_history()
        path = out / f"{generation}.json"
        path.write_text(history.to_json())
        print(f"{path} ({len(history.events)} events, drift case {report.drift_case_id})")
        return path


def main() -> None:
    asyncio.run(record(sys.argv[1] if len(sys.argv) > 1 else "current"))


if __name__ == "__main__":
    main()
