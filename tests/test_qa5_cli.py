"""QA5: a newcomer following README.md, docs/autonomy.md and docs/auditors.md on the demo's cases.

Each test is one finding: what the command did, and what the docs promise (every command: clear
errors that say what to do next, no tracebacks; `signoff show` says what a case waits for).
Real dev server and worker where a case is involved.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment
from typer.testing import CliRunner

from signoff.alertstore import AlertStore
from signoff.ingest import ingest_path
from signoff.models import CaseStatus, CloseRequest, RollbackRequest, Verdict
from signoff.worker import build_worker
from tests.casekit import wait_for
from tests.test_qa_ingest_listing import _env, _guide_csv, _row, _signoff, _unique_org
from workflows.case import CaseWorkflow


async def test_close_of_an_unknown_case_says_how_to_find_the_id(
        dev_env: WorkflowEnvironment, task_queue: str, tmp_path: Path) -> None:
    """`signoff close guide-nope ...` said only "no case guide-nope on this server: workflow not found",
    where approve, reject, rollback and show say which server and how to find the id."""
    env = _env(dev_env, task_queue, tmp_path / "home")
    code, out, err = await _signoff("close", "guide-nope-1", "--as", "alice", "--verdict", "FalsePositive",
                                    "--reason", "typo in the id", env=env)
    assert code == 1, out
    assert "no case 'guide-nope-1'" in err and "signoff cases" in err, err


async def test_reports_written_to_a_directory_fail_in_one_line(
        dev_env: WorkflowEnvironment, task_queue: str, tmp_path: Path) -> None:
    """`signoff audit export --out DIR`, `signoff governance report --html DIR` (and `signoff drift report
    --out DIR`) ended in an IsADirectoryError traceback; the export only after reading every history."""
    env = _env(dev_env, task_queue, tmp_path / "home")
    folder = tmp_path / "reports"
    folder.mkdir()
    code, out, err = await _signoff("audit", "export", "--out", str(folder), env=env)
    assert code == 1 and "Traceback" not in err, err
    assert "is a directory" in err and "trail.jsonl" in err, err
    assert "reading every case" not in err  # refused before the (long) read, not after it

    code, out, err = await _signoff("governance", "report", "--html", str(folder), env=env)
    assert code == 1 and "Traceback" not in err, err
    assert str(folder) in err and "give a file path, not a directory" in err, err


def test_model_list_shows_ids_a_person_can_copy(monkeypatch: pytest.MonkeyPatch, signoff_home: Path) -> None:
    """`signoff model list | less` (or any pipe) cut the model id to "dd959b71a…": the id
    `signoff model promote ID` needs could not be read off the table (the module had its own 80-column
    console, unlike every other command)."""
    from signoff.cli.model import app
    from signoff.scoring import model_store

    monkeypatch.delenv("COLUMNS", raising=False)
    result = CliRunner().invoke(app, ["list"])
    assert result.exit_code == 0, result.output
    for model in model_store.list_models():
        assert model.model_id[:16] in result.output, result.output


async def test_show_after_a_rollback_says_the_case_waits_for_a_verdict(
        dev_env: WorkflowEnvironment, task_queue: str, tmp_path: Path) -> None:
    """README: approve, rollback, then close. After the rollback `signoff show` said nothing about the
    verdict the case still waits for (it closes itself without one, and the model gets no feedback)."""
    client = dev_env.client
    org = _unique_org()
    case = f"guide-{org}-1"
    data = _guide_csv(tmp_path / "alerts.csv", [_row(org, 1, 11, 1)])
    store = AlertStore(tmp_path / "alerts.db")
    env = _env(dev_env, task_queue, tmp_path / "home")
    async with build_worker(client, task_queue):
        await ingest_path(client, data, "guide", store=store, task_queue=task_queue)
        handle = client.get_workflow_handle_for(CaseWorkflow.run, case)
        await wait_for(handle, lambda v: v.status != CaseStatus.triage, "triaged", attempts=600)
        await handle.execute_update(CaseWorkflow.rollback, RollbackRequest(requested_by="carol", reason="fp"))
        await wait_for(handle, lambda v: v.status == CaseStatus.rolled_back, "rolled back")

        code, out, err = await _signoff("show", case, env=env)
        assert code == 0, err
        assert "waiting for an analyst's verdict" in out and f"signoff close {case}" in out, out

        await handle.execute_update(CaseWorkflow.close, CloseRequest(analyst="alice", verdict=Verdict.false_positive,
                                                                     reason="newsletter"))
        await handle.result()
        code, out, err = await _signoff("show", case, env=env)
        assert code == 0, err
        assert "waiting for an analyst's verdict" not in out and "verdict: FalsePositive by alice" in out, out

        # Closed: a rollback said only "case ... is not open: workflow execution already completed".
        code, out, err = await _signoff("rollback", case, "--as", "carol", "--reason", "too late", env=env)
        assert code == 1, out
        assert "can no longer be rolled back" in err and f"signoff explain {case}" in err, err
    store.close()


def test_demo_says_when_it_uses_a_server_it_did_not_start(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A second `signoff demo` with another SIGNOFF_HOME (or while someone else's server listens on the
    port) printed "starting the embedded Temporal dev server (state in HOME)" and used that server."""
    from signoff.cli import run

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        run._say_which_server(tmp_path, port)
    said = capsys.readouterr().err
    assert "starting the embedded" not in said
    assert f"already listening at 127.0.0.1:{port}" in said and f"not started from {tmp_path}" in said, said


async def test_a_signed_decision_refused_for_want_of_a_public_key_says_what_to_do(
        dev_env: WorkflowEnvironment, task_queue: str, tmp_path: Path) -> None:
    """`signoff keys create --as carol`, then `signoff rollback CASE --as carol`: refused "no public key for
    'carol' in policy" and nothing more; the person is not told to put the key in the policy or set it aside."""
    client = dev_env.client
    org = _unique_org()
    case = f"guide-{org}-1"
    store = AlertStore(tmp_path / "alerts.db")
    env = _env(dev_env, task_queue, tmp_path / "home")
    code, out, err = await _signoff("keys", "create", "--as", "carol", env=env)
    assert code == 0, err
    async with build_worker(client, task_queue):
        await ingest_path(client, _guide_csv(tmp_path / "a.csv", [_row(org, 1, 11, 1)]), "guide", store=store,
                          task_queue=task_queue)
        handle = client.get_workflow_handle_for(CaseWorkflow.run, case)
        await wait_for(handle, lambda v: v.status != CaseStatus.triage, "triaged", attempts=600)
        code, out, err = await _signoff("rollback", case, "--as", "carol", "--reason", "fp", env=env)
        assert code == 1, out
        assert "no public key for 'carol'" in err, err
        assert "signoff keys show --as carol" in err and "carol.ed25519" in err, err
        await handle.terminate("test over")
    store.close()


async def test_model_list_stars_the_model_live_governance_has_active(
        dev_env: WorkflowEnvironment, task_queue: str, tmp_path: Path, policy_file: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/autonomy.md: `signoff model promote` twice, then `signoff model list` shows which model is active.
    Run from another working directory (another model store), the table starred that store's record, not the
    model the live governance state had active, which is the one cases score with (and which `signoff model
    evaluate` already uses)."""
    import asyncio

    from signoff.cli import app as cli
    from signoff.scoring import model_store
    from signoff.scoring.artifact import sha256

    def invoke(*args: str) -> tuple[int, str]:
        result = CliRunner().invoke(cli, list(args))
        return result.exit_code, result.output

    monkeypatch.setenv("TEMPORAL_ADDRESS", dev_env.client.service_client.config.target_host)
    monkeypatch.setenv("SIGNOFF_TASK_QUEUE", task_queue)
    monkeypatch.setenv("SIGNOFF_HOME", str(tmp_path / "workers"))
    default_id = model_store.default_model_id()
    async with build_worker(dev_env.client, task_queue):
        for who in ("carol", "dave"):
            code, out = await asyncio.to_thread(invoke, "model", "promote", default_id[:12], "--as", who,
                                                "--reason", "baseline")
            assert code == 0, out

    # Another directory: its own model store, where another model was once promoted by hand.
    monkeypatch.setenv("SIGNOFF_HOME", str(tmp_path / "elsewhere"))
    blob = (model_store.default_dir() / model_store.ARTIFACT).read_bytes() + b"\n"
    variant = sha256(blob)
    (model_store.store_dir() / variant).mkdir(parents=True)
    (model_store.store_dir() / variant / model_store.ARTIFACT).write_bytes(blob)
    model_store.promote(variant, "carol", "an old local experiment")

    code, out = await asyncio.to_thread(invoke, "model", "list", "--json")
    assert code == 0, out
    rows = [line for line in out.splitlines() if line.startswith("{")]
    active = {json.loads(line)["model_id"] for line in rows if json.loads(line)["active"]}
    assert active == {default_id}, out
