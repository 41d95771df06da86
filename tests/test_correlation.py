"""Correlation rules: which alerts join an open case, which open a new one, and why."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from signoff.correlation import CorrelationRules, Correlator, RulesError, annotate, load_rules
from signoff.correlation.evaluate import evaluate
from signoff.models import Alert, Entity

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def alert(
    uid: str, seconds: float, host: str | None = "web1", rule: str = "R1", ip: str | None = None
) -> Alert:
    entities = []
    if host:
        entities.append(Entity(type="host", value=host))
    if ip:
        entities.append(Entity(type="ip", value=ip))
    return Alert(
        uid=uid, source="ocsf", time=T0 + timedelta(seconds=seconds), title=f"title {rule}", rule=rule,
        entities=tuple(entities),
    )  # fmt: skip


def rules(**changes: Any) -> CorrelationRules:
    base: dict[str, Any] = {"gap": "10m", "max_span": "24h", "max_alerts": 1000, "burst": None}
    base.update(changes)
    return CorrelationRules.model_validate(base)


def test_shipped_rules_load_and_validate() -> None:
    loaded = load_rules()
    assert loaded.group_by[0] == "host"
    assert loaded.gap_ms > 0 and loaded.burst is not None


def test_same_rule_same_host_joins_as_a_repeat() -> None:
    c = Correlator(rules())
    first = c.assign(alert("a1", 0))
    second = c.assign(alert("a2", 60))
    assert first.opened and not second.opened
    assert second.case_id == first.case_id
    assert second.reason.startswith("repeat of rule R1 on host=web1")
    third = c.assign(alert("a3", 120, rule="R2"))
    assert third.case_id == first.case_id and third.reason.startswith("rule R2 on host=web1")


def test_different_host_opens_a_new_case() -> None:
    c = Correlator(rules())
    a = c.assign(alert("a1", 0, host="web1"))
    b = c.assign(alert("a2", 1, host="db1"))
    assert b.opened and b.case_id != a.case_id
    assert b.reason == "opened: first alert for host=db1"


def test_window_expiry_opens_a_new_case_with_the_reason() -> None:
    c = Correlator(rules(gap="10m"))
    a = c.assign(alert("a1", 0))
    b = c.assign(alert("a2", 600))  # exactly the gap: still joins
    d = c.assign(alert("a3", 600 + 601))
    assert b.case_id == a.case_id
    assert d.opened and d.case_id != a.case_id
    assert "quiet for 601s, more than gap 10m" in d.reason


def test_max_alerts_rolls_to_a_new_case_with_the_reason() -> None:
    c = Correlator(rules(max_alerts=3))
    out = [c.assign(alert(f"a{i}", i)) for i in range(7)]
    ids = [o.case_id for o in out]
    assert len(set(ids[:3])) == 1 and len(set(ids[3:6])) == 1 and ids[3] != ids[0] and ids[6] != ids[3]
    assert out[3].opened and f"case {ids[0]} reached max_alerts 3" in out[3].reason


def test_max_span_caps_a_busy_case() -> None:
    c = Correlator(rules(gap="10m", max_span="30m"))
    out = [c.assign(alert(f"a{i}", i * 300)) for i in range(8)]  # every 5 minutes for 35 minutes
    assert out[6].case_id == out[0].case_id  # 30 minutes in
    assert out[7].opened and "would span more than max_span 30m" in out[7].reason


def test_a_burst_ends_its_case_after_a_quiet_spell() -> None:
    c = Correlator(rules(burst={"min_alerts": 5, "within": "10s", "quiet": "30s"}))
    burst = [c.assign(alert(f"b{i}", i * 0.5)) for i in range(10)]
    after = c.assign(alert("after", 4.5 + 31))
    assert len({b.case_id for b in burst}) == 1
    assert after.opened and "burst on host=web1 ended" in after.reason
    # without a burst, the same quiet spell keeps the case
    c2 = Correlator(rules(burst={"min_alerts": 5, "within": "10s", "quiet": "30s"}))
    slow = [c2.assign(alert(f"s{i}", i * 20)) for i in range(3)]
    assert len({s.case_id for s in slow}) == 1


def test_late_alert_joins_the_case_covering_its_time() -> None:
    c = Correlator(rules(gap="10m"))
    early = [c.assign(alert(f"e{i}", i * 60)) for i in range(5)]  # 12:00-12:04
    later = c.assign(alert("l1", 3600))  # 13:00: new case
    late = c.assign(alert("late", 120.5))  # 12:02 arrives after 13:00
    assert later.opened and later.case_id != early[0].case_id
    assert late.case_id == early[0].case_id and not late.opened
    assert "late, within the case's time window" in late.reason
    orphan = c.assign(alert("orphan", 1800))  # 12:30: 26 min from both cases
    assert orphan.opened and "late alert for host=web1, no case within 10m" in orphan.reason


def test_late_alerts_open_when_policy_says_so() -> None:
    c = Correlator(rules(late_alerts="open"))
    first = c.assign(alert("a1", 100))
    late = c.assign(alert("a2", 50))
    assert late.opened and late.case_id != first.case_id and "late_alerts: open" in late.reason


def test_alert_without_grouping_entities_falls_back_to_its_rule() -> None:
    c = Correlator(rules())
    a = c.assign(alert("a1", 0, host=None, rule="DNS-Exfil"))
    b = c.assign(alert("a2", 5, host=None, rule="DNS-Exfil"))
    assert a.group == "rule=DNS-Exfil" and b.case_id == a.case_id
    ip_only = c.assign(alert("a3", 5, host=None, ip="10.1.1.1"))
    assert ip_only.group == "ip=10.1.1.1"


def test_fallback_none_refuses_with_what_to_do() -> None:
    c = Correlator(rules(fallback="none"))
    with pytest.raises(ValueError, match="set fallback: rule"):
        c.assign(alert("a1", 0, host=None))


def test_repeated_uid_is_a_duplicate_of_its_case() -> None:
    c = Correlator(rules())
    a = c.assign(alert("a1", 0))
    again = c.assign(alert("a1", 0))
    assert again.duplicate and again.case_id == a.case_id and not again.opened
    assert c.assigned == 1 and c.duplicates == 1


def test_case_ids_are_deterministic_across_instances() -> None:
    stream = [alert(f"a{i}", i * 97 % 5000, host=f"h{i % 3}", rule=f"R{i % 4}") for i in range(300)]
    c1, c2 = Correlator(rules()), Correlator(rules())
    one = [c1.assign(a).case_id for a in stream]
    assert one == [c2.assign(a).case_id for a in stream]
    assert 1 < len(set(one)) < len(stream)
    assert all(i.startswith("ocsf-") and len(i) == 21 for i in one)


def test_case_id_prefix_and_annotation() -> None:
    c = Correlator(rules(case_id_prefix="ait"))
    first = c.assign(alert("a1", 0))
    second = c.assign(alert("a2", 1))
    assert first.case_id.startswith("ait-")
    assert annotate(alert("a2", 1), second).joined_because == second.reason


def test_views_of_open_and_known_cases() -> None:
    c = Correlator(rules(gap="10m"))
    c.assign(alert("a1", 0, host="old"))
    c.assign(alert("a2", 3600, host="new", rule="X"))
    c.assign(alert("a3", 3601, host="new", rule="X"))
    assert {s.group for s in c.cases()} == {"host=old", "host=new"}
    (live,) = c.open_cases()
    assert live.group == "host=new" and live.alert_count == 2 and live.rules == {"X": 2}
    assert len(c.flush()) == 2 and c.cases() == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("gap: soon\n", "duration 'soon'"),
        ("group_by: [host, planet]\n", "unknown entity types ['planet']"),
        ("colour: blue\n", "Extra inputs are not permitted"),
        ("gap: 2h\nmax_span: 1h\n", "max_span 1h is shorter than gap 2h"),
        ("- a list\n", "must be a YAML mapping"),
    ],
)
def test_invalid_rules_are_refused(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "correlation.yaml"
    path.write_text(text)
    with pytest.raises(RulesError, match="invalid|mapping") as info:
        load_rules(path)
    assert message in str(info.value)


def test_evaluate_counts_mixing_and_accounting() -> None:
    labels = {"a": "false_positive", "b": "dirb", "c": "false_positive", "d": "dirb", "e": "false_positive"}
    pairs = [("a", "c1"), ("b", "c1"), ("c", "c2"), ("d", "c3"), ("d", "c3")]
    m = evaluate(pairs, labels, lines=6, rejected=1)
    assert (
        m["cases"] == 3 and m["mixed_cases"] == 1 and m["mixed_case_share"] == pytest.approx(1 / 3, abs=1e-4)
    )
    assert m["double_counted"] == 1
    assert m["alerts"] == 4 and m["unaccounted"] == 1 and m["labelled_not_assigned"] == 1


def test_chunks_account_for_every_line(tmp_path: Path) -> None:
    import json

    from signoff.correlation.stream import iter_chunks

    lines = []
    for i in range(25):
        record = {
            "class_uid": 2004, "type_uid": 200401, "activity_id": 1, "category_uid": 2, "severity_id": 2,
            "time": 1_700_000_000_000 + i * 1000, "metadata": {"version": "1.3.0", "product": {"name": "W", "vendor_name": "V"}},
            "finding_info": {"uid": f"u{i % 20}", "title": "t", "analytic": {"uid": f"R{i % 2}", "name": "r", "type_id": 1}},
            "device": {"hostname": f"h{i % 3}"},
        }  # fmt: skip
        lines.append(json.dumps(record))
    lines.insert(5, "not json")
    path = tmp_path / "f.jsonl"
    path.write_text("\n".join(lines) + "\n")
    chunks = list(iter_chunks(path, Correlator(rules()), chunk_alerts=7))
    assert [c.lines for c in chunks] == [7, 7, 7, 5]
    assert sum(c.accepted for c in chunks) == 20  # uids u0..u19
    assert sum(c.duplicates for c in chunks) == 5  # u0..u4 again
    assert [r.line for c in chunks for r in c.rejected] == [6]
    opened = [b.case_id for c in chunks for b in c.batches.values() if b.opened]
    assert len(opened) == len(set(opened)) == 3  # one case per host
    for c in chunks:
        for b in c.batches.values():
            assert len(b.raw) == len(b.alerts) and all(a.joined_because for a in b.alerts)


def test_snapshot_restore_continues_the_same_cases(tmp_path: Path) -> None:
    from signoff.alertstore import AlertStore

    stream = [
        alert(f"a{i}", i * 200 + (3000 if i > 30 else 0), host=f"h{i % 2}", rule=f"R{i % 3}")
        for i in range(40)
    ]
    whole = Correlator(rules(gap="10m"))
    expected = [whole.assign(a) for a in stream]
    first = Correlator(rules(gap="10m"))
    got = [first.assign(a) for a in stream[:25]]
    with AlertStore(tmp_path / "alerts.db") as store:
        store.put_state("correlator:ocsf", first.snapshot())
    with AlertStore(tmp_path / "alerts.db") as store:
        state = store.get_state("correlator:ocsf")
    assert state is not None
    second = Correlator.restore(state, rules(gap="10m"))
    got += [second.assign(a) for a in stream[25:]]
    assert got == expected
    assert not got[25].opened and got[25].case_id in {g.case_id for g in got[:25]}  # continued across
    assert any(g.opened for g in got[26:])  # and the gap rule still applies after the restore
    with pytest.raises(ValueError, match="start a fresh Correlator"):
        Correlator.restore({"version": 99})


def test_correlate_file_stores_each_alert_once(tmp_path: Path) -> None:
    import json

    from signoff.alertstore import AlertStore
    from signoff.bench.correlation import correlate_file

    record = {
        "class_uid": 2004, "type_uid": 200401, "activity_id": 1, "category_uid": 2, "severity_id": 2,
        "metadata": {"version": "1.3.0", "product": {"name": "W", "vendor_name": "V"}},
        "device": {"hostname": "h1"},
    }  # fmt: skip
    lines = [
        json.dumps({**record, "time": 1_700_000_000_000 + i, "finding_info": {
            "uid": f"u{i}", "title": "t", "analytic": {"uid": "R", "name": "r", "type_id": 1}}})
        for i in range(10)
    ] + ["{broken"]  # fmt: skip
    path = tmp_path / "f.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with AlertStore(tmp_path / "alerts.db") as store:
        first = correlate_file(path, store)
        second = correlate_file(path, store)
        assert (first["lines"], first["rejected"], first["stored"]) == (11, 1, 10)
        assert second["stored"] == 0 and second["pairs"] == first["pairs"]
        assert store.raw("u3") == json.loads(lines[3])
