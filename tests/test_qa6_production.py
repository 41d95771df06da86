"""QA pass 6 (a SOC lead taking Signoff to production with deploy/policy.example.yaml): each test
failed before its fix."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from temporalio.testing import WorkflowEnvironment
from typer.testing import CliRunner

from signoff.cli import app
from signoff.worker import build_worker

runner = CliRunner()
EXAMPLE_POLICY = Path(__file__).parent.parent / "deploy" / "policy.example.yaml"


async def test_refused_close_and_rollback_signals_are_not_exported_as_taken(
    dev_env: WorkflowEnvironment, task_queue: str, policy_file: Path
) -> None:
    """QA6: an unsigned close signal the case refused was exported as `feedback` (a verdict), and a
    refused rollback signal to an open case as a `rollback` request; the explain timeline listed both
    as if they had been taken."""
    from signoff.audit import case_events
    from signoff.explain import explanation_from_history
    from signoff.history import decode_history
    from signoff.models import CloseRequest, Verdict
    from tests.casekit import alert, awaiting, case_input, start_case, wait_for
    from workflows.case import CaseWorkflow

    client = dev_env.client
    async with build_worker(client, task_queue):
        inp = case_input(alert_type="malware")
        handle = await start_case(client, task_queue, inp,
                                  alert("m1", ("host", f"host-{inp.case_id}"), category="Malware"))
        await wait_for(handle, awaiting("isolate_host"), "isolate_host waiting")
        await handle.signal("close_signal", {"analyst": "mallory", "verdict": "FalsePositive", "reason": "let me"})
        await handle.signal("rollback_signal", {"requested_by": "mallory", "reason": "undo it"})
        await wait_for(handle, lambda v: sum(r.approver == "mallory" for r in v.refusals) == 2, "refusals kept")
        open_history = await decode_history(await handle.fetch_history(), client.data_converter, source="live")
        await handle.execute_update(CaseWorkflow.close, CloseRequest(analyst="alice", verdict=Verdict.benign_positive,
                                                                     reason="admin tool"))
        await handle.result()
        closed_history = await decode_history(await handle.fetch_history(), client.data_converter, source="live")

    # Open case, history alone: what the case made of the signals is unknown, and said so.
    mine = [e["kind"] for e in case_events(open_history) if e["actor"] == "mallory"]
    assert sorted(mine) == ["close_signal_undetermined", "rollback_signal_undetermined"], mine
    # Closed case: its final state says both were refused, and why.
    events = [e for e in case_events(closed_history) if e["actor"] == "mallory"]
    assert sorted((e["kind"], e["detail"]["decision"]) for e in events) == [("refusal", "close"), ("refusal", "rollback")]
    assert all(e["detail"]["refusal"] for e in events), events
    assert [e["kind"] for e in case_events(closed_history) if e["kind"] == "feedback"] == ["feedback"]
    timeline = [t["what"] for t in explanation_from_history(closed_history)["timeline"]]
    assert any(w.startswith("verdict FalsePositive by mallory") and "(refused" in w for w in timeline), timeline
    assert any(w.startswith("rollback requested by mallory") and "(refused" in w for w in timeline), timeline


def test_policy_show_file_checks_a_policy_without_a_cluster(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """QA6: docs/deployment.md says "check a policy before deploying it: signoff policy show", but that
    needed a reachable Temporal and a running worker (30 s, then "no poller seen"), and it never showed
    what a production policy is about: signed approvals, who may approve (and who has no key yet),
    the verdict SLA and the rollback window."""
    import json

    monkeypatch.setenv("SIGNOFF_POLICY", str(EXAMPLE_POLICY))
    monkeypatch.setenv("TEMPORAL_ADDRESS", "127.0.0.1:1")  # nothing listens there
    monkeypatch.setenv("SIGNOFF_HOME", str(tmp_path))
    monkeypatch.setenv("COLUMNS", "200")
    result = runner.invoke(app, ["policy", "show", "--file"])
    assert result.exit_code == 0, result.output
    assert "unsigned approvals: refused" in result.output, result.output
    assert "lead-1" in result.output and "NO public key" in result.output, result.output
    assert "verdict SLA" in result.output and "critical 1h" in result.output, result.output
    assert "rollback window 7d" in result.output, result.output
    assert "live governance state not read" in result.output, result.output
    result = runner.invoke(app, ["policy", "show", "--file", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["deployment"]["trust_unsigned_approvals"] is False
    assert doc["approvers"]["lead-1"] == {"roles": ["lead"], "public_key": None, "slack_user": None}
    assert doc["verdict_sla"]["critical"] == "1h" and doc["rollback_window"] == "7d"
    assert doc["governance_revision"] is None and doc["policy_version"] is None


def test_policy_show_without_a_worker_says_how_to_check_the_file(monkeypatch: pytest.MonkeyPatch,
                                                                   tmp_path: Path) -> None:
    """QA6: without a reachable cluster, `policy show` ended with the connection error alone."""
    monkeypatch.setenv("SIGNOFF_POLICY", str(EXAMPLE_POLICY))
    monkeypatch.setenv("TEMPORAL_ADDRESS", "127.0.0.1:1")
    monkeypatch.setenv("SIGNOFF_HOME", str(tmp_path))
    result = runner.invoke(app, ["policy", "show"])
    assert result.exit_code == 1, result.output
    assert "signoff policy show --file" in result.output, result.output


def test_keys_show_prints_a_line_that_pastes_into_the_policy(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """QA6: `signoff keys show` printed `alice public_key: KEY`, which is not YAML for `approvers:`
    (docs/deployment.md: "the public key line, for the policy PR")."""
    monkeypatch.setenv("SIGNOFF_HOME", str(tmp_path))
    created = runner.invoke(app, ["keys", "create", "--as", "alice", "--roles", "lead,ir_manager"])
    assert created.exit_code == 0, created.output
    shown = runner.invoke(app, ["keys", "show", "--as", "alice", "--roles", "lead,ir_manager"])
    assert shown.exit_code == 0, shown.output
    line = shown.stdout.strip()
    parsed = yaml.safe_load(line)
    assert parsed == yaml.safe_load(created.stdout.strip()), (line, created.stdout)
    assert set(parsed["alice"]) == {"roles", "public_key"} and parsed["alice"]["roles"] == ["lead", "ir_manager"]


def test_an_encrypted_payload_without_the_codec_key_says_what_to_set(monkeypatch: pytest.MonkeyPatch,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """QA6: an analyst's machine without the deployment's codec key got
    `error: Unknown payload encoding binary/encrypted` from show / approve, and nothing else."""
    import typer

    from signoff.cli._common import run

    async def decode_fails() -> None:
        raise KeyError("Unknown payload encoding binary/encrypted")

    monkeypatch.delenv("SIGNOFF_CODEC_KEY", raising=False)
    monkeypatch.delenv("SIGNOFF_CODEC_KEY_FILE", raising=False)
    monkeypatch.setenv("COLUMNS", "400")
    with pytest.raises(typer.Exit) as exit_info:
        run(decode_fails())
    assert exit_info.value.exit_code == 1
    printed = capsys.readouterr().err
    assert "binary/encrypted" in printed and "SIGNOFF_CODEC_KEY_FILE" in printed, printed
    assert "docs/deployment.md" in printed, printed


def test_time_to_verdict_judges_each_case_by_the_sla_it_decided_under() -> None:
    """QA6: with the workers on a policy whose medium SLA was 1m, 77 cases escalated as overdue and
    `signoff cases --overdue` listed them, while `signoff governance report` on an operator machine
    with the production file (24h) said "0 past due" (and 360 "past due" with the 1m file)."""
    from datetime import UTC, datetime, timedelta

    from policies.loader import load_policy
    from signoff.governance_report import _time_to_verdict

    now = datetime(2026, 11, 29, 4, 0, tzinfo=UTC)

    def open_case(minutes_ago: int, sla: dict[str, str] | None) -> dict[str, object]:
        return {"decision": {"kind": "analyst"}, "opened_at": (now - timedelta(minutes=minutes_ago)).isoformat(),
                "case": {"severity": "medium"}, "escalations": [], "verdicts": [], "workflow_status": "running",
                "governance": None if sla is None else {"verdict_sla": sla}}

    production = load_policy(EXAMPLE_POLICY)  # medium: 24h
    cases = [open_case(10, {"medium": "1m"}), open_case(10, {"medium": "24h"}), open_case(10, None)]
    (medium,) = _time_to_verdict(cases, production, now)
    assert (medium["open"], medium["open_overdue"]) == (3, 1), medium
    assert medium["sla"] == "1m / 24h (by the policy each case decided under)", medium
    (medium,) = _time_to_verdict(cases[1:], production, now)
    assert medium["sla"] == "24h" and medium["open_overdue"] == 0, medium


def test_dev_says_which_policy_runs_and_how_to_read_encrypted_payloads(monkeypatch: pytest.MonkeyPatch,
                                                                       tmp_path: Path) -> None:
    """QA6: `signoff dev` on the production policy with a codec key said neither that unsigned
    approvals are refused nor that the `temporal` CLI needs the codec server (refusals then read
    `Encoded failure`)."""
    from signoff.cli.run import dev_banner

    key = tmp_path / "codec_key"
    key.write_text("A" * 43 + "=")
    monkeypatch.setenv("SIGNOFF_POLICY", str(EXAMPLE_POLICY))
    monkeypatch.setenv("SIGNOFF_CODEC_KEY_FILE", str(key))
    monkeypatch.delenv("SIGNOFF_CODEC_KEY", raising=False)
    lines = dev_banner("127.0.0.1:7233")
    assert str(EXAMPLE_POLICY) in lines[0] and "unsigned approvals refused" in lines[0], lines
    assert len(lines) == 2 and "--codec-endpoint http://127.0.0.1:" in lines[1], lines
    monkeypatch.delenv("SIGNOFF_CODEC_KEY_FILE")
    monkeypatch.delenv("SIGNOFF_POLICY")
    lines = dev_banner("127.0.0.1:7233")
    assert len(lines) == 1 and "counted (lab)" in lines[0], lines
