"""The lab: a local stand-in estate of hosts, accounts, mailboxes, keys and IPs with persisted state.

It is what `signoff demo` acts on when no vendor is configured. State lives in SQLite so it
survives restarts and is shared by every worker on the machine; every write is logged with its
idempotency key, so a retried call is visible as a repeat, not as a second change.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

DEFAULTS: dict[str, dict[str, Any]] = {
    "case": {"tags": [], "notes": []},
    "account": {"enabled": True, "sessions_revoked_at": None},
    "host": {"network": "connected"},
    "mail_message": {"folder": "inbox"},
    "mailbox": {"sender_blocked": False},
    "ip": {"blocked": False},
    "url": {"blocked": False},  # domains and URLs (docs/playbooks.md's block_domain example)
    "access_key": {"status": "Active"},
    "file": {"blocked": False},  # file hashes on the EDR blocklist (block_file_hash)
    "watchlist": {"watched": False},
}


class LabError(Exception):
    pass


class Lab:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        with self._db() as db:
            db.executescript(
                """
                PRAGMA journal_mode=WAL;
                CREATE TABLE IF NOT EXISTS objects (
                    kind TEXT NOT NULL, id TEXT NOT NULL, state TEXT NOT NULL,
                    PRIMARY KEY (kind, id));
                CREATE TABLE IF NOT EXISTS calls (
                    seq INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, kind TEXT NOT NULL,
                    id TEXT NOT NULL, key TEXT NOT NULL, state TEXT NOT NULL, repeat INTEGER NOT NULL);
                """
            )

    def _db(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            conn.execute("PRAGMA busy_timeout=30000")
            conn.execute("PRAGMA synchronous=NORMAL")  # WAL: durable across crashes, no fsync per write
            self._local.conn = conn
        return conn

    def read(self, kind: str, id: str) -> dict[str, Any]:
        if kind not in DEFAULTS:
            raise LabError(f"the lab has no {kind!r} objects; it knows {sorted(DEFAULTS)}")
        row = self._db().execute("SELECT state FROM objects WHERE kind=? AND id=?", (kind, id)).fetchone()
        return json.loads(row[0]) if row else dict(DEFAULTS[kind])

    def write(self, kind: str, id: str, changes: dict[str, Any], key: str) -> bool:
        """Apply `changes`; returns False when this key already made this change (a retry)."""
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            repeat = db.execute(
                "SELECT 1 FROM calls WHERE kind=? AND id=? AND key=? AND state=? AND repeat=0",
                (kind, id, key, json.dumps(changes, sort_keys=True)),
            ).fetchone()
            state = self.read(kind, id)
            state.update(changes)
            db.execute(
                "INSERT INTO objects(kind, id, state) VALUES (?,?,?) "
                "ON CONFLICT(kind, id) DO UPDATE SET state=excluded.state",
                (kind, id, json.dumps(state, sort_keys=True)),
            )
            db.execute(
                "INSERT INTO calls(at, kind, id, key, state, repeat) VALUES (?,?,?,?,?,?)",
                (time.time(), kind, id, key, json.dumps(changes, sort_keys=True), 1 if repeat else 0),
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return repeat is None

    def set(self, kind: str, id: str, state: dict[str, Any]) -> None:
        """Set state directly (an operator changing things outside Signoff, or a test fixture)."""
        self.write(kind, id, state, key="operator")

    def calls(self, kind: str | None = None, id: str | None = None) -> list[dict[str, Any]]:
        rows = self._db().execute(
            "SELECT seq, at, kind, id, key, state, repeat FROM calls "
            "WHERE (? IS NULL OR kind=?) AND (? IS NULL OR id=?) ORDER BY seq",
            (kind, kind, id, id),
        ).fetchall()
        return [
            {"seq": r[0], "at": r[1], "kind": r[2], "id": r[3], "key": r[4], "state": json.loads(r[5]),
             "repeat": bool(r[6])}
            for r in rows
        ]


_LABS: dict[Path, Lab] = {}


def lab(path: Path | None = None) -> Lab:
    if path is None:
        from signoff.settings import home

        path = home() / "lab.db"
    if path not in _LABS:
        _LABS[path] = Lab(path)
    return _LABS[path]
