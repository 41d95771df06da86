"""OCSF Detection Finding parser: field mapping, and every malformed line rejected with its reason."""

from __future__ import annotations

import copy
import gzip
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from signoff.models import Alert
from signoff.sources import Rejected
from signoff.sources.ocsf import iter_ocsf, iter_ocsf_raw, parse_line

FINDING: dict[str, Any] = {
    "activity_id": 1, "activity_name": "Create", "category_uid": 2, "category_name": "Findings",
    "class_uid": 2004, "class_name": "Detection Finding", "type_uid": 200401,
    "type_name": "Detection Finding: Create", "severity_id": 4, "status_id": 1,
    "time": 1642723347000, "message": "Wazuh: sshd brute force",
    "metadata": {"version": "1.3.0", "uid": "f-1", "profiles": ["host"],
                 "product": {"name": "Wazuh", "vendor_name": "Wazuh Inc."}},
    "finding_info": {"uid": "f-1", "title": "sshd brute force", "data_sources": ["Wazuh"],
                     "analytic": {"uid": "W-Ssh-Brt", "name": "sshd brute force", "type_id": 1, "type": "Rule"}},
    "device": {"hostname": "Mail", "name": "mail", "ip": "172.19.130.4", "type_id": 0},
    "resources": [{"type": "host", "uid": "mail", "name": "mail"}],
    "observables": [{"name": "device.hostname", "type_id": 1, "type": "Hostname", "value": "mail"},
                    {"name": "device.ip", "type_id": 2, "type": "IP Address", "value": "172.19.130.4"}],
}  # fmt: skip


def finding(**changes: Any) -> dict[str, Any]:
    record = copy.deepcopy(FINDING)
    record.update(changes)
    return record


def line(record: Any) -> str:
    return json.dumps(record)


def test_maps_a_detection_finding_to_an_alert() -> None:
    alert = parse_line(1, line(FINDING))
    assert isinstance(alert, Alert)
    assert alert.uid == "f-1"
    assert alert.source == "ocsf"
    assert alert.rule == "W-Ssh-Brt"
    assert alert.title == "sshd brute force"
    assert alert.time == datetime(2022, 1, 21, 0, 2, 27, tzinfo=UTC)
    assert alert.severity == "high"
    assert alert.category == "SuspiciousActivity"
    assert [(e.type, e.value) for e in alert.entities] == [("host", "mail"), ("ip", "172.19.130.4")]
    assert alert.attributes["data_source"] == "Wazuh"


def test_maps_users_file_hashes_endpoints_and_tactics() -> None:
    record = finding(
        actor={"user": {"name": "alice"}},
        evidences=[{
            "file": {"name": "x.exe", "hashes": [{"algorithm_id": 3, "algorithm": "SHA-256", "value": "AB12"}]},
            "src_endpoint": {"ip": "10.0.0.9"},
            "user": {"uid": "S-1-5-21"},
        }],
        observables=[{"name": "user", "type_id": 4, "value": "bob"}],
    )  # fmt: skip
    record["finding_info"]["attacks"] = [{"tactic": {"name": "Credential Access", "uid": "TA0006"}}]
    alert = parse_line(1, line(record))
    assert isinstance(alert, Alert)
    found = {(e.type, e.value, e.role) for e in alert.entities}
    assert ("account", "alice", "actor") in found
    assert ("account", "S-1-5-21", "evidence") in found
    assert ("account", "bob", "observable") in found
    assert ("file", "ab12", "evidence") in found
    assert ("ip", "10.0.0.9", "source") in found
    assert alert.category == "CredentialAccess"


def test_network_ids_findings_are_network_intrusions() -> None:
    record = finding()
    record["finding_info"]["data_sources"] = ["Suricata"]
    alert = parse_line(1, line(record))
    assert isinstance(alert, Alert) and alert.category == "NetworkIntrusion"


def test_rule_falls_back_to_the_title_without_an_analytic() -> None:
    record = finding()
    del record["finding_info"]["analytic"]
    alert = parse_line(1, line(record))
    assert isinstance(alert, Alert) and alert.rule == "sshd brute force"


def _without_uid() -> dict[str, Any]:
    record = finding()
    del record["finding_info"]["uid"]
    return record


def _with(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    record = finding()
    target = record
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return record


MALFORMED: list[tuple[str, str, str]] = [
    ("bad json", '{"class_uid": 2004, ', "not JSON"),
    ("not an object", "[1, 2, 3]", "not a JSON object but a list"),
    ("wrong class", line(finding(class_uid=2001)), "class_uid is 2001, expected 2004"),
    ("no class", line({"finding_info": {"uid": "x"}}), "class_uid is None, expected 2004"),
    ("missing uid", line(_without_uid()), "finding_info.uid: Field required"),
    ("uid wrong type", line(_with(("finding_info", "uid"), 42)), "finding_info.uid: Input should be a valid string"),
    ("empty uid", line(_with(("finding_info", "uid"), "  ")), "finding_info.uid: String should have at least 1"),
    ("huge uid", line(_with(("finding_info", "uid"), "u" * 600)), "finding_info.uid: String should have at most 512"),
    ("time as string", line(finding(time="1642723347000")), "time: Input should be a valid integer"),
    ("time in seconds", line(finding(time=1642723347)), "time: Input should be greater than or equal"),
    ("hostname wrong type", line(_with(("device", "hostname"), ["a"])), "device.hostname: Input should be a valid string"),
    ("huge title", line(_with(("finding_info", "title"), "x" * 9000)), "finding_info.title: String should have at most 8192"),
    ("bad severity enum", line(finding(severity_id=42)), "not a valid OCSF Detection Finding: severity_id"),
    ("bad type_uid", line(finding(type_uid=1)), "not a valid OCSF Detection Finding: type_uid"),
    ("huge line", line(finding(message="y" * (1 << 20))), "over the 1048576 limit"),
    ("blank line", "   ", "blank line"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "text", "reason"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_lines_are_rejected_with_a_specific_reason(case: str, text: str, reason: str) -> None:
    result = parse_line(7, text)
    assert isinstance(result, Rejected), case
    assert result.line == 7
    assert reason in result.reason, result.reason
    assert len(result.record["raw"]) <= 2000


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz"])
def test_every_line_is_accounted_for(tmp_path: Path, suffix: str) -> None:
    good = [line(finding(finding_info={**FINDING["finding_info"], "uid": f"u-{i}"})) for i in range(5)]
    bad = [text for _, text, _ in MALFORMED]
    lines = [x for pair in zip(good, bad, strict=False) for x in pair] + good[len(bad) :] + bad[len(good) :]
    path = tmp_path / f"findings{suffix}"
    payload = "\n".join(lines) + "\n"
    if suffix.endswith(".gz"):
        path.write_bytes(gzip.compress(payload.encode()))
    else:
        path.write_text(payload)
    items = list(iter_ocsf(path))
    accepted = [i for i in items if isinstance(i, Alert)]
    rejected = [i for i in items if isinstance(i, Rejected)]
    assert len(accepted) == len(good)
    assert len(rejected) == len(bad)
    assert len(accepted) + len(rejected) == len(lines)
    assert sorted(r.line for r in rejected) == [n + 1 for n, text in enumerate(lines) if text in bad]
    raw = [text for item, text in iter_ocsf_raw(path) if isinstance(item, Alert)]
    assert [json.loads(t)["finding_info"]["uid"] for t in raw] == [a.uid for a in accepted]


def test_missing_file_says_what_to_pass(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="pass a .jsonl or .jsonl.gz file"):
        list(iter_ocsf(tmp_path / "nope.jsonl"))
