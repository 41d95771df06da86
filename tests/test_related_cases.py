"""Cases that share an entity (`signoff related CASE`, `signoff cases --entity VALUE`): from the
`CaseEntities` search attribute every case publishes (digests, never the values), on the real dev
server's SQLite visibility, through the CLI an analyst uses."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from temporalio.testing import WorkflowEnvironment

from signoff import search_attributes as sa
from signoff.entity_index import MAX_INDEXED, entity_key, index_keys, index_text
from tests.auditkit import acli, address_of
from tests.casekit import alert, case_input, settled_worker, start_case, wait_for
from workflows.case import CaseWorkflow


def _json_rows(output: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def test_the_index_is_digests_of_the_first_distinct_values() -> None:
    assert entity_key(" WS-042.corp ") == entity_key("ws-042.corp")  # case and blanks do not make another host
    assert entity_key("10.0.0.5") != entity_key("10.0.0.50")
    values = [f"host-{i}" for i in range(MAX_INDEXED + 20)]
    keys = index_keys(["", "  "] + values + values)
    assert len(keys) == MAX_INDEXED and keys == sorted(keys)
    assert set(keys) == {entity_key(v) for v in values[:MAX_INDEXED]}
    text = index_text(values)
    assert "host-" not in text and len(text) < 2048  # no value in visibility; under its 2 KB per value


async def test_cases_sharing_a_host_find_each_other(dev_env: WorkflowEnvironment, task_queue: str) -> None:
    client = dev_env.client
    address = address_of(client)
    env = {"SIGNOFF_TASK_QUEUE": task_queue, "COLUMNS": "200"}
    host, account = f"ws-{task_queue[-8:]}.corp", f"svc-{task_queue[-8:]}@corp.example"
    async with settled_worker(client, task_queue):
        first, second, other = (case_input(alert_type="malware") for _ in range(3))
        h1 = await start_case(client, task_queue, first, alert("a1", ("host", host), category="Malware"))
        h2 = await start_case(client, task_queue, second, alert("b1", ("host", host.upper()), ("account", account),
                                                                 category="Malware"))
        h3 = await start_case(client, task_queue, other, alert("c1", ("host", f"elsewhere-{task_queue}"),
                                                                category="Malware"))
        for handle in (h1, h2, h3):
            await wait_for(handle, lambda v: v.decision is not None, "decided")
        # A later alert brings a new value into the first case: published too.
        await h1.signal(CaseWorkflow.add_alerts, _batch(first.case_id, alert("a2", ("account", account))))
        await wait_for(h1, lambda v: len(v.entities) == 2, "second entity")

        scoped = f"TaskQueue='{task_queue}'"
        rows: list[dict[str, Any]] = []
        for _ in range(100):  # visibility follows the upsert within moments
            listed = await acli(address, "cases", "--entity", account, "--json", "--query", scoped, env=env)
            assert listed.exit_code == 0, listed.output
            rows = _json_rows(listed.output)
            if len(rows) == 2:
                break
            await asyncio.sleep(0.1)
        assert sorted(r["case_id"] for r in rows) == sorted([first.case_id, second.case_id])

        by_host = await acli(address, "cases", "--entity", host, "--entity", "no-such-host", "--json", "--query",
                             scoped, env=env)
        assert sorted(r["case_id"] for r in _json_rows(by_host.output)) == sorted([first.case_id, second.case_id])

        related = await acli(address, "related", first.case_id, "--json", env=env)
        assert related.exit_code == 0, related.output
        found = {r["case_id"]: r for r in _json_rows(related.output)}
        assert set(found) == {second.case_id}  # not itself, not the case on another host
        assert found[second.case_id]["shared"] == [{"type": "account", "value": account},
                                                   {"type": "host", "value": host}]
        table = await acli(address, "related", first.case_id, env=env)
        assert table.exit_code == 0 and second.case_id in table.output and f"host {host}" in table.output
        lonely = await acli(address, "related", other.case_id, env=env)
        assert lonely.exit_code == 0 and "no other case shares an entity" in lonely.output, lonely.output

        # `show` answers "have we seen this host before?" where the analyst looks first.
        shown = await acli(address, "show", first.case_id, env=env)
        assert shown.exit_code == 0, shown.output
        text = " ".join(shown.output.split())  # the console wraps long lines
        assert (f"related: 1 other case shares entities with this one: {second.case_id} (" in text
                and f"`signoff related {first.case_id}`" in text), shown.output
        as_json = await acli(address, "show", first.case_id, "--json", env=env)
        assert [r["case_id"] for r in json.loads(as_json.output)["related_cases"]] == [second.case_id]
        alone = await acli(address, "show", other.case_id, env=env)
        assert alone.exit_code == 0 and "related:" not in alone.output, alone.output

        # Visibility holds digests, never the values.
        described = await h2.describe()
        published = described.typed_search_attributes.get(sa.CASE_ENTITIES)
        assert published is not None and host not in published and account not in published
        assert set(published.split()) == {entity_key(host), entity_key(account)}

        empty = await acli(address, "cases", "--entity", " ", env=env)
        assert empty.exit_code != 0 and "--entity needs a value" in empty.output


def _batch(case_id: str, *alerts: Any) -> Any:
    from signoff.models import AlertBatch

    return AlertBatch(case_id=case_id, alerts=alerts)
