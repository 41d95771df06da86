"""`signoff playbook diff NAME`: an edited playbook planned again for recorded cases.

The recorded cases are the shipped golden histories (tests/replay/histories), each recorded with its
playbook. Planned again with the shipped playbooks they must come out the same (the replay reproduces
what ran); an edit must show up as exactly what it changes; a case whose recorded plan the replay cannot
reproduce is listed as such, never compared.
"""

from __future__ import annotations

import asyncio
import copy
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import WorkflowHistory
from typer.testing import CliRunner

import playbooks
from playbooks import Playbook, Step, get_playbook
from playbooks.actions import QUARANTINE_EMAIL, REVOKE_SESSIONS, TAG_CASE
from policies.loader import default_policy_path, load_policy
from signoff.cli import app
from signoff.client import data_converter
from signoff.explain import explanation_from_history
from signoff.history import DecodedHistory
from signoff.playbook_what_if import case_diff, playbook_diff

HISTORIES = Path(__file__).resolve().parent / "replay" / "histories"
GOLDEN = {"phishing": "phishing", "malware_on_host": "malware_on_host", "compromised_account": "compromised_account",
          "network_intrusion": "network_intrusion", "infostealer": "infostealer", "triage_only": "triage_only"}


def _recorded() -> list[tuple[DecodedHistory, dict[str, Any]]]:
    from signoff.history import decode_history

    async def decode() -> list[DecodedHistory]:
        return [await decode_history(WorkflowHistory.from_json(n, (HISTORIES / f"{n}.json").read_text()),
                                     data_converter()) for n in GOLDEN.values()]

    return [(h, explanation_from_history(h)) for h in asyncio.run(decode())]


def _phishing_edited() -> Playbook:
    """Tag changed, note dropped, sessions revoked after the account is disabled."""
    shipped = get_playbook("phishing")
    steps = [Step("tag", TAG_CASE, {"tag": "phish-v2"}), Step("quarantine_email", QUARANTINE_EMAIL),
             *[s for s in shipped.steps if s.step_id in ("block_sender", "disable_account")],
             Step("revoke_sessions", REVOKE_SESSIONS)]
    return Playbook(name="phishing", description=shipped.description, steps=tuple(steps))


def test_the_shipped_playbooks_reproduce_every_recorded_case() -> None:
    recorded, policy = _recorded(), load_policy(default_policy_path())
    for name in GOLDEN:
        doc = playbook_diff(get_playbook(name), policy, recorded)
        assert doc["cases"] == 1 and doc["counts"]["same"] == 1, (name, doc)


def test_an_edit_is_named_step_by_step() -> None:
    doc = playbook_diff(_phishing_edited(), load_policy(default_policy_path()), _recorded())
    assert doc["counts"]["changed"] == 1
    changes = doc["rows"][0]["changes"]
    assert "adds revoke_sessions (revoke_sessions on account:replay-user, tier critical, waits for sign-off)" in changes
    assert "drops note (add_note on case:replay-phishing)" in changes
    assert "tag: params {'tag': 'phishing'} -> {'tag': 'phish-v2'}" in changes
    assert len(changes) == 3, changes


def test_a_recorded_plan_the_replay_cannot_reproduce_is_not_compared() -> None:
    h, ex = next((h, ex) for h, ex in _recorded() if ex["case_id"] == "phishing")
    altered = copy.deepcopy(ex)
    altered["final"]["steps"] = altered["final"]["steps"][:-1]  # as if an alert had arrived from elsewhere
    row = case_diff(_phishing_edited(), load_policy(default_policy_path()), h, altered)
    assert row["outcome"] == "not_reproducible" and "does not plan the steps it ran" in row["why"]


def test_cli_lists_playbooks_and_diffs_an_edit_on_exported_histories(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    exported = tmp_path / "h"
    exported.mkdir()
    for name in GOLDEN.values():
        shutil.copy(HISTORIES / f"{name}.json", exported / f"{name}.json")
    listed = CliRunner().invoke(app, ["playbook", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    docs = {d["name"]: d for d in map(json.loads, listed.output.strip().splitlines())}
    assert [(s["step_id"], s["gated"]) for s in docs["phishing"]["steps"]][-1] == ("disable_account", True)
    assert docs["phishing"]["alert_types"] == ["phishing"]

    same = CliRunner().invoke(app, ["playbook", "diff", "phishing", "--histories", str(exported), "--json"])
    assert same.exit_code == 0 and json.loads(same.output.strip().splitlines()[-1])["counts"]["same"] == 1
    monkeypatch.setitem(playbooks.PLAYBOOKS, "phishing", _phishing_edited())
    edited = CliRunner().invoke(app, ["playbook", "diff", "phishing", "--histories", str(exported)])
    assert edited.exit_code == 0, edited.output
    assert "1 would plan otherwise" in edited.output and "adds revoke_sessions" in edited.output
    unknown = CliRunner().invoke(app, ["playbook", "diff", "nope", "--histories", str(exported)])
    assert unknown.exit_code != 0 and "registered: compromised_account" in unknown.output
