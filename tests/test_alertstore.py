"""The alert store: idempotent by uid, paged reads in time order, per-case summaries."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from signoff.alertstore import AlertStore, default_path
from signoff.models import Alert, Entity

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def alert(uid: str, minute: int, rule: str = "R1", host: str = "web1", why: str = "") -> Alert:
    return Alert(
        uid=uid, source="ocsf", time=T0 + timedelta(minutes=minute), title=f"t {rule}", rule=rule,
        entities=(Entity(type="host", value=host), Entity(type="ip", value="10.0.0.1")), joined_because=why,
    )  # fmt: skip


@pytest.fixture
def store(tmp_path: Path) -> AlertStore:
    return AlertStore(tmp_path / "alerts.db")


def test_put_many_is_idempotent_by_uid(store: AlertStore) -> None:
    batch = [alert("a1", 0), alert("a2", 1), alert("a3", 2)]
    assert store.put_many("case-1", batch) == 3
    assert store.put_many("case-1", batch) == 0
    assert store.put_many("case-2", [alert("a3", 2), alert("a4", 3)]) == 1  # a3 stays in case-1
    assert store.count() == 4 and store.count("case-1") == 3 and store.count("case-2") == 1
    assert store.case_of("a3") == "case-1" and store.case_of("zz") is None
    assert store.has("a4") and not store.has("zz")
    assert store.cases_of(["a1", "a4", "zz"]) == {"a1": "case-1", "a4": "case-2"}
    assert store.case_ids() == ["case-1", "case-2"]


def test_reads_are_in_time_order_and_paged(store: AlertStore) -> None:
    store.put_many("c", [alert(f"u{m:02d}", m) for m in (5, 1, 3, 2, 4)])
    assert store.uids("c") == ["u01", "u02", "u03", "u04", "u05"]
    page = store.alerts("c", limit=2, offset=1)
    assert [a.uid for a in page] == ["u02", "u03"]
    assert page[0] == alert("u02", 2)  # round-trips every field


def test_raw_records_are_kept_as_given(store: AlertStore) -> None:
    store.put_many("c", [alert("d", 0), alert("s", 1), alert("n", 2)], raw=[{"x": 1}, '{"y":2}', None])
    assert store.raw("d") == {"x": 1} and store.raw("s") == {"y": 2} and store.raw("n") is None
    with pytest.raises(ValueError, match="one per alert"):
        store.put_many("c", [alert("e", 0)], raw=[])


def test_summary_of_a_case(store: AlertStore) -> None:
    store.put_many("c", [
        alert("a", 0, "R1", why="opened: first alert for host=web1"),
        alert("b", 7, "R2", host="db1", why="rule R2 on host=web1, within 40m of the case's last alert"),
        alert("c", 9, "R1", why="repeat of rule R1 on host=web1, within 40m of the case's last alert"),
    ])  # fmt: skip
    s = store.summary("c")
    assert s.alert_count == 3
    assert s.first_seen == T0 and s.last_seen == T0 + timedelta(minutes=9)
    assert s.rules == {"R1": 2, "R2": 1}
    assert {(e.type, e.value) for e in s.entities} == {("host", "web1"), ("host", "db1"), ("ip", "10.0.0.1")}
    assert sum(s.joined_because.values()) == 3 and "opened: first alert for host=web1" in s.joined_because
    empty = store.summary("nope")
    assert empty.alert_count == 0 and empty.first_seen is None and empty.rules == {}


def test_put_assigned_spans_cases_in_one_transaction(store: AlertStore) -> None:
    assert store.put_assigned([("c1", alert("a", 0), None), ("c2", alert("b", 1), "{}")]) == 2
    assert store.put_assigned([("c1", alert("a", 0), None)]) == 0
    assert dict(store.iter_assignments()) == {"a": "c1", "b": "c2"}


def test_survives_reopening_and_uses_wal(tmp_path: Path) -> None:
    path = tmp_path / "alerts.db"
    with AlertStore(path) as first:
        first.put_many("c", [alert("a", 0)])
    with AlertStore(path) as again:
        assert again.case_of("a") == "c"
        assert again.put_many("c", [alert("a", 0)]) == 0
    mode = sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_default_path_is_under_signoff_home(signoff_home: Path) -> None:
    assert default_path() == signoff_home / "alerts.db"


def test_unreadable_file_says_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "alerts.db"
    path.write_bytes(b"not a database" * 100)
    with pytest.raises(RuntimeError, match="move the file away"):
        AlertStore(path)


def test_known_cases_probes_without_counting(store: AlertStore) -> None:
    store.put_many("case-1", [alert("a1", 0)])
    store.put_many("case-2", [alert("a2", 0), alert("a3", 1)])
    assert store.known_cases(["case-1", "case-2", "case-3"]) == {"case-1", "case-2"}
    assert store.known_cases([]) == set()


def test_a_store_made_with_the_earlier_without_rowid_schema_still_works(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE alerts (uid TEXT PRIMARY KEY, case_id TEXT NOT NULL, time_ms INTEGER NOT NULL,"
        " source TEXT NOT NULL, rule TEXT NOT NULL, joined_because TEXT NOT NULL, alert TEXT NOT NULL,"
        " raw TEXT) WITHOUT ROWID;"
    )
    db.close()
    old = AlertStore(path)
    assert old.put_many("case-1", [alert("a1", 0), alert("a2", 1)]) == 2
    assert old.put_many("case-1", [alert("a2", 1)]) == 0
    assert old.uids("case-1") == ["a1", "a2"] and old.known_cases(["case-1"]) == {"case-1"}
    fresh = AlertStore(tmp_path / "new.db")
    sql = fresh._db.execute("SELECT sql FROM sqlite_master WHERE name = 'alerts'").fetchone()[0]
    assert "WITHOUT ROWID" not in sql
