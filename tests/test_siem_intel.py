"""SIEM and threat-intel connectors against their fakes; the SIEM pull workflow and its Schedule;
the intel enrichers (active only when configured)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from activities.enrichers.intel import abuseipdb, clear_caches, virustotal
from activities.siem import PullResult, from_elastic, from_splunk
from connectors.abuseipdb import AbuseIpdb
from connectors.elastic import ElasticSecurity
from connectors.fakes.elastic import FakeElastic
from connectors.fakes.intel import FakeAbuseIpdb, FakeVirusTotal
from connectors.fakes.sentinel import FakeSentinel
from connectors.fakes.splunk import FakeSplunk
from connectors.http import NonRetryableConnectorError, Secret, use_transport
from connectors.sentinel import Sentinel
from connectors.splunk import Splunk
from connectors.virustotal import VirusTotal
from signoff.models import Entity
from signoff.worker import build_worker
from workflows.siem_pull import SiemPullInput, SiemPullWorkflow, ensure_schedule


async def no_sleep(_: float) -> None:
    return None


# ---------------------------------------------------------------- Splunk / Elastic / Sentinel


async def test_splunk_search_waits_for_the_job_and_updates_notables() -> None:
    fake = FakeSplunk(running_polls=2)
    fake.add_notable("n1", rule_name="Brute force", _time="1764320000", urgency="high", user="alice")
    client = Splunk("https://splunk:8089", Secret(fake.token), transport=fake.transport(), sleep=no_sleep)
    rows = await client.search("index=notable", earliest="0")
    assert [r["event_id"] for r in rows] == ["n1"]
    polls = [c for c in fake.calls if c.method == "GET" and c.path == "/services/search/jobs/signoff.1"]
    assert len(polls) == 3  # RUNNING, RUNNING, DONE: results are read only after DONE
    assert await client.update_notables(["n1"], "2", "Signoff case-1") == 1
    assert fake.notables["n1"] == {"status": "2", "comment": "Signoff case-1"}
    with pytest.raises(NonRetryableConnectorError):
        await client.update_notables([], "2")
    bad = Splunk("https://splunk:8089", Secret("planted-splunk-token"), transport=fake.transport(), sleep=no_sleep)
    with pytest.raises(NonRetryableConnectorError) as err:
        await bad.search("index=notable")
    assert "SIGNOFF_SPLUNK_TOKEN" in str(err.value) and "planted-splunk-token" not in str(err.value)


async def test_elastic_search_and_status_restore() -> None:
    fake = FakeElastic()
    fake.add_alert("e1", **{"@timestamp": "2026-11-28T09:00:00Z", "kibana.alert.rule.name": "R"})
    fake.add_alert("e2", **{"@timestamp": "2026-11-28T10:00:00Z", "kibana.alert.rule.name": "R"})
    client = ElasticSecurity("https://kibana:5601", Secret(fake.token), transport=fake.transport())
    hits = await client.search_alerts({"range": {"@timestamp": {"gte": "2026-11-28T09:30:00Z"}}})
    assert [h["_id"] for h in hits] == ["e2"]
    before = hits[0]["_source"]["kibana.alert.workflow_status"]
    assert await client.set_status(["e2"], "acknowledged") == 1
    assert await client.set_status(["e2"], before) == 1  # the captured status goes back
    assert fake.alerts["e2"]["kibana.alert.workflow_status"] == "open"
    with pytest.raises(NonRetryableConnectorError):
        await client.set_status([], "closed")  # never a query-wide bulk update


async def test_sentinel_update_rereads_after_an_etag_conflict() -> None:
    fake = FakeSentinel()
    fake.add_incident("inc-1", "Suspicious sign-in")
    client = Sentinel("https://management.azure.com", "https://login.microsoftonline.com/t/oauth2/v2.0/token",
                      fake.client_id, Secret(fake.client_secret), "sub-1", "rg-1", "ws-1",
                      transport=fake.transport())
    assert [i["name"] for i in await client.incidents()] == ["inc-1"]
    fake.conflict_next_put = True
    updated = await client.update_incident("inc-1", status="Active")
    assert updated["properties"]["status"] == "Active"
    assert fake.count("PUT", "/incidents/inc-1") == 2  # 409 once, then re-read and re-applied


# ---------------------------------------------------------------- intel clients and enrichers


@pytest.fixture
def intel(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[FakeVirusTotal, FakeAbuseIpdb]]:
    vt, abuse = FakeVirusTotal(), FakeAbuseIpdb()
    use_transport("virustotal", vt.transport())
    use_transport("abuseipdb", abuse.transport())
    clear_caches()
    yield vt, abuse
    use_transport("virustotal", None)
    use_transport("abuseipdb", None)
    clear_caches()


async def test_intel_clients() -> None:
    vt = FakeVirusTotal()
    vt.add("files", "a" * 64, malicious=40)
    client = VirusTotal("https://www.virustotal.com", Secret(vt.token), transport=vt.transport())
    verdict = await client.lookup("file", "a" * 64)
    assert verdict is not None and verdict.malicious == 40
    assert await client.lookup("file", "b" * 64) is None  # 404 = never seen
    abuse = FakeAbuseIpdb()
    abuse.add("203.0.113.9", 97, 40)
    report = await AbuseIpdb("https://api.abuseipdb.com", Secret(abuse.token), transport=abuse.transport()).check(
        "203.0.113.9")
    assert report.abuse_confidence == 97


async def test_enrichers_are_inactive_without_credentials(intel: tuple[FakeVirusTotal, FakeAbuseIpdb],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SIGNOFF_VIRUSTOTAL_API_KEY", raising=False)
    monkeypatch.delenv("SIGNOFF_ABUSEIPDB_API_KEY", raising=False)
    entities = (Entity(type="file", value="c" * 64), Entity(type="ip", value="8.8.8.8"))
    assert await virustotal(entities) == {}
    assert await abuseipdb(entities) == {}
    assert intel[0].calls == [] and intel[1].calls == []


async def test_enrichers_add_facts_and_cache(intel: tuple[FakeVirusTotal, FakeAbuseIpdb],
                                             monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    vt, abuse = intel
    key_file = tmp_path / "vt.key"
    key_file.write_text(vt.token + "\n")
    monkeypatch.setenv("SIGNOFF_VIRUSTOTAL_API_KEY_FILE", str(key_file))  # the *_FILE variant
    monkeypatch.setenv("SIGNOFF_ABUSEIPDB_API_KEY", abuse.token)
    vt.add("files", "d" * 64, malicious=12)
    abuse.add("185.220.101.7", 88, 9)
    entities = (Entity(type="file", value="evil.exe", attributes={"sha256": "D" * 64}),
                Entity(type="ip", value="185.220.101.7"), Entity(type="ip", value="10.0.0.5"))
    facts = await virustotal(entities)
    assert facts == {f"virustotal file {'d' * 64}": "12/82 engines malicious, 0 suspicious, reputation 0"}
    await virustotal(entities)
    assert len(vt.calls) == 1  # cached
    facts = await abuseipdb(entities)
    assert list(facts) == ["abuseipdb 185.220.101.7"] and "88%" in facts["abuseipdb 185.220.101.7"]
    assert all(c.params.get("ipAddress") != "10.0.0.5" for c in abuse.calls)  # private IPs stay private


# ---------------------------------------------------------------- SIEM → OCSF mapping


def test_siem_records_map_to_valid_ocsf_findings() -> None:
    import json

    from signoff.models import Alert
    from signoff.sources.ocsf import parse_line

    row = {"event_id": "n9", "_time": "1764320000.5", "rule_name": "Brute force", "urgency": "high",
           "user": "alice", "dest": "web-1", "src": "203.0.113.5", "mitre_tactic": "Credential Access"}
    hit = {"_id": "e9", "_source": {"@timestamp": "2026-11-28T09:00:00Z", "kibana.alert.rule.name": "Malware",
                                    "kibana.alert.severity": "critical", "host": {"name": "ws-2"}}}
    for record in (from_splunk(row), from_elastic(hit)):
        assert record is not None
        alert = parse_line(1, json.dumps(record))
        assert isinstance(alert, Alert), alert
        assert alert.uid.startswith(("splunk:", "elastic:"))
        assert alert.entities


# ---------------------------------------------------------------- the pull workflow


@pytest.fixture
def splunk_fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSplunk]:
    fake = FakeSplunk(running_polls=1)
    monkeypatch.setenv("SIGNOFF_SPLUNK_BASE_URL", "https://splunk.test:8089")
    monkeypatch.setenv("SIGNOFF_SPLUNK_TOKEN", fake.token)
    use_transport("splunk", fake.transport())
    yield fake
    use_transport("splunk", None)


def notable(fake: FakeSplunk, event_id: str, when: float, user: str) -> None:
    fake.add_notable(event_id, rule_name="Password spraying", _time=f"{when:.0f}", urgency="high", user=user,
                     mitre_tactic="Credential Access")


async def test_siem_pull_opens_cases_once_and_follows_its_cursor(
    time_env: WorkflowEnvironment, task_queue: str, splunk_fake: FakeSplunk
) -> None:
    now = time.time()
    notable(splunk_fake, "p1", now - 120, "u-pull-1")
    notable(splunk_fake, "p2", now - 60, "u-pull-2")
    client = time_env.client
    async with build_worker(client, task_queue):
        inp = SiemPullInput(source="splunk", lookback_minutes=10, task_queue=task_queue)
        first = await client.execute_workflow(SiemPullWorkflow.run, inp, id=f"pull-{task_queue}-1",
                                              task_queue=task_queue)
        assert (first.fetched, first.cases_opened) == (2, 2)
        again = inp.model_copy(update={"cursor_ms": first.cursor_ms})
        second = await client.execute_workflow(SiemPullWorkflow.run, again, id=f"pull-{task_queue}-2",
                                               task_queue=task_queue)
        # the newest alert shares the cursor's time: fetched again, deduplicated by ingest
        assert second.cases_opened == 0 and second.duplicates == 1
        notable(splunk_fake, "p3", now, "u-pull-3")
        third = await client.execute_workflow(SiemPullWorkflow.run, again, id=f"pull-{task_queue}-3",
                                              task_queue=task_queue)
        assert third.cases_opened == 1 and third.cursor_ms is not None and third.cursor_ms > first.cursor_ms  # type: ignore[operator]


async def test_siem_pull_schedule_runs_on_the_dev_server(
    dev_env: WorkflowEnvironment, task_queue: str, splunk_fake: FakeSplunk
) -> None:
    notable(splunk_fake, "s1", time.time() - 30, "u-sched-1")
    client: Client = dev_env.client
    async with build_worker(client, task_queue):
        inp = SiemPullInput(source="splunk", lookback_minutes=10, task_queue=task_queue)
        schedule_id = await ensure_schedule(client, inp, task_queue=task_queue)
        assert await ensure_schedule(client, inp, task_queue=task_queue) == schedule_id  # idempotent
        handle = client.get_schedule_handle(schedule_id)
        try:
            await handle.trigger()
            result: PullResult | None = None
            for _ in range(200):
                desc = await handle.describe()
                runs = desc.info.recent_actions
                if runs:
                    action = runs[-1].action
                    run = client.get_workflow_handle_for(SiemPullWorkflow.run, action.workflow_id,
                                                         run_id=action.first_execution_run_id)
                    result = await run.result()
                    break
                await asyncio.sleep(0.05)
            assert result is not None and result.fetched == 1 and result.cases_opened == 1
        finally:
            await handle.delete()


# ---------------------------------------------------------------- every client: 429 and 401


def _clients(sleep):  # type: ignore[no-untyped-def]
    from connectors.crowdstrike import CrowdStrike
    from connectors.defender import Defender
    from connectors.fakes.crowdstrike import FakeCrowdStrike
    from connectors.fakes.defender import FakeDefender
    from connectors.fakes.graph import FakeGraph
    from connectors.fakes.okta import FakeOkta
    from connectors.fakes.sentinelone import FakeSentinelOne
    from connectors.graph import Graph
    from connectors.okta import Okta
    from connectors.sentinelone import SentinelOne

    token_url = "https://login.microsoftonline.com/t/oauth2/v2.0/token"
    cs, mde, s1, okta, graph = FakeCrowdStrike(), FakeDefender(), FakeSentinelOne(), FakeOkta(), FakeGraph()
    splunk, elastic, sentinel, vt, abuse = FakeSplunk(), FakeElastic(), FakeSentinel(), FakeVirusTotal(), FakeAbuseIpdb()
    cs.add_host("1" * 32)
    mde.add_machine("m1")
    s1.add_agent("7")
    okta.add_user("u1")
    graph.add_user("u1")
    sentinel.add_incident("i1", "t")
    kw = {"sleep": sleep}
    return {
        "crowdstrike": (cs, CrowdStrike("https://cs", cs.client_id, Secret(cs.client_secret), transport=cs.transport(), **kw),
                        lambda c: c.status("1" * 32)),
        "defender": (mde, Defender("https://mde", token_url, mde.client_id, Secret(mde.client_secret),
                                   transport=mde.transport(), **kw), lambda c: c.isolation("m1")),
        "sentinelone": (s1, SentinelOne("https://s1", Secret(s1.token), transport=s1.transport(), **kw),
                        lambda c: c.network_status("7")),
        "okta": (okta, Okta("https://okta", Secret(okta.token), transport=okta.transport(), **kw), lambda c: c.status("u1")),
        "graph": (graph, Graph("https://graph", token_url, graph.client_id, Secret(graph.client_secret),
                               transport=graph.transport(), **kw), lambda c: c.user("u1")),
        "splunk": (splunk, Splunk("https://splunk", Secret(splunk.token), transport=splunk.transport(), **kw),
                   lambda c: c.search("index=notable")),
        "elastic": (elastic, ElasticSecurity("https://kibana", Secret(elastic.token), transport=elastic.transport(), **kw),
                    lambda c: c.search_alerts({"match_all": {}})),
        "sentinel": (sentinel, Sentinel("https://arm", token_url, sentinel.client_id, Secret(sentinel.client_secret),
                                        "s", "r", "w", transport=sentinel.transport(), **kw), lambda c: c.incidents()),
        "virustotal": (vt, VirusTotal("https://vt", Secret(vt.token), transport=vt.transport(), **kw),
                       lambda c: c.lookup("file", "e" * 64)),
        "abuseipdb": (abuse, AbuseIpdb("https://abuse", Secret(abuse.token), transport=abuse.transport(), **kw),
                      lambda c: c.check("185.220.101.8")),
    }


VENDORS = ["crowdstrike", "defender", "sentinelone", "okta", "graph", "splunk", "elastic", "sentinel",
           "virustotal", "abuseipdb"]


@pytest.mark.parametrize("vendor", VENDORS)
async def test_every_client_honours_retry_after_and_explains_a_401(vendor: str) -> None:
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    fake, client, call = _clients(sleep)[vendor]
    fake.fail_next(429, headers={"Retry-After": "3"})
    await call(client)
    assert waits[0] == 3.0
    fake.fail_next(401, times=2)  # OAuth clients refresh their token once before giving up
    with pytest.raises(NonRetryableConnectorError) as err:
        await call(client)
    assert err.value.status == 401 and f"SIGNOFF_{vendor.upper()}_" in str(err.value)
