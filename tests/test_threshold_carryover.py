"""A threshold stays when the model changes: `signoff model promote|rollback` say what it now means.

Lead-pass finding (lead12): a threshold set from model A's recommendation for a 0.5% risk budget was
applied to model B after `model promote` without a word, although on B's out-of-fold predictions the
same value closed a true positive and its 95% bound was over the budget. Real dev server, a small
real model trained on the committed GUIDE slice, the shipped default model as the outgoing one.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest
from temporalio.testing import WorkflowEnvironment
from typer.testing import CliRunner

from signoff.autonomy.client import signal_verdict
from signoff.cli import app
from signoff.models import Verdict
from signoff.scoring import metrics, model_store
from tests.autonomykit import split, train_small
from tests.test_governance import _record, _state_with, trusting_worker

runner = CliRunner()


@pytest.fixture
def cli_env(dev_env: WorkflowEnvironment, task_queue: str, tmp_path: Path, policy_file: Path,
            monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("TEMPORAL_ADDRESS", dev_env.client.service_client.config.target_host)
    monkeypatch.setenv("SIGNOFF_TASK_QUEUE", task_queue)
    monkeypatch.setenv("SIGNOFF_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("COLUMNS", "400")
    return task_queue


async def _cli(*args: str) -> tuple[int, str]:
    result = await asyncio.to_thread(runner.invoke, app, list(args))
    return result.exit_code, result.output


def _at(model_id: str, threshold: float) -> tuple[int, int, float]:
    oof = model_store.read_manifest(model_id)["oof"]
    benign, is_tp = np.asarray(oof["benign_confidence"]), np.asarray(oof["true_positive"], dtype=bool)
    k, n = int(((benign >= threshold) & is_tp).sum()), int(is_tp.sum())
    return k, n, metrics.clopper_pearson_upper(k, n)


async def test_promote_and_rollback_say_what_the_thresholds_in_force_mean_on_the_incoming_model(
    dev_env: WorkflowEnvironment, cli_env: str
) -> None:
    train, _ = split()
    small = await asyncio.to_thread(train_small, train, 7, 30)
    shipped = model_store.default_model_id()
    threshold = 0.992997  # the shipped model's recommendation for 0.5% (docs/scoring.md)
    small_k, small_n, small_upper = _at(small, threshold)
    shipped_k, shipped_n, shipped_upper = _at(shipped, threshold)
    assert small_upper > 0.005 >= shipped_upper  # the line that keeps the budget on one model breaks it on the other

    client = dev_env.client
    async with trusting_worker(client, cli_env):
        code, out = await _cli("policy", "set-threshold", "phishing", str(threshold), "--as", "carol",
                               "--reason", "0.5% budget, shipped model")
        assert code == 0, out
        # shadow-mode evidence gathered while the shipped model scored
        for i, benign in enumerate((0.999, 0.998, 0.5)):
            await signal_verdict(client, _record(f"ev{i}", Verdict.benign_positive, benign, Verdict.benign_positive,
                                                 t=threshold), cli_env)
        await _state_with(client, cli_env, lambda s: len(s.recent.get("phishing", ())) == 3, "3 verdicts")
        code, out = await _cli("autonomy", "status", "phishing")
        assert code == 0 and "model changed" not in out, out
        # drift cases are never automated: no advice to set a threshold for them
        code, out = await _cli("autonomy", "status", "model_drift")
        assert code == 0 and "set-threshold" not in out and "always go to a person" in out, out
        code, out = await _cli("model", "promote", small[:12], "--as", "carol", "--reason", "retrained")
        assert code == 0 and "1/2" in out, out
        assert "if it is activated: phishing" in out and f"{small_k}/{small_n} true positives" in out, out
        code, out = await _cli("model", "promote", small[:12], "--as", "dave", "--reason", "agree", "--json")
        doc = json.loads(out.strip().splitlines()[-1])
        assert code == 0 and doc["active"], out
        (note,) = [n for n in doc["threshold_notes"] if n.startswith("phishing")]
        assert f"keeps threshold {threshold:.6f} (set by carol)" in note
        assert f"On {small[:12]} it closes" in note and f"95% upper bound {small_upper:.2%}" in note
        assert f"on {shipped[:12]} it closes" in note and f"{shipped_k}/{shipped_n} true positives" in note
        assert "over the risk budget 0.50%" in note
        assert not any(n.startswith("malware") for n in doc["threshold_notes"])  # no threshold there: nothing to say
        # the shadow evidence is about the model that scored those cases, not the one now in force
        code, out = await _cli("autonomy", "status", "phishing", "--json")
        row = json.loads(out.strip().splitlines()[-1])
        assert code == 0 and row["reviewed_before_model_change"] == 3 and row["model_changed"]["model"] == small
        code, out = await _cli("autonomy", "status", "phishing")
        assert "model changed" in out and f"to {small[:12]} by dave): 3 of these 3 reviewed cases" in out, out

        code, out = await _cli("model", "rollback", "--as", "dave", "--reason", "back")
        assert code == 0 and f"now active in this machine's model store: {shipped[:12]}" in out, out
        assert f"On {shipped[:12]} it closes" in out and "It is " in out and "own threshold for 0.50%" in out, out
        assert "over the risk budget" not in out
