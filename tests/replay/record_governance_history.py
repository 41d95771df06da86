"""Record a golden GovernanceWorkflow history: thresholds, verdicts, a drift report, the kill switch,
and a continue-as-new.

    python -m tests.replay.record_governance_history [generation]  # tests/replay/histories/governance/<generation>.json

Runs on the time-skipping test server with the real governance activities. The verdicts and the
drift report are sent the way a case and a drift check send them. `tests/test_governance_hardening.py`
replays every file against the current GovernanceWorkflow: histories recorded before a patched
change (verdict and drift report checks) must keep replaying.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

OUT = Path(__file__).resolve().parent / "histories" / "governance"


async def record(generation: str, out: Path = OUT) -> Path:
    os.environ.setdefault("SIGNOFF_HOME", tempfile.mkdtemp(prefix="signoff-replay-governance-"))

    from signoff.autonomy.client import GovernanceRefused, govern, governance_id, signal_verdict
    from signoff.autonomy.models import (
        AutonomyChange,
        DriftFinding,
        DriftReport,
        GovernanceInput,
        ThresholdChange,
        VerdictRecord,
    )
    from signoff.models import Verdict
    from signoff.worker import build_worker
    from tests.replay.record_histories import recording_env
    from workflows.governance import GovernanceWorkflow

    out.mkdir(parents=True, exist_ok=True)
    async with recording_env() as env:
        client, queue = env.client, "replay-governance-recording"
        async with build_worker(client, queue):
            first = await client.start_workflow(
                GovernanceWorkflow.run, GovernanceInput(ensure_schedule=False, history_limit=60),
                id=governance_id(queue), task_queue=queue)
            await govern(client, "set_threshold", ThresholdChange(alert_type="phishing", value=0.9, by="carol",
                                                                  reason="replay: OOF curve"), queue)
            for i, verdict in enumerate((Verdict.benign_positive, Verdict.true_positive, Verdict.benign_positive)):
                await signal_verdict(client, VerdictRecord(
                    case_id=f"replay-case-{i}", alert_type="phishing", verdict=verdict, analyst="alice",
                    reason="replay verdict " + "x" * 200, model_id="m" * 64, predicted=Verdict.benign_positive,
                    benign_confidence=0.95, threshold=0.9), queue)
            await asyncio.sleep(1)  # the verdicts' check (current generation) before the next change
            try:  # sent directly, not by a drift check: refused since the drift report check
                await govern(client, "drift_report", DriftReport(
                    at=datetime(2026, 11, 28, 12, 0, tzinfo=UTC), model_id="m" * 64, reference="replay", window="7d",
                    findings=(DriftFinding(alert_type="malware", cases=60, verdicts=0, score_psi=0.649,
                                           breaches=("score PSI 0.649 > 0.25",)),)), queue)
            except GovernanceRefused as exc:
                print(f"drift report refused: {exc}")
            await govern(client, "set_autonomy", AutonomyChange(alert_type="*", level="in_the_loop", by="alice",
                                                                reason="replay: kill switch"), queue)
            for i in range(12):  # past history_limit: the first run continues as new
                await govern(client, "set_threshold", ThresholdChange(
                    alert_type="malware", value=0.8 + i / 100, by="dave", reason=f"replay step {i}"), queue)
            for _ in range(100):
                latest = await client.get_workflow_handle(governance_id(queue)).describe()
                if latest.run_id != first.result_run_id:
                    break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("the governance workflow did not continue as new")
            history = await client.get_workflow_handle(governance_id(queue), run_id=first.result_run_id).fetch_history()
        path = out / f"{generation}.json"
        path.write_text(history.to_json())
        print(f"{path} ({len(history.events)} events)")
        return path


if __name__ == "__main__":
    asyncio.run(record(sys.argv[1] if len(sys.argv) > 1 else "current"))
