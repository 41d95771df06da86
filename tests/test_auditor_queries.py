"""The auditor's queries (docs/auditors.md) against the real dev server: SDK and `temporal` CLI."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import yaml
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from signoff.devserver import temporal_cli
from signoff.models import CaseStatus
from signoff.worker import build_worker
from tests.auditkit import address_of, full_story
from tests.casekit import alert, case_input, start_case


async def _ids(client: Client, query: str, expect: set[str], attempts: int = 100) -> set[str]:
    """Visibility is eventually consistent: poll until the expected ids show up (or give up)."""
    found: set[str] = set()
    for _ in range(attempts):
        found = {wf.id async for wf in client.list_workflows(query)}
        if expect <= found:
            return found
        await asyncio.sleep(0.1)
    return found


async def _cli_ids(client: Client, query: str) -> set[str]:
    proc = await asyncio.create_subprocess_exec(
        temporal_cli(), "workflow", "list", "--address", address_of(client), "--query", query, "-o", "json",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    text = out.decode().strip()
    rows = json.loads(text) if text.startswith("[") else [json.loads(line) for line in text.splitlines() if line]
    return {row["execution"]["workflowId"] for row in rows}


async def test_auditor_queries_find_the_right_cases(
    dev_env: WorkflowEnvironment, task_queue: str, policy_file: Path
) -> None:
    policy = yaml.safe_load(policy_file.read_text())
    policy["alert_types"]["phishing"].update(autonomy="on_the_loop", threshold=0.0)
    policy["review_sample_rate"] = 0.0  # no analyst review sample: this case must close automatically
    policy_file.write_text(yaml.safe_dump(policy))
    client = dev_env.client
    async with build_worker(client, task_queue):
        auto = case_input(alert_type="phishing")
        handle = await start_case(client, task_queue, auto, alert("p1", ("mailbox", "ceo@example.com"),
                                                                  title="Phishing link", category="InitialAccess"))
        closed = await handle.result()
        assert closed.status == CaseStatus.auto_closed and closed.score is not None
        story = await full_story(client, task_queue)  # approved by alice and bob, rolled back by carol

    model = closed.score.model_id[:16]
    mine = f"TaskQueue='{task_queue}'"
    queries = {
        # All cases auto-closed under a given model id:
        f"WorkflowType='CaseWorkflow' AND CaseStatus='auto_closed' AND ModelVersion='{model}'": {auto.case_id},
        # All cases approved by a given person (KeywordList: '=' means 'contains'):
        "WorkflowType='CaseWorkflow' AND Approvers='alice'": {story.case_id},
        "WorkflowType='CaseWorkflow' AND Approvers='bob'": {story.case_id},
        # All rollbacks:
        "WorkflowType='CaseWorkflow' AND RolledBack=true": {story.case_id},
        # Everything an action touched, by action:
        "WorkflowType='CaseWorkflow' AND ExecutedActions='isolate_host'": {story.case_id},
        "WorkflowType='CaseWorkflow' AND Decision='auto_close'": {auto.case_id},
    }
    for query, expected in queries.items():
        scoped = f"{query} AND {mine}"
        assert await _ids(client, scoped, expected) == expected, query
        assert await _cli_ids(client, scoped) == expected, f"temporal workflow list --query {query!r}"
    # And what must not match.
    assert await _ids(client, f"Approvers='dave' AND {mine}", set(), attempts=1) == set()
    assert await _ids(client, f"RolledBack=true AND CaseStatus='auto_closed' AND {mine}", set(), attempts=1) == set()
