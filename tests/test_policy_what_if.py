"""`signoff policy diff BASE NEW --cases/--histories`: a policy change replayed on recorded cases.

The recorded cases are the shipped golden histories (tests/replay/histories, recorded under
policies/default.yaml: alice, an analyst, approved each high-tier step alone, quorum 1). Each policy
change below must show up as what it would have done to them, and an unchanged policy as nothing.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from temporalio.client import WorkflowHistory
from typer.testing import CliRunner

from policies.loader import load_policy
from policies.what_if import what_if
from signoff.cli import app
from signoff.client import data_converter
from signoff.explain import explanation_from_history
from signoff.history import decode_history

ROOT = Path(__file__).resolve().parents[1]
HISTORIES = ROOT / "tests" / "replay" / "histories"
DEFAULT = ROOT / "policies" / "default.yaml"
GOLDEN = ("phishing", "malware_on_host", "compromised_account", "network_intrusion", "infostealer", "triage_only")


def _explanations() -> list[dict[str, Any]]:
    async def decode() -> list[Any]:
        return [await decode_history(WorkflowHistory.from_json(n, (HISTORIES / f"{n}.json").read_text()),
                                     data_converter()) for n in GOLDEN]

    return [explanation_from_history(h) for h in asyncio.run(decode())]


def _policy(tmp_path: Path, name: str, change: Any) -> Path:
    doc = yaml.safe_load(DEFAULT.read_text())
    change(doc)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _high_steps_run(exs: list[dict[str, Any]]) -> set[tuple[str, str]]:
    return {(ex["case_id"], s["step_id"]) for ex in exs for s in (ex["final"] or {}).get("steps", [])
            if s["tier"] == "high" and s["state"] in ("executed", "compensated")}


def test_unchanged_policy_changes_no_recorded_case() -> None:
    base = load_policy(DEFAULT)
    doc = what_if(base, base, _explanations())
    assert doc["cases"] == len(GOLDEN)
    assert doc["changes"] == [] and doc["cases_changed"] == 0


def test_a_higher_quorum_names_every_step_that_ran_on_one_approval(tmp_path: Path) -> None:
    exs = _explanations()
    ran = _high_steps_run(exs)
    assert len(ran) >= 5, "the golden histories should hold approved high-tier steps"

    def quorum_two(doc: dict[str, Any]) -> None:
        doc["tiers"]["high"]["quorum"] = 2

    doc = what_if(load_policy(DEFAULT), load_policy(_policy(tmp_path, "q2", quorum_two)), exs)
    flagged = {(c["case_id"], c["step"]) for c in doc["changes"] if c["kind"] == "would_not_run"}
    assert flagged == ran
    assert doc["counts"]["would_not_run"] == len(ran)
    assert all("needs 2" in c["text"] for c in doc["changes"])


def test_an_approver_losing_the_role_voids_the_approvals_they_gave(tmp_path: Path) -> None:
    def alice_is_no_analyst(doc: dict[str, Any]) -> None:
        doc["approvers"]["alice"]["roles"] = ["detection_engineer"]

    exs = _explanations()
    doc = what_if(load_policy(DEFAULT), load_policy(_policy(tmp_path, "alice", alice_is_no_analyst)), exs)
    assert {(c["case_id"], c["step"]) for c in doc["changes"]} == _high_steps_run(exs)
    assert all("'alice' has roles ['detection_engineer']" in c["text"] for c in doc["changes"])


def test_putting_an_alert_type_on_the_loop_names_the_cases_it_would_have_closed(tmp_path: Path) -> None:
    exs = _explanations()
    triage = next(ex for ex in exs if ex["case_id"].endswith("triage_only"))
    benign = triage["score"]["benign_confidence"]

    def on_the_loop(threshold: float) -> Any:
        def change(doc: dict[str, Any]) -> None:
            doc["alert_types"]["suspicious_activity"].update(autonomy="on_the_loop", threshold=threshold)
        return change

    base = load_policy(DEFAULT)
    below = what_if(base, load_policy(_policy(tmp_path, "below", on_the_loop(round(benign - 0.01, 4)))), exs)
    assert [(c["case_id"], c["kind"]) for c in below["changes"]] == [(triage["case_id"], "would_close")]
    above = what_if(base, load_policy(_policy(tmp_path, "above", on_the_loop(round(benign + 0.01, 4)))), exs)
    assert above["changes"] == []


def test_cli_replays_a_change_on_exported_histories(tmp_path: Path) -> None:
    exported = tmp_path / "histories"
    exported.mkdir()
    for name in GOLDEN:
        shutil.copy(HISTORIES / f"{name}.json", exported / f"{name}.json")

    def quorum_two(doc: dict[str, Any]) -> None:
        doc["tiers"]["high"]["quorum"] = 2

    new = _policy(tmp_path, "q2", quorum_two)
    result = CliRunner().invoke(app, ["policy", "diff", str(DEFAULT), str(new), "--histories", str(exported),
                                      "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output.strip().splitlines()[-1])
    assert doc["recorded_cases"]["cases"] == len(GOLDEN)
    assert doc["recorded_cases"]["counts"]["would_not_run"] == len(_high_steps_run(_explanations()))
    text = CliRunner().invoke(app, ["policy", "diff", str(DEFAULT), str(new), "--histories", str(exported)])
    assert text.exit_code == 0, text.output
    assert "would not have run on the approvals they had" in text.output


@pytest.mark.parametrize("bad", ["missing", "empty"])
def test_cli_says_what_to_give_when_there_are_no_histories(tmp_path: Path, bad: str) -> None:
    where = tmp_path / "h"
    if bad == "empty":
        where.mkdir()
    result = CliRunner().invoke(app, ["policy", "diff", str(DEFAULT), str(DEFAULT), "--histories", str(where)])
    assert result.exit_code != 0
    assert "temporal workflow show" in result.output


async def test_cli_replays_a_change_on_the_newest_cases_of_a_server(
        dev_env: Any, task_queue: str, policy_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A running case on the real dev server: its steps come from its `status` query (its history holds
    them only once it ends), and `--cases 1` reads that newest case only."""
    from signoff.models import ApprovalRequest, CaseStatus, CloseRequest, Verdict
    from signoff.worker import build_worker
    from tests.casekit import alert, awaiting, case_input, settle_governance, start_case, wait_for
    from workflows.case import CaseWorkflow

    client = dev_env.client
    monkeypatch.setenv("TEMPORAL_ADDRESS", client.service_client.config.target_host)
    monkeypatch.setenv("SIGNOFF_TASK_QUEUE", task_queue)
    monkeypatch.setenv("SIGNOFF_HOME", str(tmp_path / "home"))
    new = _policy(tmp_path, "q2", lambda doc: doc["tiers"]["high"].update(quorum=2))
    async with build_worker(client, task_queue):
        inp = case_input(alert_type="malware")
        handle = await start_case(client, task_queue, inp, alert("w1", ("host", f"h-{inp.case_id}"),
                                                                 ("account", f"u-{inp.case_id}"), category="Malware"))
        await wait_for(handle, awaiting("isolate_host"), "isolate_host waiting", attempts=600)
        await handle.execute_update(CaseWorkflow.approve, ApprovalRequest(step="isolate_host", approver="alice",
                                                                          reason="beaconing"))
        await wait_for(handle, awaiting("disable_account"), "disable_account waiting", attempts=600)
        await handle.execute_update(CaseWorkflow.approve, ApprovalRequest(step="disable_account", approver="bob",
                                                                          reason="creds on host"))
        await wait_for(handle, lambda v: v.status == CaseStatus.contained, "contained", attempts=600)

        result = await asyncio.to_thread(CliRunner().invoke, app, ["policy", "diff", str(DEFAULT), str(new),
                                                                  "--cases", "1", "--json"])
        assert result.exit_code == 0, result.output
        doc = json.loads(result.output.strip().splitlines()[-1])["recorded_cases"]
        assert doc["cases"] == 1
        assert {(c["case_id"], c["step"], c["kind"]) for c in doc["changes"]} == {
            (inp.case_id, "isolate_host", "would_not_run"), (inp.case_id, "disable_account", "would_not_run")}
        await handle.execute_update(CaseWorkflow.close, CloseRequest(analyst="carol", verdict=Verdict.true_positive,
                                                                     reason="confirmed"))
        await handle.result()
        await settle_governance(client, task_queue)
