"""`signoff policy|autonomy|drift|model` against the real dev server: exit codes, JSON, recorded changes."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import yaml
from temporalio.testing import WorkflowEnvironment
from typer.testing import CliRunner

from signoff.cli import app
from signoff.worker import build_worker

runner = CliRunner()
GUIDE_SLICE = Path(__file__).parent / "data" / "guide_slice.csv"


@pytest.fixture
def cli_env(dev_env: WorkflowEnvironment, task_queue: str, tmp_path: Path, policy_file: Path,
            monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("TEMPORAL_ADDRESS", dev_env.client.service_client.config.target_host)
    monkeypatch.setenv("SIGNOFF_TASK_QUEUE", task_queue)
    monkeypatch.setenv("SIGNOFF_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("COLUMNS", "200")
    return task_queue


async def _cli(*args: str) -> tuple[int, str]:
    result = await asyncio.to_thread(runner.invoke, app, list(args))
    return result.exit_code, result.output


async def test_policy_and_autonomy_commands(dev_env: WorkflowEnvironment, cli_env: str, policy_file: Path) -> None:
    policy = yaml.safe_load(policy_file.read_text())
    policy["autonomy"]["require_evidence"] = False
    policy_file.write_text(yaml.safe_dump(policy))
    async with build_worker(dev_env.client, cli_env):
        code, out = await _cli("policy", "set-threshold", "phishing", "0.97", "--as", "alice", "--reason", "x")
        assert code == 1 and "refused" in out and "needs one of" in out
        code, out = await _cli("policy", "set-threshold", "phishing", "1.5", "--as", "carol", "--reason", "x")
        assert code != 0 and "between 0 and 1" in out
        code, out = await _cli("policy", "set-threshold", "phishing", "-0.1", "--as", "carol", "--reason", "x")
        assert code != 0 and "between 0 and 1" in out, out  # a value, not an unknown option
        code, out = await _cli("policy", "set-threshold", "phishing", "0.97", "--as", "carol", "--reason", "OOF curve")
        assert code == 0 and "0.970000" in out, out
        code, out = await _cli("policy", "set-threshold", "phishing", "0.97", "--as", "carol", "--reason", "again")
        assert code == 0 and "nothing changed" in out and "revision 1" in out, out
        code, out = await _cli("policy", "set-threshold", "malware", "policy", "--as", "carol", "--reason", "noop")
        assert code == 0 and "nothing changed" in out and "revision 1" in out, out
        code, out = await _cli("policy", "show", "--json")
        shown = json.loads(out)
        assert code == 0 and shown["alert_types"]["phishing"]["threshold"] == 0.97
        assert shown["alert_types"]["phishing"]["threshold_set_by"] == "carol"
        assert shown["governance_revision"] == 1 and shown["policy_version"] != shown["policy_file_sha256"]
        # evaluation uses the live threshold a person set, not the policy file's (none here)
        code, out = await _cli("model", "evaluate", "--data", str(GUIDE_SLICE), "--format", "guide", "--json")
        evaluated = json.loads(out.strip().splitlines()[-1])
        phishing = evaluated["thresholds_by_alert_type"]["phishing"]
        assert code == 0 and (phishing["threshold"], phishing["source"], phishing["set_by"]) == (0.97, "policy", "carol")
        assert evaluated["threshold_source"] == "mixed"  # the other alert types: the recommendation
        assert evaluated["policy_version"] == shown["policy_version"]
        assert evaluated["policy_source"].startswith("live governance") and "revision 1" in evaluated["policy_source"]

        code, out = await _cli("autonomy", "promote", "phishing", "--as", "erin", "--reason", "x")
        assert code == 1 and "needs one of" in out
        code, out = await _cli("autonomy", "promote", "phishing", "--as", "dave", "--reason", "shadow evidence")
        assert code == 0 and "on the loop" in out
        code, out = await _cli("autonomy", "status", "phishing", "--json")
        row = json.loads(out)
        assert code == 0 and row["autonomy"] == "on_the_loop" and row["threshold"] == 0.97
        assert row["evidence"]["recommendation"].startswith("not enough evidence")
        code, out = await _cli("autonomy", "demote", "--as", "bob", "--reason", "x")
        assert code != 0 and "--all" in out
        code, out = await _cli("autonomy", "demote", "--all", "--as", "bob", "--reason", "kill switch drill")
        assert code == 0 and "demoted: phishing" in out
        code, out = await _cli("policy", "revert-threshold", "phishing", "--as", "carol", "--reason", "undo")
        assert code == 0 and "(policy file)" in out
        code, out = await _cli("autonomy", "history", "--json")
        events = [json.loads(line) for line in out.splitlines()]
        assert [(e["kind"], e["by"], e["accepted"]) for e in events] == [
            ("refused", "alice", False), ("threshold", "carol", True), ("refused", "erin", False),
            ("autonomy", "dave", True), *[("autonomy", "bob", True)] * len(policy["alert_types"]),
            ("threshold", "carol", True)]
        code, out = await _cli("policy", "history", "phishing")
        assert code == 0 and "kill switch drill" in out and "OOF curve" in out


async def test_drift_check_json_and_report(dev_env: WorkflowEnvironment, cli_env: str, tmp_path: Path) -> None:
    async with build_worker(dev_env.client, cli_env):
        code, out = await _cli("drift", "check", "--json")
        assert code == 0, out
        report = json.loads(out.splitlines()[-1])
        assert report["model_id"] and report["window"] == "7d" and report["demoted"] == []
        assert report["policy_thresholds"]["feature_psi"] == 0.25
        code, out = await _cli("drift", "report", "--out", str(tmp_path / "drift.html"))
        assert code == 0 and "drift checks drawn" in out
        assert "<html>" in (tmp_path / "drift.html").read_text() or "<!doctype html>" in (tmp_path / "drift.html").read_text()


async def test_model_promote_and_rollback_go_through_governance(dev_env: WorkflowEnvironment, cli_env: str) -> None:
    from signoff.scoring import model_store

    model_id = model_store.default_model_id()
    async with build_worker(dev_env.client, cli_env):
        code, out = await _cli("model", "promote", model_id[:12], "--as", "carol", "--reason", "baseline")
        assert code == 0 and "1/2" in out, out
        code, out = await _cli("model", "promote", model_id[:12], "--as", "carol", "--reason", "again")
        assert code == 1 and "distinct" in out
        code, out = await _cli("model", "promote", model_id[:12], "--as", "dave", "--reason", "baseline", "--json")
        assert code == 0 and json.loads(out)["active"] is True
        code, out = await _cli("model", "rollback", "--as", "carol", "--reason", "compensation")
        assert code == 0 and "rolled back" in out
        code, out = await _cli("model", "rollback", "--as", "carol", "--reason", "once more")
        assert code == 1 and "no model promotion" in out
