"""The alert store: every accepted alert, its case and its raw record, in SQLite (WAL).

Case workflows keep counts and a capped timeline; the full alerts live here. The uid is the
primary key: storing an alert twice stores it once (`put_many` returns how many were new), so an
ingest that is run again counts repeats as duplicates instead of opening cases for them.

GUIDE re-uses an `AlertId` across incidents of one organisation (so the same alert uid belongs
to two cases, one per incident). `put_assigned(..., per_case=True)` keys such alerts by
(case, uid): the first case holding a uid keeps it in `alerts`, each further case gets its row in
`shared_alerts`, and every per-case read (count, uids, alerts, summary) sees both.

One writer at a time (SQLite); readers never block the writer in WAL mode. Open one `AlertStore`
per thread or process.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from signoff import settings
from signoff.models import Alert, Entity

# A rowid table, not WITHOUT ROWID: rows carry ~1.5 KB (the alert and its raw record), and SQLite
# stores large rows far better in a rowid table (measured on the AIT scenario: half the insert CPU,
# half the WAL bytes). Stores created with the earlier WITHOUT ROWID schema work unchanged.
SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (
    uid TEXT PRIMARY KEY,
    case_id TEXT NOT NULL,
    time_ms INTEGER NOT NULL,
    source TEXT NOT NULL,
    rule TEXT NOT NULL,
    joined_because TEXT NOT NULL,
    alert TEXT NOT NULL,
    raw TEXT
);
CREATE INDEX IF NOT EXISTS alerts_by_case ON alerts (case_id, time_ms, uid);
-- Alerts whose uid an earlier case already holds in `alerts` (`put_assigned(per_case=True)`: GUIDE
-- AlertIds re-used by another incident). Empty for OCSF. Added without touching `alerts`, so
-- stores made before it work unchanged.
CREATE TABLE IF NOT EXISTS shared_alerts (
    uid TEXT NOT NULL,
    case_id TEXT NOT NULL,
    time_ms INTEGER NOT NULL,
    source TEXT NOT NULL,
    rule TEXT NOT NULL,
    joined_because TEXT NOT NULL,
    alert TEXT NOT NULL,
    raw TEXT,
    PRIMARY KEY (case_id, uid)
);
CREATE INDEX IF NOT EXISTS shared_alerts_by_case ON shared_alerts (case_id, time_ms, uid);
CREATE INDEX IF NOT EXISTS shared_alerts_by_uid ON shared_alerts (uid);
-- Every (case, alert) row: what the per-case counts use (per connection, so always current).
-- Reads in time order name both tables instead: SQLite then merges the two index orders.
CREATE TEMP VIEW IF NOT EXISTS case_alerts AS
    SELECT * FROM main.alerts UNION ALL SELECT * FROM main.shared_alerts;
CREATE TABLE IF NOT EXISTS state (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
"""


class CaseSummary(BaseModel):
    """What the store knows about one case, without loading its alerts."""

    model_config = ConfigDict(frozen=True)

    case_id: str
    alert_count: int
    first_seen: datetime | None
    last_seen: datetime | None
    rules: dict[str, int]
    entities: tuple[Entity, ...]
    joined_because: dict[str, int]  # reason → how many alerts joined for it


Raw = dict[str, Any] | str | None


def _raw_text(raw: Raw) -> str | None:
    if raw is None or isinstance(raw, str):
        return raw
    return json.dumps(raw, separators=(",", ":"), ensure_ascii=False)


def default_path() -> Path:
    return settings.home() / "alerts.db"


def _ms(when: datetime) -> int:
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)


def _dt(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, tz=UTC)


class AlertStore:
    def __init__(self, path: Path | str | None = None) -> None:
        self.path = Path(path) if path else default_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise RuntimeError(
                f"alert store {self.path} cannot be opened ({exc}); move the file away or set SIGNOFF_HOME"
            ) from exc

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> AlertStore:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # ------------------------------------------------------------------ writes

    def put_many(self, case_id: str, alerts: Sequence[Alert], raw: Sequence[Raw] | None = None) -> int:
        """Store alerts of one case in one transaction. Returns how many uids were new.

        `raw`: one source record per alert (a dict, or its JSON text as read), or None."""
        if raw is not None and len(raw) != len(alerts):
            raise ValueError(
                f"raw has {len(raw)} records for {len(alerts)} alerts; pass one per alert or None"
            )
        return self.put_assigned(
            [(case_id, a, None if raw is None else raw[i]) for i, a in enumerate(alerts)]
        )

    def put_assigned(self, items: Sequence[tuple[str, Alert, Raw]], *, per_case: bool = False) -> int:
        """Store (case_id, alert, raw) for many cases in one transaction. Returns how many were new.

        By default a uid is stored once, under the first case that brings it. With `per_case`
        (GUIDE: the same AlertId in another incident is that incident's evidence), a uid another
        case already holds is stored again for this case; the same (case, uid) still only once."""
        rows = [
            (
                a.uid,
                case_id,
                _ms(a.time),
                a.source,
                a.rule,
                a.joined_because,
                a.model_dump_json(),
                _raw_text(r),
            )
            for case_id, a, r in items
        ]
        return self._insert(rows, per_case=per_case)

    def _insert(self, rows: list[tuple[Any, ...]], *, per_case: bool = False) -> int:
        if not rows:
            return 0
        db = self._db
        before = db.total_changes
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany("INSERT OR IGNORE INTO alerts VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
            if per_case and db.total_changes - before < len(rows):
                # Rows left out because another case holds their uid: this case's own row.
                db.executemany(
                    "INSERT OR IGNORE INTO shared_alerts SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8 "
                    "WHERE EXISTS (SELECT 1 FROM alerts WHERE uid = ?1 AND case_id != ?2)",
                    rows,
                )
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        return db.total_changes - before

    def move_alert(self, uid: str, from_case: str, to_case: str, alert: Alert | None = None) -> bool:
        """An alert detached from `from_case` into `to_case` (`signoff detach`): its row (with its
        raw record) now belongs to `to_case`, so re-ingesting it is a duplicate of that case. A store
        that never had it (ingested elsewhere) gets `alert` under `to_case`. True if anything changed."""
        db = self._db
        before = db.total_changes
        db.execute("BEGIN IMMEDIATE")
        try:
            for table in ("alerts", "shared_alerts"):
                db.execute(f"UPDATE OR IGNORE {table} SET case_id = ? WHERE uid = ? AND case_id = ?",
                           (to_case, uid, from_case))
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        moved = db.total_changes > before
        if not moved and alert is not None and to_case not in self.cases_holding([uid]).get(uid, set()):
            return self.put_assigned([(to_case, alert, None)], per_case=True) > 0
        return moved

    def put_state(self, name: str, value: dict[str, Any]) -> None:
        """Keep a small JSON document (e.g. the correlator's snapshot) beside the alerts."""
        self._db.execute(
            "INSERT INTO state VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = excluded.value",
            (name, json.dumps(value, separators=(",", ":"))),
        )

    def get_state(self, name: str) -> dict[str, Any] | None:
        row = self._db.execute("SELECT value FROM state WHERE name = ?", (name,)).fetchone()
        return None if row is None else json.loads(row[0])

    # ------------------------------------------------------------------ reads

    def has(self, uid: str) -> bool:
        return self._db.execute("SELECT 1 FROM alerts WHERE uid = ?", (uid,)).fetchone() is not None

    def case_of(self, uid: str) -> str | None:
        row = self._db.execute("SELECT case_id FROM alerts WHERE uid = ?", (uid,)).fetchone()
        return None if row is None else str(row[0])

    def cases_of(self, uids: Sequence[str]) -> dict[str, str]:
        """uid → case id for the uids already stored (batch form of `case_of`)."""
        out: dict[str, str] = {}
        for i in range(0, len(uids), 500):
            chunk = list(uids[i : i + 500])
            marks = ",".join("?" * len(chunk))
            for uid, case_id in self._db.execute(
                f"SELECT uid, case_id FROM alerts WHERE uid IN ({marks})", chunk
            ):
                out[uid] = case_id
        return out

    def cases_holding(self, uids: Sequence[str]) -> dict[str, set[str]]:
        """uid → every case holding it, for the uids already stored (`cases_of` gives the first)."""
        out: dict[str, set[str]] = {}
        for i in range(0, len(uids), 500):
            chunk = list(uids[i : i + 500])
            marks = ",".join("?" * len(chunk))
            for table in ("alerts", "shared_alerts"):
                for uid, case_id in self._db.execute(
                    f"SELECT uid, case_id FROM {table} WHERE uid IN ({marks})", chunk
                ):
                    out.setdefault(uid, set()).add(case_id)
        return out

    def known_cases(self, case_ids: Sequence[str]) -> set[str]:
        """The case ids that already have alerts here (one indexed probe each, no counting)."""
        probe = "SELECT 1 FROM case_alerts WHERE case_id = ? LIMIT 1"
        return {case_id for case_id in case_ids if self._db.execute(probe, (case_id,)).fetchone()}

    def count(self, case_id: str | None = None) -> int:
        args: tuple[str, ...] = ()
        if case_id is None:
            query = "SELECT (SELECT count(*) FROM alerts) + (SELECT count(*) FROM shared_alerts)"
        else:
            query = ("SELECT (SELECT count(*) FROM alerts WHERE case_id = ?1) "
                     "+ (SELECT count(*) FROM shared_alerts WHERE case_id = ?1)")
            args = (case_id,)
        return int(self._db.execute(query, args).fetchone()[0])

    def case_ids(self) -> list[str]:
        return [r[0] for r in self._db.execute("SELECT DISTINCT case_id FROM case_alerts ORDER BY case_id")]

    def uids(self, case_id: str) -> list[str]:
        return [
            r[0]
            for r in self._db.execute(
                "SELECT uid, time_ms FROM alerts WHERE case_id = ?1 UNION ALL "
                "SELECT uid, time_ms FROM shared_alerts WHERE case_id = ?1 ORDER BY 2, 1",
                (case_id,),
            )
        ]

    def alerts(self, case_id: str, limit: int = 100, offset: int = 0) -> list[Alert]:
        """A case's alerts in time order, a page at a time."""
        rows = self._db.execute(
            "SELECT alert, time_ms, uid FROM alerts WHERE case_id = ?1 UNION ALL "
            "SELECT alert, time_ms, uid FROM shared_alerts WHERE case_id = ?1 ORDER BY 2, 3 LIMIT ?2 OFFSET ?3",
            (case_id, limit, offset),
        )
        return [Alert.model_validate_json(r[0]) for r in rows]

    def raw(self, uid: str) -> dict[str, Any] | None:
        row = self._db.execute("SELECT raw FROM alerts WHERE uid = ?", (uid,)).fetchone()
        return None if row is None or row[0] is None else json.loads(row[0])

    def iter_assignments(self) -> Iterator[tuple[str, str]]:
        """(uid, case_id) of every stored alert: what evaluation and audits read."""
        yield from self._db.execute("SELECT uid, case_id FROM case_alerts")

    def summary(self, case_id: str) -> CaseSummary:
        db = self._db
        count, first, last = db.execute(
            "SELECT count(*), min(time_ms), max(time_ms) FROM case_alerts WHERE case_id = ?", (case_id,)
        ).fetchone()
        rules = dict(
            db.execute(
                "SELECT rule, count(*) FROM case_alerts WHERE case_id = ? GROUP BY rule ORDER BY count(*) DESC, rule",
                (case_id,),
            ).fetchall()
        )
        reasons = dict(
            db.execute(
                "SELECT joined_because, count(*) FROM case_alerts WHERE case_id = ? "
                "GROUP BY joined_because ORDER BY count(*) DESC, joined_because",
                (case_id,),
            ).fetchall()
        )
        entity_rows = db.execute(
            "SELECT DISTINCT json_extract(e.value, '$.type'), json_extract(e.value, '$.value') "
            "FROM case_alerts AS a, json_each(a.alert, '$.entities') AS e WHERE a.case_id = ? "
            "ORDER BY 1, 2",
            (case_id,),
        ).fetchall()
        return CaseSummary(
            case_id=case_id,
            alert_count=int(count),
            first_seen=_dt(first),
            last_seen=_dt(last),
            rules={str(k): int(v) for k, v in rules.items()},
            entities=tuple(Entity(type=str(t), value=str(v)) for t, v in entity_rows),
            joined_because={str(k): int(v) for k, v in reasons.items()},
        )
