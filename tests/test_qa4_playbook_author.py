"""QA pass 4 (a playbook author following docs/playbooks.md): recording a replay history.

`python -m tests.replay.record_histories --playbook NAME` approves every gated step of the case it
records, irreversible ones included. It kept `$SIGNOFF_HOME` when set (so it wrote into the
operator's lab) and used whatever backends `SIGNOFF_BACKENDS` named, which would have run those
approvals (session revocations, account disables) against real vendors. It now always records
against the lab estate in a throwaway home, and gives the environment back as it found it.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from tests.replay import record_histories
from workflows.case import CaseWorkflow


async def test_recording_never_uses_the_operators_home_or_backends(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    operator_home = tmp_path / "operator-home"
    monkeypatch.setenv("SIGNOFF_HOME", str(operator_home))
    # A shell set up as docs/connectors.md shows: these vendors are not reachable (nor configured) here,
    # so using them fails the recording; what must happen is that they are not used at all.
    monkeypatch.setenv("SIGNOFF_BACKENDS", "revoke_sessions=graph,disable_account=okta")
    monkeypatch.setenv("SIGNOFF_DEFAULT_BACKEND", "nowhere")
    out = tmp_path / "histories"
    out.mkdir()
    fixture = record_histories.derive_fixture("compromised_account")
    with caplog.at_level(logging.WARNING, logger="temporalio.activity"):
        written = await record_histories.record(out, {"compromised_account": fixture}, force=False)

    assert [p.name for p in written] == ["compromised_account.json"]
    history = WorkflowHistory.from_json("replay-compromised_account", written[0].read_text())
    replayed = await Replayer(workflows=[CaseWorkflow], data_converter=pydantic_data_converter).replay_workflow(history)
    assert replayed.replay_failure is None
    # The operator's lab was never touched (no lab created there, or no replay objects in it).
    lab_db = operator_home / "lab.db"
    if lab_db.exists():
        with sqlite3.connect(lab_db) as db:
            assert db.execute("SELECT kind, id FROM objects WHERE id LIKE 'replay-%'").fetchall() == []
    # The environment is given back as it was.
    import os

    assert os.environ["SIGNOFF_HOME"] == str(operator_home)
    assert os.environ["SIGNOFF_BACKENDS"] == "revoke_sessions=graph,disable_account=okta"
    assert os.environ["SIGNOFF_DEFAULT_BACKEND"] == "nowhere"
    # The expected failure of a server without visibility is not a page of tracebacks for the author.
    assert not [r for r in caplog.records if "'other_holders'" in r.getMessage()], caplog.text
