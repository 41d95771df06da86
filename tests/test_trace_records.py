"""Governance promise 3 for two records: the feature vector a case was scored on (not only its hash),
and who trained a model, when and why.

The case path runs on the real Temporal dev server (the export lists workflows through its visibility): a case scored by the workflow, then
explained and exported; the recorded vector decodes, hashes to the recorded feature_hash, and the
model re-scores it to the recorded probabilities bit for bit.
"""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer
from typer.testing import CliRunner

from signoff.audit import chain, model_artifact_events, verify_lines
from signoff.explain import explanation_from_history, render_explanation
from signoff.history import decode_history
from signoff.models import ScoreResult
from signoff.scoring import model_store
from signoff.scoring.features import FEATURE_NAMES
from signoff.scoring.scorer import Scorer
from signoff.worker import build_worker
from tests.auditkit import PATIENCE, acli, address_of
from tests.casekit import alert, awaiting, case_input, start_case, wait_for
from workflows.case import CaseWorkflow

SLICE = Path(__file__).parent / "data" / "guide_slice.csv"
OLD_HISTORY = Path(__file__).parent / "replay" / "histories" / "before-faster-triage" / "malware_on_host.json"


def _last_json(output: str) -> dict:
    return json.loads(output.strip().splitlines()[-1])


async def test_a_scored_case_records_its_feature_vector_and_the_model_rescores_it_bit_for_bit(
    dev_env: WorkflowEnvironment, task_queue: str, tmp_path: Path
) -> None:
    client = dev_env.client
    inp = case_input(alert_type="malware")
    async with build_worker(client, task_queue):
        handle = await start_case(client, task_queue, inp, alert(
            "fv1", ("host", f"host-{inp.case_id}"), ("account", f"user-{inp.case_id}"),
            title="Trojan beaconing to C2", category="Malware"))
        view = await wait_for(handle, awaiting("isolate_host"), "scored; isolate_host waiting", attempts=PATIENCE)
        explained = await acli(address_of(client), "explain", inp.case_id, "--json")
        listed = await acli(address_of(client), "explain", inp.case_id, "--features", env={"COLUMNS": "400"})
        trail = tmp_path / "trail.jsonl"
        exported = await acli(address_of(client), "audit", "export", "--out", str(trail), "--json")
        await handle.terminate("test over")
        history = await handle.fetch_history()
    assert explained.exit_code == 0, explained.output
    assert listed.exit_code == 0, listed.output
    assert exported.exit_code == 0, exported.output

    # The score the workflow recorded carries the vector; it decodes and hashes to feature_hash.
    recorded = view.score
    assert recorded is not None and recorded.feature_vector
    raw = base64.b64decode(recorded.feature_vector, validate=True)
    assert len(raw) == 4 * len(FEATURE_NAMES)
    assert hashlib.sha256(raw).hexdigest() == recorded.feature_hash
    x = np.frombuffer(raw, dtype="<f4").reshape(1, -1)
    scorer = Scorer.load(recorded.model_id)
    # It is the vector of the case's alerts (not merely some vector with the right hash) ...
    assert np.ascontiguousarray(scorer.features(view.timeline), dtype="<f4").tobytes() == raw
    # ... and the model gives the recorded probabilities from it, bit for bit, and the same whole record.
    probs = scorer.probabilities(x.astype(np.float32))[0]
    assert {c: float(probs[i]) for i, c in enumerate(("TruePositive", "BenignPositive", "FalsePositive"))} \
        == recorded.probabilities
    assert scorer.rescore(recorded.feature_vector) == recorded

    # `signoff explain --json`: the vector, its check, and every non-zero feature by name.
    score = _last_json(explained.output)["score"]
    assert score["feature_vector"] == recorded.feature_vector and score["feature_schema"] == recorded.feature_schema
    assert score["feature_vector_check"] == "matches"
    nonzero = {FEATURE_NAMES[i]: float(v) for i, v in enumerate(x[0]) if v != 0.0}
    assert {f["feature"]: f["value"] for f in score["features"]} == nonzero and nonzero
    shown = {f["feature"]: f["contribution"] for f in score["features"] if f["contribution"] is not None}
    assert shown == {c.feature: c.contribution for c in recorded.contributions if c.value != 0.0}
    # `signoff explain --features`: the same, for people.
    text = listed.output
    assert "Feature vector: recorded, hashes to feature_hash" in text
    for name, value in nonzero.items():
        assert f"{name} = {value:.9g}" in text, name

    # The audit export's decision carries the vector; verify checks it against the feature_hash.
    lines = trail.read_text().splitlines()
    records = [json.loads(line) for line in lines]
    [decision] = [r for r in records if r["kind"] == "decision" and r["workflow_id"] == inp.case_id]
    assert decision["detail"]["feature_vector"] == recorded.feature_vector
    assert decision["detail"]["feature_hash"] == recorded.feature_hash
    assert decision["detail"]["feature_schema"] == recorded.feature_schema
    assert "vector_mismatch" not in {i.problem for i in verify_lines(lines).issues}
    # A vector swapped for another case's and the whole chain recomputed: every hash checks, the vector does not.
    other = np.array(x, copy=True)
    other[0, 0] += 1.0
    header = {k: v for k, v in records[0].items() if k not in ("seq", "kind", "prev", "hash")}
    events = [{k: v for k, v in r.items() if k not in ("seq", "prev", "hash")} for r in records[1:-1]]
    for e in events:
        if e["kind"] == "decision" and e["workflow_id"] == inp.case_id:
            e["detail"]["feature_vector"] = base64.b64encode(other.astype("<f4").tobytes()).decode()
    forged = [json.dumps(r) for r in chain(events, header)]
    problems = [i for i in verify_lines(forged).issues if i.problem == "vector_mismatch"]
    assert len(problems) == 1 and "does not hash to its feature_hash" in problems[0].message

    # The history with the vector in it replays against the workflow code.
    replayed = await Replayer(workflows=[CaseWorkflow], data_converter=pydantic_data_converter).replay_workflow(history)
    assert replayed.replay_failure is None


async def test_a_score_recorded_before_the_vector_was_kept_still_decodes_and_says_so() -> None:
    from temporalio.client import WorkflowHistory

    history = WorkflowHistory.from_json("old-malware", OLD_HISTORY.read_text())
    ex = explanation_from_history(await decode_history(history, pydantic_data_converter, source="recorded"))
    score = ex["score"]
    assert score["feature_hash"] and score["feature_vector"] == "" and score["feature_schema"] == ""
    assert score["feature_vector_check"] == "not recorded" and score["features"] == []
    assert "Feature vector: not recorded (scored before Signoff kept the vector" in render_explanation(ex, features=True)
    old = ScoreResult.model_validate({"model_id": "m", "feature_hash": "h", "probabilities": {}, "predicted": "TruePositive",
                                      "confidence": 0.5, "benign_confidence": 0.5})
    assert old.feature_vector == "" and old.feature_schema == ""


@pytest.fixture()
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SIGNOFF_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TEMPORAL_ADDRESS", "127.0.0.1:1")  # no server: list falls back to the store's record
    return tmp_path / "home"


def test_model_train_records_who_when_and_why_outside_the_model_id(home: Path, tmp_path: Path) -> None:
    from signoff.cli.model import app

    small = tmp_path / "small.csv"  # a small slice: two trainings in seconds
    small.write_text("\n".join(SLICE.read_text().splitlines()[:201]) + "\n")
    runner = CliRunner()
    first = runner.invoke(app, ["train", "--data", str(small), "--format", "guide", "--jobs", "1", "--json",
                                "--as", "alice", "--reason", "quarterly refresh on new GUIDE data"])
    assert first.exit_code == 0, first.output
    summary = _last_json(first.stdout)
    model_id = summary["model_sha256"]
    folder = model_store.store_dir() / model_id
    artifact = (folder / model_store.ARTIFACT).read_bytes()
    manifest = json.loads((folder / model_store.MANIFEST).read_text())
    assert (manifest["trained_by"], manifest["trained_by_from"], manifest["reason"]) == (
        "alice", "--as", "quarterly refresh on new GUIDE data")
    assert datetime.fromisoformat(manifest["trained_at"]).utcoffset() is not None
    assert summary["trained_by"] == "alice" and summary["trained_at"] == manifest["trained_at"]
    assert "trained_by" not in json.loads(artifact) and hashlib.sha256(artifact).hexdigest() == model_id

    # The same data and seed trained again, without --as: the same bytes and id; the first record stands.
    again = runner.invoke(app, ["train", "--data", str(small), "--format", "guide", "--jobs", "1", "--json"])
    assert again.exit_code == 0, again.output
    assert _last_json(again.stdout)["model_sha256"] == model_id
    assert (folder / model_store.ARTIFACT).read_bytes() == artifact
    kept = json.loads((folder / model_store.MANIFEST).read_text())
    assert {k: kept[k] for k in ("trained_by", "reason", "trained_at")} == {
        k: manifest[k] for k in ("trained_by", "reason", "trained_at")}
    [later] = kept["trained_again"]
    assert later["trained_by_from"] == "local OS account" and later["trained_at"] >= manifest["trained_at"]

    # `signoff model list` says who trained each model; the shipped default's attribution is stated as such.
    listed = runner.invoke(app, ["list", "--json"])
    assert listed.exit_code == 0, listed.output
    rows = {r["model_id"]: r for r in map(json.loads, listed.stdout.strip().splitlines())}
    assert rows[model_id]["trained_by"] == "alice" and rows[model_id]["reason"] == "quarterly refresh on new GUIDE data"
    [shipped] = [r for r in rows.values() if r["shipped"]]
    assert shipped["trained_by"] == "signoff maintainers (shipped default)"
    table = runner.invoke(app, ["list"], env={"COLUMNS": "250"})
    assert "trained by" in table.output and "alice" in table.output

    # The audit trail's model event: who, when (the training, not the file's time) and why.
    [event] = [e for e in model_artifact_events() if e["detail"]["model_id"] == model_id]
    assert event["actor"] == "alice" and event["at"] == manifest["trained_at"]
    assert event["detail"]["reason"] == "quarterly refresh on new GUIDE data"
    assert event["detail"]["at_is"] == "when it was trained (its manifest)"
    assert [t["trained_by_from"] for t in event["detail"]["trained_again"]] == ["local OS account"]


def test_another_model_written_over_a_folder_gets_its_own_attribution(tmp_path: Path) -> None:
    folder = tmp_path / "out"  # `signoff model train --out DIR`, twice, with different data
    one, two = b"model one", b"model two"
    id_one, id_two = hashlib.sha256(one).hexdigest(), hashlib.sha256(two).hexdigest()
    model_store.save(id_one, one, {"model_sha256": id_one}, folder, trained=model_store.provenance("alice", "a", "--as"))
    model_store.save(id_one, one, {"model_sha256": id_one}, folder, trained=model_store.provenance("bob", "b", "--as"))
    same = model_store.read_manifest_at(folder)
    assert (same["trained_by"], [t["trained_by"] for t in same["trained_again"]]) == ("alice", ["bob"])
    model_store.save(id_two, two, {"model_sha256": id_two}, folder, trained=model_store.provenance("carol", "c", "--as"))
    other = model_store.read_manifest_at(folder)
    assert (other["trained_by"], other["reason"], "trained_again" in other) == ("carol", "c", False)
