"""A case publishes its alert count (`AlertCount`) so `signoff cases` lists exact counts from
visibility alone, for cases ingested in any directory or on any host (real dev server)."""

from __future__ import annotations

import asyncio

from temporalio.api.enums.v1 import EventType
from temporalio.testing import WorkflowEnvironment

from signoff import search_attributes as sa
from signoff.listing import case_rows
from signoff.models import AlertBatch
from signoff.worker import build_worker
from tests.casekit import alert, awaiting, case_input, start_case, wait_for
from workflows.case import CaseWorkflow


async def _visible(env: WorkflowEnvironment, case_id: str, count: int) -> None:
    query = f"WorkflowId = '{case_id}' AND {sa.ALERT_COUNT.name} = {count}"
    for _ in range(200):
        if (await env.client.count_workflows(query)).count == 1:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"visibility never showed {query!r}")


async def test_the_case_publishes_its_alert_count_as_alerts_arrive(dev_env: WorkflowEnvironment, task_queue: str,
                                                                   tmp_path) -> None:  # type: ignore[no-untyped-def]
    client = dev_env.client
    async with build_worker(client, task_queue):
        inp = case_input()
        handle = await start_case(client, task_queue, inp, alert("c1", ("account", f"a-{inp.case_id}")),
                                  alert("c2", ("account", f"a-{inp.case_id}")))
        await wait_for(handle, awaiting("disable_account"), "waiting for approval", attempts=600)
        await _visible(dev_env, inp.case_id, 2)

        # A later batch while the case waits on a human: one alert already known, two new ones.
        await handle.signal(CaseWorkflow.add_alerts, AlertBatch(case_id=inp.case_id, batch_id="b2", alerts=(
            alert("c2"), alert("c3"), alert("c4"))))
        await wait_for(handle, lambda v: v.alert_count == 4, "4 alerts")
        await _visible(dev_env, inp.case_id, 4)
        assert (await handle.describe()).typed_search_attributes.get(sa.ALERT_COUNT) == 4

        rows: list[dict] = []  # type: ignore[type-arg]
        await case_rows(f"WorkflowId = '{inp.case_id}'", limit=None, each=rows.extend, client=client,
                        home=tmp_path)  # an empty directory: no alert store
        assert [(r["case_id"], r["alert_count"]) for r in rows] == [(inp.case_id, 4)]

        # The first batch (signal-with-start) costs no upsert of its own: it goes out with the
        # case's first one, beside its alert type. (The SDK's own TemporalChangeVersion upserts,
        # one per patch, are not the case's.)
        upserts = [fields for e in (await handle.fetch_history()).events
                   if e.event_type == EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES
                   and set(fields := e.upsert_workflow_search_attributes_event_attributes
                           .search_attributes.indexed_fields) != {"TemporalChangeVersion"}]
        first_with_count = next(i for i, fields in enumerate(upserts) if sa.ALERT_COUNT.name in fields)
        assert first_with_count == 0 and sa.ALERT_TYPE.name in upserts[0], [sorted(f) for f in upserts]
        assert sum(sa.ALERT_COUNT.name in fields for fields in upserts) == 2  # 2, then 4
        await handle.terminate("test over")


async def test_a_worker_registers_the_search_attributes_an_older_setup_lacks() -> None:
    """A namespace set up before AlertCount existed: the worker adds it (and only what is missing)
    before it polls, so no new case stalls on an unknown search attribute."""
    from temporalio.api.enums.v1 import IndexedValueType
    from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest
    from temporalio.contrib.pydantic import pydantic_data_converter

    from signoff.worker import ensure_search_attributes
    from tests.conftest import _binary

    env = await WorkflowEnvironment.start_local(dev_server_existing_path=_binary("temporal"), ui=False,
                                                data_converter=pydantic_data_converter,
                                                dev_server_extra_args=["--log-level", "error"])
    try:
        client = env.client
        older = {k.name: IndexedValueType.ValueType(int(k.indexed_value_type)) for k in sa.ALL if k != sa.ALERT_COUNT}
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(namespace=client.namespace, search_attributes=older))
        assert await ensure_search_attributes(client) == [sa.ALERT_COUNT.name]
        listed = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace=client.namespace))
        assert {k.name for k in sa.ALL} <= set(listed.custom_attributes)
        assert await ensure_search_attributes(client) == []
    finally:
        await env.shutdown()
