"""Case rows read straight from the embedded dev server's visibility table (read-only SQLite).

`signoff dev` runs `temporal server start-dev --db-filename HOME/temporal.db`: its visibility
store is the `executions_visibility` table of that file. Reading it directly lists 10,000 cases
in ~0.1 s, where the server's `ListWorkflowExecutions` spends ~1.1 s of CPU turning the same rows
into protobuf (docs/benchmarks.md). It is the same data the server would return, read at the
same moment: nothing is copied or cached.

The table and the namespace's search-attribute mapping (`CaseStatus` → `Keyword02`, ...) are the
server's internals, so `signoff.listing` only trusts this read after checking it against the
server's API on every listing (same count, same first row) and falls back to the API otherwise.
Only the embedded server qualifies: the process listening on the target port must be the one
started with `--db-filename` pointing at this file.
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from urllib.parse import quote

from signoff import search_attributes as sa
from signoff.listing import (
    ENDED_BY_TEMPORAL,
    FINAL_STATUSES,
    STATUS_NAMES,
    CaseRow,
    count_value,
    ended_by_temporal,
    instant_value,
)

WANTED = (sa.CASE_STATUS, sa.ALERT_TYPE, sa.CASE_SEVERITY, sa.PLAYBOOK, sa.DECISION, sa.AWAITING_APPROVAL)
# The executions' `status` column holds WorkflowExecutionStatus numbers (listing.ENDED_BY_TEMPORAL).
ENDED_STATUS_CODES = ", ".join(str(code) for code, name in sorted(STATUS_NAMES.items()) if name in ENDED_BY_TEMPORAL)
OPEN_ORDER = "COALESCE(close_time, '9999-12-31 23:59:59+00:00')"  # the server's own ORDER BY


class Unavailable(Exception):
    """This store cannot be read here (not the embedded server, unknown schema or mapping)."""


def embedded_db(address: str, server_pid: int) -> Path | None:
    """The SQLite file of the dev server `server_pid`, if it is the one serving `address` on loopback."""
    host, _, port = address.rpartition(":")
    if host not in ("127.0.0.1", "localhost"):
        return None
    from signoff.devserver import cmdline

    args = cmdline(server_pid)
    if args is None:
        return None
    values = {flag: args[i + 1] for i, flag in enumerate(args[:-1]) if flag in ("--db-filename", "--port")}
    if "start-dev" not in args or values.get("--port") != port or "--db-filename" not in values:
        return None
    path = Path(values["--db-filename"])
    if not path.is_absolute():  # relative to the server's working directory
        path = Path(f"/proc/{server_pid}/cwd").resolve() / path
    return path if path.exists() else None


def embedded_db_of_home(address: str, home: Path) -> Path | None:
    """The dev server `signoff dev` started under `home` (its pid file), if it serves `address`."""
    try:
        pid = int((home / "temporal.pid").read_text().strip())
    except (OSError, ValueError):
        return None
    return embedded_db(address, pid)


def _varint(data: bytes, i: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        byte = data[i]
        i += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, i
        shift += 7


def _fields(data: bytes) -> list[tuple[int, bytes | int]]:
    """Top-level fields of a protobuf message: (number, bytes for length-delimited / int)."""
    out: list[tuple[int, bytes | int]] = []
    i = 0
    while i < len(data):
        key, i = _varint(data, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(data, i)
            out.append((number, value))
        elif wire == 2:
            size, i = _varint(data, i)
            out.append((number, data[i:i + size]))
            i += size
        elif wire in (1, 5):
            i += 8 if wire == 1 else 4
        else:
            raise Unavailable(f"unexpected protobuf wire type {wire} in the namespace record")
    return out


def _aliases(detail: bytes) -> dict[str, str]:
    """alias → column from a persisted NamespaceDetail (config = field 2,
    custom_search_attribute_aliases = map field 8 of the config: entries of key 1 → value 2)."""
    aliases: dict[str, str] = {}
    for number, config in _fields(detail):
        if number != 2 or not isinstance(config, bytes):
            continue
        for field, entry in _fields(config):
            if field == 8 and isinstance(entry, bytes):
                kv = {n: v for n, v in _fields(entry) if isinstance(v, bytes)}
                if 1 in kv and 2 in kv:
                    aliases[kv[2].decode()] = kv[1].decode()
    return aliases


@dataclass(frozen=True)
class EmbeddedVisibility:
    db: Path
    namespace_id: str
    columns: dict[str, str]  # search attribute name → column in executions_visibility

    @classmethod
    def open(cls, db: Path, namespace: str) -> EmbeddedVisibility:
        try:
            with closing(_connect(db)) as conn:
                row = conn.execute("SELECT data, data_encoding FROM namespaces WHERE name = ?", (namespace,)).fetchone()
                if row is None or row[1] != "Proto3":
                    raise Unavailable(f"namespace {namespace!r} not found in {db}")
                detail = bytes(row[0])
                info = dict(_fields(dict(_fields(detail)).get(1, b"")))  # type: ignore[arg-type]
                namespace_id = info.get(1)
                if not isinstance(namespace_id, bytes):
                    raise Unavailable("no namespace id in the namespace record")
                columns = _aliases(detail)
        except (sqlite3.Error, IndexError, UnicodeDecodeError) as exc:
            raise Unavailable(f"cannot read {db}: {exc}") from exc
        missing = [k.name for k in WANTED if k.name not in columns]
        if missing:
            raise Unavailable(f"search attributes {missing} have no column in {db}")
        if not all(c.replace("_", "").isalnum() for c in columns.values()):
            raise Unavailable("unexpected search attribute column names")
        return cls(db, namespace_id.decode(), columns)

    def cases(self, case_type: str, status: str, limit: int | None) -> list[CaseRow]:
        """`WorkflowType=case_type AND CaseStatus=status`, in the server's own order, as the server's
        SQL builds it (namespace, no namespace division, ORDER BY close/start time, run id)."""
        sql = (f"SELECT workflow_id, status, start_time, search_attributes FROM executions_visibility "
               f"WHERE namespace_id = ? AND TemporalNamespaceDivision IS NULL AND workflow_type_name = ? "
               f"AND {self.columns[sa.CASE_STATUS.name]} = ? "
               + ("" if status in FINAL_STATUSES else f"AND status NOT IN ({ENDED_STATUS_CODES}) ")
               + f"ORDER BY {OPEN_ORDER} DESC, start_time DESC, run_id"
               + (" LIMIT ?" if limit is not None else ""))
        params: tuple[object, ...] = (self.namespace_id, case_type, status) + ((limit,) if limit is not None else ())
        try:
            with closing(_connect(self.db)) as conn:
                records = conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise Unavailable(f"cannot read {self.db}: {exc}") from exc
        cols = {k.name: self.columns[k.name] for k in WANTED}
        count_column = self.columns.get(sa.ALERT_COUNT.name)  # absent on a server set up before it existed
        due_column = self.columns.get(sa.VERDICT_DUE.name)  # likewise
        owner_column = self.columns.get(sa.ASSIGNEE.name)  # likewise
        rows: list[CaseRow] = []
        for workflow_id, wf_status, start_time, attrs_json in records:
            attrs = json.loads(attrs_json) if attrs_json else {}

            def keyword(name: str, attrs: dict[str, object] = attrs) -> str | None:
                value = attrs.get(cols[name])
                return value if isinstance(value, str) else None

            rows.append(ended_by_temporal({
                "case_id": workflow_id,
                "status": keyword(sa.CASE_STATUS.name) or "open",
                "alert_type": keyword(sa.ALERT_TYPE.name),
                "severity": keyword(sa.CASE_SEVERITY.name),
                "playbook": keyword(sa.PLAYBOOK.name),
                "decision": keyword(sa.DECISION.name),
                "awaiting_approval": attrs.get(cols[sa.AWAITING_APPROVAL.name]) is True,
                "started": datetime.fromisoformat(start_time).isoformat() if start_time else None,
                "workflow_status": STATUS_NAMES.get(wf_status),
                "alert_count": count_value(attrs.get(count_column)) if count_column else None,
                "verdict_due": instant_value(attrs.get(due_column)) if due_column else None,
                "assignee": owner if owner_column and isinstance(owner := attrs.get(owner_column), str) else None,
            }))
        return rows


def _connect(db: Path) -> sqlite3.Connection:
    """Read-only: the server owns the file (WAL: readers never block its writes)."""
    return sqlite3.connect(f"file:{quote(str(db))}?mode=ro", uri=True, timeout=5.0)
