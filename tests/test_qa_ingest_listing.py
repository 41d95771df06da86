"""QA defects in ingest, listing, close and stop: each test failed before its fix.

Unit tests need no server; the CLI tests run `signoff` as an analyst does (a new process, or typer's
runner in this one) against the real dev server, with a worker in this process.
"""

from __future__ import annotations

import asyncio
import csv
import gzip
import json
import os
import sys
import uuid
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

from signoff.alertstore import AlertStore
from signoff.ingest import DeadLetter, group_guide, guide_chunks, ingest_path
from signoff.listing import case_query, case_rows
from signoff.models import CaseStatus, CaseView
from signoff.sources import Rejected
from signoff.sources.guide import GUIDE_COLUMNS, GuideFormatError, alert_uid_for, read_guide
from signoff.worker import build_worker
from tests.casekit import alert as make_alert
from tests.casekit import awaiting, case_input, start_case, wait_for

REPO = Path(__file__).resolve().parent.parent
GUIDE_SLICE = REPO / "tests" / "data" / "guide_slice.csv"


# ---------------------------------------------------------------- helpers


def _row(org: int, incident: int, alert_id: int, n: int) -> dict[str, str]:
    row = dict.fromkeys(GUIDE_COLUMNS, "")
    row.update(Id=str(n), OrgId=str(org), IncidentId=str(incident), AlertId=str(alert_id),
               Timestamp=f"2024-06-08T09:{n % 60:02d}:37.000Z", DetectorId="5", AlertTitle="39",
               Category="InitialAccess", IncidentGrade="TruePositive", EntityType="User",
               EvidenceRole="Impacted", AccountName=str(100 + n))
    return row


def _guide_csv(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(GUIDE_COLUMNS))
        writer.writeheader()
        writer.writerows(rows)
    return path


def _unique_org() -> int:
    """Case ids are `guide-ORG-INCIDENT`: a fresh org keeps these cases apart on the shared server."""
    return 800_000 + uuid.uuid4().int % 100_000


def _address(env: WorkflowEnvironment) -> str:
    return env.client.service_client.config.target_host


async def _signoff(*args: str, env: dict[str, str], cwd: Path | None = None) -> tuple[int, str, str]:
    """`python -m signoff.cli ARGS` in a new process (async: the in-process worker keeps running)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "signoff.cli", *args, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=env, cwd=cwd,
    )
    out, err = await proc.communicate()
    return proc.returncode or 0, out.decode(), err.decode()


def _env(dev_env: WorkflowEnvironment, task_queue: str, home: Path | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "SIGNOFF_HOME"}
    env.update(TEMPORAL_ADDRESS=_address(dev_env), SIGNOFF_TASK_QUEUE=task_queue, COLUMNS="200",
               PYTHONPATH=str(REPO))
    if home is not None:
        env["SIGNOFF_HOME"] = str(home)
    return env


# ---------------------------------------------------------------- 4: dead-letter source


def test_dead_letter_records_name_the_input_file(signoff_home: Path) -> None:
    dead = DeadLetter("exports/2026-11/bad.csv")
    dead.write(Rejected(line=3, record={"x": "y"}, reason="missing OrgId"))
    dead.close()
    record = json.loads(dead.path.read_text().splitlines()[0])
    assert record["source"] == "exports/2026-11/bad.csv"
    assert record["source"] != dead.path.name and (record["line"], record["reason"]) == (3, "missing OrgId")


# ---------------------------------------------------------------- 5: GUIDE duplicates in a mixed incident


def test_guide_duplicates_count_the_known_rows_of_an_incident_with_a_new_alert(tmp_path: Path) -> None:
    org = 4242
    rows = [_row(org, 1, 10, 1), _row(org, 1, 10, 2), _row(org, 1, 11, 3),  # alert 10 (2 rows), 11 (1 row)
            _row(org, 2, 20, 4)]  # another incident, nothing known
    path = _guide_csv(tmp_path / "mixed.csv", rows)
    store = AlertStore(":memory:")
    known = next(a for i in read_guide(path).incidents for a in i.alerts if a.uid == alert_uid_for(str(org), "10"))
    store.put_many(f"guide-{org}-1", [known])
    chunk = next(guide_chunks(path, store))
    assert chunk.accepted == 4
    assert chunk.duplicates == 2  # the two rows of alert 10; was 0 because incident 1 also had a new alert
    assert [a.uid for a in chunk.drafts[f"guide-{org}-1"].alerts] == [alert_uid_for(str(org), "11")]
    assert f"guide-{org}-2" in chunk.drafts
    # Everything known: every row is a duplicate, no draft (unchanged behaviour).
    store.put_many(f"guide-{org}-1", chunk.drafts[f"guide-{org}-1"].alerts)
    store.put_many(f"guide-{org}-2", chunk.drafts[f"guide-{org}-2"].alerts)
    again = next(guide_chunks(path, store))
    assert (again.accepted, again.duplicates, again.drafts) == (4, 4, {})


# ---------------------------------------------------------------- 8: gzipped GUIDE


def test_gzipped_guide_csv_reads_like_the_plain_one(tmp_path: Path) -> None:
    packed = tmp_path / "slice.csv.gz"
    packed.write_bytes(gzip.compress(GUIDE_SLICE.read_bytes()))
    plain, zipped = read_guide(GUIDE_SLICE), read_guide(packed)
    assert zipped.rows == plain.rows > 900 and zipped.accepted == plain.accepted
    assert zipped.incidents == plain.incidents and zipped.rejected == plain.rejected
    # Recognised by content, whatever the name; the ingest grouping reads it too.
    renamed = tmp_path / "export.csv"
    renamed.write_bytes(packed.read_bytes())
    assert read_guide(renamed).incidents == plain.incidents
    drafts, accepted = group_guide(packed, DeadLetter(str(packed)))
    assert accepted == plain.accepted and len(drafts) == len(plain.incidents)
    damaged = tmp_path / "damaged.csv.gz"
    damaged.write_bytes(packed.read_bytes()[:200])
    with pytest.raises(GuideFormatError, match="damaged gzip"):
        read_guide(damaged)


def test_model_evaluate_reads_a_gzipped_guide_csv(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from signoff.cli import app

    packed = tmp_path / "slice.csv.gz"
    packed.write_bytes(gzip.compress(GUIDE_SLICE.read_bytes()))
    result = CliRunner().invoke(app, ["model", "evaluate", "--data", str(packed), "--format", "guide", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output.strip().splitlines()[-1])["incidents"] > 0


# ---------------------------------------------------------------- 3: everything rejected


async def test_ingest_of_a_file_with_nothing_accepted_fails_and_says_why(
        dev_env: WorkflowEnvironment, task_queue: str, tmp_path: Path) -> None:
    env = _env(dev_env, task_queue, tmp_path / "home")
    code, out, err = await _signoff("ingest", str(GUIDE_SLICE), "--format", "ocsf", "--json", env=env)
    assert code != 0, out
    summary = json.loads(out.strip().splitlines()[-1])  # the summary is still printed
    assert summary["accepted"] == 0 and summary["rejected"] == 959 and summary["cases_opened"] == 0
    dead = Path(summary["dead_letter"])
    assert len(dead.read_text().splitlines()) == 959  # ... and the dead letter still written
    assert "no record" in err and "--format guide" in err and str(dead) in err

    # A GUIDE file ingested twice: the second run is all duplicates, which is not an error.
    org = _unique_org()
    data = _guide_csv(tmp_path / "ok.csv", [_row(org, 1, 1, 1), _row(org, 1, 2, 2)])
    for attempt in range(2):
        code, out, err = await _signoff("ingest", str(data), "--format", "guide", "--json", env=env)
        summary = json.loads(out.strip().splitlines()[-1])
        assert code == 0, err
        assert (summary["accepted"], summary["duplicates"]) == (2, 2 * attempt)
    await dev_env.client.get_workflow_handle(f"guide-{org}-1").terminate("test done")


# ---------------------------------------------------------------- 1: a second close


async def test_a_second_close_is_refused_or_idempotent_never_silently_dropped(
        dev_env: WorkflowEnvironment, task_queue: str, tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = _env(dev_env, task_queue, home)
    client = dev_env.client
    async with build_worker(client, task_queue):
        inp = case_input(alert_type="malware")
        handle = await start_case(client, task_queue, inp, make_alert("c1", ("host", f"h-{inp.case_id}")))
        await wait_for(handle, awaiting("isolate_host"), "waiting")
        case = inp.case_id

        code, out, err = await _signoff("close", case, "--as", "alice", "--verdict", "TruePositive",
                                        "--reason", "confirmed", env=env)
        assert code == 0 and "closing with verdict TruePositive" in out, err
        code, out, err = await _signoff("close", case, "--as", "bob", "--verdict", "BenignPositive",
                                        "--reason", "different", env=env)
        assert code != 0, out
        assert "already closed with TruePositive by alice at 20" in err and "TruePositive" not in out
        # The same analyst repeating the same verdict: idempotent.
        code, out, err = await _signoff("close", case, "--as", "alice", "--verdict", "TruePositive",
                                        "--reason", "confirmed again", env=env)
        assert code == 0 and "already closed with TruePositive by alice" in out, err

        final: CaseView = await handle.result()
        assert final.status == CaseStatus.closed and final.verdict is not None
        assert (final.verdict.analyst, final.verdict.verdict.value) == ("alice", "TruePositive")
        # Once the workflow has completed: same answers.
        code, out, err = await _signoff("close", case, "--as", "alice", "--verdict", "FalsePositive",
                                        "--reason", "changed my mind", env=env)
        assert code != 0 and "already closed with TruePositive by alice at 20" in err, out
        code, out, err = await _signoff("close", case, "--as", "alice", "--verdict", "TruePositive",
                                        "--reason", "confirmed", env=env)
        assert code == 0 and "already closed with TruePositive by alice" in out, err

    refused = [json.loads(line) for line in (home / "audit" / "refused.jsonl").read_text().splitlines()]
    assert [(r["kind"], r["case_id"], r["analyst"], r["verdict"]) for r in refused] == [
        ("refused_close", case, "bob", "BenignPositive"), ("refused_close", case, "alice", "FalsePositive")]
    assert all("already closed with TruePositive by alice" in r["refusal"] for r in refused)


# ---------------------------------------------------------------- 2 and 7: listing from elsewhere, limits


async def test_cases_lists_alert_counts_from_any_directory_and_creates_nothing(
        dev_env: WorkflowEnvironment, task_queue: str, tmp_path: Path) -> None:
    client = dev_env.client
    org = _unique_org()
    rows = [_row(org, 1, 11, 1), _row(org, 1, 12, 2), _row(org, 1, 13, 3), _row(org, 1, 13, 4),
            _row(org, 2, 21, 5), _row(org, 3, 31, 6), _row(org, 3, 32, 7)]
    data = _guide_csv(tmp_path / "three.csv", rows)
    expected = {f"guide-{org}-1": [f"guide-{org}-{a}" for a in (11, 12, 13)],
                f"guide-{org}-2": [f"guide-{org}-21"],
                f"guide-{org}-3": [f"guide-{org}-{a}" for a in (31, 32)]}
    ingesting = tmp_path / "soc" / ".signoff"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    scope = f"TaskQueue='{task_queue}'"
    async with build_worker(client, task_queue):
        store = AlertStore(ingesting / "alerts.db")
        summary = await ingest_path(client, data, "guide", store=store, task_queue=task_queue)
        store.close()
        assert summary.cases_opened == 3
        for case_id in expected:  # triaged: the case knows its alerts
            await wait_for(client.get_workflow_handle(case_id), lambda v: v.status != CaseStatus.triage, "triaged")

        def parse(out: str) -> dict[str, dict]:
            return {r["case_id"]: r for r in map(json.loads, out.splitlines()) if r}

        # From the ingesting directory: the alert store answers.
        code, out, err = await _signoff("cases", "--json", "--with-alerts", "--query", scope,
                                        env=_env(dev_env, task_queue, ingesting))
        assert code == 0, err
        listed = parse(out)
        assert {c: (r["alert_count"], r["alert_uids"]) for c, r in listed.items()} == \
            {c: (len(u), u) for c, u in expected.items()}

        # From another directory, no SIGNOFF_HOME: the cases themselves answer; nothing is created.
        code, out, err = await _signoff("cases", "--json", "--with-alerts", "--query", scope,
                                        env=_env(dev_env, task_queue, None), cwd=elsewhere)
        assert code == 0, err
        listed = parse(out)
        assert {c: (r["alert_count"], sorted(r["alert_uids"])) for c, r in listed.items()} == \
            {c: (len(u), u) for c, u in expected.items()}
        assert "read from the case workflows" in err
        assert not (elsewhere / ".signoff").exists()

        # The fallback is bounded: past `counts_from_cases` cases, the uids are unknown, not asked;
        # the counts stay exact (the cases publish them: AlertCount).
        pages: list[dict] = []
        listing = await case_rows(case_query(None, scope), limit=None, each=pages.extend, client=client,
                                  home=elsewhere / ".signoff", counts_from_cases=2, with_alerts=True)
        assert (listing.listed, listing.counts_from_cases, listing.counts_not_asked, listing.uids_unknown) == \
            (3, 2, 0, 1)
        assert sorted(r["alert_uids"] is None for r in pages) == [False, False, True]
        assert all(r["alert_count"] == len(expected[r["case_id"]]) for r in pages)
        assert listing.store is None and not (elsewhere / ".signoff").exists()

        for case_id in expected:
            await client.get_workflow_handle(case_id).terminate("test done")


async def test_cases_says_when_the_limit_cut_the_list_and_when_counts_are_unknown(
        dev_env: WorkflowEnvironment, task_queue: str, tmp_path: Path) -> None:
    """No worker polls this task queue: the cases wait untriaged, so only the alert store knows them."""
    client = dev_env.client
    org = _unique_org()
    data = _guide_csv(tmp_path / "three.csv", [_row(org, i, 10 + i, i) for i in (1, 2, 3)])
    ingesting = tmp_path / "soc" / ".signoff"
    store = AlertStore(ingesting / "alerts.db")
    assert (await ingest_path(client, data, "guide", store=store, task_queue=task_queue)).cases_opened == 3
    store.close()
    scope = f"TaskQueue='{task_queue}'"
    env = _env(dev_env, task_queue, ingesting)

    # A limit that cuts the list says so on stderr; stdout stays one JSON object per case.
    code, out, err = await _signoff("cases", "--json", "--limit", "2", "--query", scope, env=env)
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and len(rows) == 2 and all(r["alert_count"] == 1 for r in rows), err
    assert "showing 2 of 3 cases" in err and "--limit" in err
    code, out, err = await _signoff("cases", "--limit", "2", "--query", scope, env=env)
    assert code == 0 and "2 cases" in out and "showing 2 of 3 cases" in err, err
    code, out, err = await _signoff("cases", "--limit", "3", "--query", scope, env=env)
    assert code == 0 and "3 cases" in out and "showing" not in err, err

    # Elsewhere, with no worker to answer for the cases: unknown (null), said once, never a wrong 0.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code, out, err = await _signoff("cases", "--json", "--with-alerts", "--query", scope,
                                    env=_env(dev_env, task_queue, None), cwd=elsewhere)
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and len(rows) == 3, err
    assert all(r["alert_count"] is None and r["alert_uids"] is None for r in rows)
    assert "alert count unknown (null) for 3 cases" in err and "worker" in err
    assert not (elsewhere / ".signoff").exists()
    for i in (1, 2, 3):
        await client.get_workflow_handle(f"guide-{org}-{i}").terminate("test done")


# ---------------------------------------------------------------- 6: stop from elsewhere


async def test_stop_from_another_directory_names_where_it_looked(
        dev_env: WorkflowEnvironment, task_queue: str, tmp_path: Path) -> None:
    code, out, err = await _signoff("stop", env=_env(dev_env, task_queue, None), cwd=tmp_path)
    assert code == 0
    assert str(tmp_path / ".signoff") in out
    assert f"a server still answers at {_address(dev_env)}" in err and "SIGNOFF_HOME" in err
    assert not (tmp_path / ".signoff").exists()  # stopping creates no state directory



async def test_ingest_of_a_directory_says_so(tmp_path: Path) -> None:
    """QA: `signoff ingest DIR` crashed with IsADirectoryError; the message must say what to give."""
    with pytest.raises(ValueError, match="is a directory: give one file"):
        await ingest_path(None, tmp_path, "guide")  # type: ignore[arg-type]  # refused before any client use
