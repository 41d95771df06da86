"""GUIDE ingest: one case per incident, every row accounted for, bad rows rejected with a reason."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from signoff.models import Verdict
from signoff.sources import Rejected
from signoff.sources.guide import GUIDE_COLUMNS, GuideFormatError, parse_guide_lines, read_guide

SLICE = Path(__file__).parent / "data" / "guide_slice.csv"


def _rows() -> tuple[list[str], list[list[str]]]:
    with SLICE.open(newline="") as handle:
        rows = list(csv.reader(handle))
    return rows[0], rows[1:]


def _csv(header: list[str], rows: list[list[str]]) -> list[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue().splitlines(keepends=True)


def test_slice_is_read_into_incidents_and_accounts_for_every_row() -> None:
    read = read_guide(SLICE)
    header, rows = _rows()
    assert header == list(GUIDE_COLUMNS)
    assert read.rows == len(rows)
    assert read.rejected == []
    assert read.accepted == len(rows)
    keys = {(r[1], r[2]) for r in rows}
    assert len(read.incidents) == len(keys)
    assert {i.case_id for i in read.incidents} == {f"guide-{o}-{i}" for o, i in keys}
    alert_ids = {(r[1], r[3]) for r in rows}
    uids = {a.uid for i in read.incidents for a in i.alerts}
    assert uids == {f"guide-{o}-{a}" for o, a in alert_ids}
    # every evidence row became exactly one entity
    assert sum(len(a.entities) for i in read.incidents for a in i.alerts) == len(rows)
    assert all(i.grade in set(Verdict) for i in read.incidents)


def test_alert_and_entity_shape() -> None:
    read = read_guide(SLICE)
    alert = next(a for i in read.incidents for a in i.alerts if a.mitre and len(a.entities) > 1)
    assert alert.source == "guide"
    assert alert.rule and alert.title and alert.category
    assert alert.attributes["org_id"] and alert.attributes["alert_id"]
    types = {e.type for i in read.incidents for a in i.alerts for e in a.entities}
    assert types <= {
        "host", "account", "ip", "url", "file", "process", "mailbox", "mail_message", "mail_cluster",
        "cloud_app", "cloud_logon_request", "cloud_logon_session", "registry_key", "registry_value",
        "malware", "cloud_resource", "oauth_app", "generic",
    }  # fmt: skip
    roles = {e.role for i in read.incidents for a in i.alerts for e in a.entities}
    assert roles <= {"impacted", "related"}
    # GUIDE's "absent" placeholder ids never become entity values or attributes
    values = {e.value for i in read.incidents for a in i.alerts for e in a.entities}
    assert "360606" not in values and "98799" not in values
    attrs = {k: v for i in read.incidents for a in i.alerts for e in a.entities for k, v in e.attributes.items()}
    assert attrs.get("country_code") != "242"


def test_bad_rows_are_rejected_with_specific_reasons_and_none_lost() -> None:
    header, rows = _rows()
    good = rows[:40]
    col = {name: n for n, name in enumerate(header)}

    def variant(**changes: str) -> list[str]:
        row = list(rows[0])
        for name, value in changes.items():
            row[col[name]] = value
        return row

    other_grade = "TruePositive" if rows[0][col["IncidentGrade"]] != "TruePositive" else "FalsePositive"
    bad = [
        (variant(OrgId=""), "missing OrgId"),
        (variant(IncidentId="x12"), "IncidentId 'x12' is not a non-negative integer id"),
        (variant(Timestamp="yesterday", AlertId="999999991"), "bad Timestamp 'yesterday'"),
        (variant(Timestamp="2024-06-11T03:53:30", AlertId="999999992"), "bad Timestamp"),
        (variant(IncidentGrade="Maybe", AlertId="999999993"), "unknown IncidentGrade 'Maybe'"),
        (variant(IncidentGrade=other_grade, AlertId="999999994"), "conflicts with"),
        (variant(EntityType="", AlertId="999999995"), "missing EntityType"),
        (variant(DetectorId="", AlertId="999999996"), "missing DetectorId"),
        (variant(EvidenceRole="Victim", AlertId="999999997"), "unknown EvidenceRole"),
        (list(rows[0][:10]), "wrong column count: expected 46 fields, got 10"),
        (list(rows[1]), "exact duplicate of line 3"),
    ]
    lines = _csv(header, good + [b for b, _ in bad])
    lines.insert(5, "\n")  # an empty line in the middle
    read = parse_guide_lines(lines)
    assert read.rows == len(good) + len(bad) + 1
    assert read.accepted + len(read.rejected) == read.rows
    assert read.accepted == len(good)
    reasons = [r.reason for r in read.rejected]
    assert "empty row" in reasons
    for _, expected in bad:
        assert any(expected in reason for reason in reasons), (expected, reasons)
    assert all(isinstance(r, Rejected) and r.line > 1 for r in read.rejected)
    empty = next(r for r in read.rejected if r.reason == "empty row")
    assert empty.line == 6
    missing_org = next(r for r in read.rejected if r.reason == "missing OrgId")
    assert missing_org.record["OrgId"] == "" and missing_org.record["AlertId"] == rows[0][col["AlertId"]]
    # line numbers are physical lines: the wrong-column-count row is where we wrote it
    short = next(r for r in read.rejected if r.reason.startswith("wrong column count"))
    assert lines[short.line - 1].startswith(",".join(rows[0][:3]))


def test_not_guide_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_text("a,b,c\n1,2,3\n")
    with pytest.raises(GuideFormatError, match="header lacks"):
        read_guide(path)
    with pytest.raises(GuideFormatError, match="no such file"):
        read_guide(tmp_path / "missing.csv")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(GuideFormatError, match="empty"):
        read_guide(empty)


def test_ungraded_rows_are_incidents_without_grade() -> None:
    header, rows = _rows()
    col = {name: n for n, name in enumerate(header)}
    row = list(rows[0])
    row[col["IncidentGrade"]] = ""
    read = parse_guide_lines(_csv(header, [row]))
    assert read.rejected == []
    assert read.incidents[0].grade is None
