"""The SPEC's interface contract, pinned where one place says it whole: every listed command answers
`--help`; `signoff ingest --json` ends with the summary fields and `signoff cases --json [--with-alerts]`
prints the per-case fields scripts rely on. (`model evaluate --json`: tests/test_scoring_cli.py;
`bench --json`: tests/test_bench.py.) Real dev server and worker; the CLI runs in its own process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment
from typer.testing import CliRunner

from signoff.cli import app
from signoff.models import CaseStatus
from signoff.worker import build_worker
from tests.casekit import wait_for
from tests.test_qa_ingest_listing import _env, _guide_csv, _row, _signoff, _unique_org

SPEC_COMMANDS = (
    "dev", "worker", "demo", "ingest", "cases", "show", "explain", "approve", "reject", "rollback",
    "audit export", "audit verify", "model train", "model evaluate", "model list", "model promote",
    "model rollback", "policy show", "policy set-threshold", "autonomy demote", "drift check", "bench",
)  # fmt: skip
INGEST_FIELDS = {"accepted", "rejected", "cases_opened", "cases_updated", "dead_letter"}
CASE_FIELDS = {"case_id", "status", "alert_count"}


@pytest.mark.parametrize("command", SPEC_COMMANDS)
def test_every_contract_command_has_help(command: str) -> None:
    result = CliRunner().invoke(app, [*command.split(), "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output, result.output


async def test_ingest_and_cases_json_carry_the_contract_fields(
        dev_env: WorkflowEnvironment, task_queue: str, tmp_path: Path) -> None:
    env = _env(dev_env, task_queue, tmp_path / "home")
    org = _unique_org()
    case_id = f"guide-{org}-1"
    data = _guide_csv(tmp_path / "two.csv", [_row(org, 1, 11, 1), _row(org, 1, 12, 2)])
    async with build_worker(dev_env.client, task_queue):
        code, out, err = await _signoff("ingest", str(data), "--format", "guide", "--json", env=env)
        assert code == 0, err
        summary = json.loads(out.strip().splitlines()[-1])
        assert set(summary) >= INGEST_FIELDS, summary
        assert (summary["accepted"], summary["rejected"], summary["cases_opened"], summary["cases_updated"]) == \
            (2, 0, 1, 0)
        assert Path(summary["dead_letter"]).suffix == ".jsonl"

        handle = dev_env.client.get_workflow_handle(case_id)
        await wait_for(handle, lambda v: v.status != CaseStatus.triage, "triaged")
        scope = f"WorkflowId = '{case_id}'"
        code, out, err = await _signoff("cases", "--json", "--query", scope, env=env)
        assert code == 0, err
        (row,) = [json.loads(line) for line in out.splitlines() if line.strip()]
        assert set(row) >= CASE_FIELDS and "alert_uids" not in row, row
        assert (row["case_id"], row["alert_count"]) == (case_id, 2) and row["status"] != "triage"

        code, out, err = await _signoff("cases", "--json", "--with-alerts", "--query", scope, env=env)
        assert code == 0, err
        (row,) = [json.loads(line) for line in out.splitlines() if line.strip()]
        assert set(row) >= CASE_FIELDS | {"alert_uids"}, row
        assert sorted(row["alert_uids"]) == [f"guide-{org}-11", f"guide-{org}-12"]
    await handle.terminate("test done")
