"""`signoff explain`: a case's decision record rebuilt from its workflow history alone."""

from __future__ import annotations

import json

from temporalio.testing import WorkflowEnvironment

from signoff.explain import explanation_from_history, render_explanation
from signoff.history import apply_archive_record, archived_runs, decode_history, read_archive
from signoff.worker import build_worker
from tests.auditkit import acli, address_of, full_story


async def test_explain_rebuilds_the_whole_decision_record(time_env: WorkflowEnvironment, task_queue: str) -> None:
    client = time_env.client
    async with build_worker(client, task_queue):
        story = await full_story(client, task_queue)
        result = await acli(address_of(client), "explain", story.case_id, "--json")
        assert result.exit_code == 0, result.output
        ex = json.loads(result.output.strip().splitlines()[-1])

        text_result = await acli(address_of(client), "explain", story.case_id, env={"COLUMNS": "400"})
        assert text_result.exit_code == 0, text_result.output

    assert ex["case_id"] == story.case_id and ex["workflow_status"] == "completed"
    assert ex["case"]["alert_type"] == "malware"
    assert ex["alerts"]["count"] == 1 and ex["alerts"]["alerts"][0]["uid"] == "m1"
    assert ex["enrichment"] is not None
    # Score: model, feature-vector hash, calibrated confidence, contributions in words.
    score = ex["score"]
    assert score["model_id"] == story.final.score.model_id  # type: ignore[union-attr]
    assert len(score["feature_hash"]) == 64
    assert abs(score["confidence"] - story.final.score.confidence) < 1e-12  # type: ignore[union-attr]
    assert score["contributions"], "the score carries its top contributions"
    first = score["contributions"][0]
    assert first["text"].startswith(f"feature {first['feature']} = ") and "pushed" in first["text"]
    assert f"{first['contribution']:+.2f}" in first["text"]
    # The decision is recomputed from the recorded governance snapshot and score, and matches.
    assert ex["governance"]["policy_version"] == story.final.policy_version
    assert ex["governance"]["autonomy"] == "in_the_loop" and ex["governance"]["threshold"] is None
    assert ex["decision"]["kind"] == story.final.decision.kind.value  # type: ignore[union-attr]
    assert ex["decision"]["reason"] == story.final.decision.reason  # type: ignore[union-attr]
    assert ex["decision"]["recomputed_matches_recorded"] is True

    # Every approval and refusal: who, when, why, how.
    by = {(a["approver"], a["via"]): a for a in ex["approvals"]}
    assert by[("mallory", "signal")]["outcome"] == "refused"
    assert "not an approver" in by[("mallory", "signal")]["refusal"]
    assert by[("alice", "update")]["outcome"] == "accepted" and by[("alice", "update")]["reason"] == "beaconing to known C2"
    assert by[("alice", "update")]["update_id"] and by[("alice", "update")]["at"]
    assert by[("bob", "signal")]["outcome"] == "accepted" and by[("bob", "signal")]["step"] == "disable_account"
    refused = ex["refused_attempts"]
    assert len(refused) == 1 and refused[0]["approver"] == "mallory" and refused[0]["kind"] == "refused_approve"
    assert "not an approver" in refused[0]["refusal"]

    # Actions with their captured before-state; compensations in reverse order; the rollback.
    actions = {a["action"]: a for a in ex["actions"]}
    assert actions["isolate_host"]["before"] == {"network": "connected"}
    assert actions["isolate_host"]["after"]["network"] == "isolated"
    assert actions["isolate_host"]["target"] == {"kind": "host", "id": story.host}
    comps = [c["undoes"] for c in ex["compensations"]]
    executed = [a["action"] for a in ex["actions"]]
    assert comps == [a for a in reversed(executed) if a in comps]
    assert ex["compensations"][0]["outcome"] == "compensated"
    assert {"isolate_host", "disable_account"} <= set(comps)
    (rollback,) = ex["rollbacks"]
    assert rollback["requested_by"] == "carol" and rollback["compensations"] >= 2
    assert rollback["seconds_to_last_compensation"] is not None
    assert ex["verdicts"][0]["verdict"] == "FalsePositive" and ex["verdicts"][0]["analyst"] == "carol"
    assert ex["final"]["status"] == "rolled_back"
    assert ex["complete_decision_record"] is True

    # Readable by a person.
    text = text_result.output
    for needle in (f"Decision: {ex['decision']['kind'].upper()} because", "pushed", "mallory", "REFUSED", "isolate_host on host",
                   "before {\"network\": \"connected\"}", "Rollback:", "Verdict: FalsePositive by carol",
                   "Trojan [beacon] detected"):
        assert needle in text, needle
    # No approval tokens in the explanation.
    assert "token" not in json.dumps(ex["approvals"])


async def test_explain_works_from_the_archive_after_temporal_forgets(
    time_env: WorkflowEnvironment, task_queue: str
) -> None:
    client = time_env.client
    async with build_worker(client, task_queue):
        story = await full_story(client, task_queue, rollback=False)
    live = explanation_from_history(await decode_history(await story.handle.fetch_history(), client.data_converter))
    (path,) = archived_runs(story.case_id)
    history, record = read_archive(path)
    assert record["final_view"]["status"] == "closed"
    decoded = await decode_history(history, client.data_converter, source="archive")
    archived = explanation_from_history(apply_archive_record(decoded, record))
    for key in ("score", "decision", "governance", "approvals", "actions", "alerts", "verdicts"):
        assert archived[key] == live[key], key
    assert archived["final"]["status"] == "closed" and archived["workflow_status"] == "completed"
    assert "Verdict: TruePositive by carol" in render_explanation(archived)
