"""Streaming alert correlation: every alert joins exactly one case, and the case says why.

Pure and deterministic: no I/O, no clock, no randomness. The same alerts in the same order give
the same case ids and the same reasons in any process. State is per group key (the alert's host,
else IP, account, file, else its rule — see `policies/correlation.yaml`).

A group's cases are session windows over alert time:
- an alert within `gap` of its group's latest case joins it ("repeat of rule R on host=h", or
  "rule R on host=h within 40m of the case's last alert");
- a longer gap, a case reaching `max_alerts`, a case that would span more than `max_span`, or
  the end of a burst (`burst.quiet` of silence after `burst.min_alerts` within `burst.within`)
  opens a new case, and the opening alert records which of these happened;
- an out-of-order alert joins the earlier case whose time window contains it (or lies within
  `gap` of it) when `late_alerts: join`, else it opens a case of its own.
"""

from __future__ import annotations

import bisect
import hashlib
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

from signoff.correlation.rules import CorrelationRules, load_rules
from signoff.models import Alert


@dataclass(frozen=True, slots=True)
class Assignment:
    """Where one alert went. `opened`: this alert opened the case. `duplicate`: its uid was seen
    before (it is not counted again; `case_id` is the case that already holds it)."""

    case_id: str
    reason: str
    opened: bool
    duplicate: bool = False
    group: str = ""


class CaseState(BaseModel):
    """A read-only view of one case as the correlator sees it."""

    model_config = ConfigDict(frozen=True)

    case_id: str
    group: str
    first_seen: datetime
    last_seen: datetime
    alert_count: int
    rules: dict[str, int]
    opened_because: str
    first_uid: str


@dataclass(slots=True)
class _Case:
    case_id: str
    group: str
    start: int  # ms
    end: int  # ms
    first_uid: str
    opened_because: str
    count: int = 0
    rules: Counter[str] = field(default_factory=Counter)
    recent: deque[int] = field(default_factory=deque)

    def view(self) -> CaseState:
        return CaseState(
            case_id=self.case_id,
            group=self.group,
            first_seen=datetime.fromtimestamp(self.start / 1000, tz=UTC),
            last_seen=datetime.fromtimestamp(self.end / 1000, tz=UTC),
            alert_count=self.count,
            rules=dict(sorted(self.rules.items())),
            opened_because=self.opened_because,
            first_uid=self.first_uid,
        )


@dataclass(slots=True)
class _Group:
    cases: list[_Case] = field(default_factory=list)  # sorted by start
    starts: list[int] = field(default_factory=list)
    watermark: int = 0  # the newest alert time seen in this group


def _ms(when: datetime) -> int:
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)


def _fmt(ms: int) -> str:
    seconds = ms // 1000
    if seconds % 86400 == 0 and seconds:
        return f"{seconds // 86400}d"
    if seconds % 3600 == 0 and seconds:
        return f"{seconds // 3600}h"
    if seconds % 60 == 0 and seconds:
        return f"{seconds // 60}m"
    return f"{seconds}s"


class Correlator:
    """`assign(alert)` → `Assignment`. Feed alerts in arrival order; time order is typical."""

    def __init__(self, rules: CorrelationRules | None = None, *, track_uids: bool = True) -> None:
        self.rules = rules or load_rules()
        self._gap = self.rules.gap_ms
        self._span = self.rules.max_span_ms
        self._lateness = self.rules.lateness_ms
        self._max = self.rules.max_alerts
        burst = self.rules.burst
        self._burst_n = burst.min_alerts if burst else 0
        self._burst_within = burst.within_ms if burst else 0
        self._burst_quiet = burst.quiet_ms if burst else 0
        self._join_late = self.rules.late_alerts == "join"
        self._group_by = self.rules.group_by
        self._wanted = frozenset(self.rules.group_by)
        self._groups: dict[str, _Group] = {}
        self._ids: set[str] = set()
        self._track = track_uids
        self._seen: dict[str, str] = {}
        self._watermark = 0
        self.opened = 0
        self.assigned = 0
        self.duplicates = 0

    # ------------------------------------------------------------------ grouping

    def group_key(self, alert: Alert) -> str:
        found: dict[str, str] = {}
        for entity in alert.entities:
            if entity.type in self._wanted and entity.type not in found:
                found[entity.type] = entity.value
        for etype in self._group_by:
            value = found.get(etype)
            if value:
                return f"{etype}={value}"
        if self.rules.fallback == "rule":
            return f"rule={alert.rule or alert.title}"
        raise ValueError(
            f"alert {alert.uid} has none of the grouping entities {list(self._group_by)} and the "
            "correlation rules set fallback: none; add an entity or set fallback: rule"
        )

    def case_id_for(self, key: str, first_uid: str, source: str) -> str:
        prefix = self.rules.case_id_prefix or source or "case"
        digest = hashlib.sha256(f"{key}\x1f{first_uid}".encode()).hexdigest()[:16]
        return f"{prefix}-{digest}"

    # ------------------------------------------------------------------ assignment

    def assign(self, alert: Alert) -> Assignment:
        if self._track:
            known = self._seen.get(alert.uid)
            if known is not None:
                self.duplicates += 1
                return Assignment(known, f"duplicate: alert {alert.uid} is already in this case", False, True)
        t = _ms(alert.time)
        key = self.group_key(alert)
        group = self._groups.get(key)
        if group is None:
            group = self._groups[key] = _Group()
        if t > self._watermark:
            self._watermark = t
        cases = group.cases
        if not cases:
            result = self._open(group, key, alert, t, f"opened: first alert for {key}")
        elif t >= cases[-1].start:
            result = self._in_order(group, key, alert, t)
        else:
            result = self._late(group, key, alert, t)
        if self._track:
            self._seen[alert.uid] = result.case_id
        self.assigned += 1
        return result

    def assign_many(self, alerts: Iterable[Alert]) -> list[Assignment]:
        return [self.assign(a) for a in alerts]

    def _in_order(self, group: _Group, key: str, alert: Alert, t: int) -> Assignment:
        case = group.cases[-1]
        if case.count >= self._max:
            return self._open(
                group, key, alert, t,
                f"opened: case {case.case_id} reached max_alerts {self._max}; {key} continues here",
            )  # fmt: skip
        if t <= case.end:
            return self._join(group, case, alert, t, key, "within the case's time window")
        idle = t - case.end
        if idle > self._gap:
            return self._open(
                group, key, alert, t,
                f"opened: {key} was quiet for {_fmt(idle)}, more than gap {self.rules.gap}",
            )  # fmt: skip
        if t - case.start > self._span:
            return self._open(
                group, key, alert, t,
                f"opened: case {case.case_id} would span more than max_span {self.rules.max_span}",
            )  # fmt: skip
        if self._burst_n and idle > self._burst_quiet and self._in_burst(case):
            return self._open(
                group, key, alert, t,
                f"opened: burst on {key} ended ({self._burst_n}+ alerts within {self.rules.burst.within}"  # type: ignore[union-attr]
                f" then {_fmt(idle)} quiet)",
            )  # fmt: skip
        return self._join(group, case, alert, t, key, f"within {self.rules.gap} of the case's last alert")

    def _in_burst(self, case: _Case) -> bool:
        recent = case.recent
        return len(recent) >= self._burst_n and recent[-1] - recent[0] <= self._burst_within

    def _late(self, group: _Group, key: str, alert: Alert, t: int) -> Assignment:
        if not self._join_late:
            return self._open(group, key, alert, t, f"opened: late alert for {key} (late_alerts: open)")
        cases = group.cases
        idx = bisect.bisect_right(group.starts, t)
        best: _Case | None = None
        best_distance = self._gap + 1
        for case in (cases[idx - 1] if idx > 0 else None, cases[idx] if idx < len(cases) else None):
            if case is None or case.count >= self._max:
                continue
            distance = 0 if case.start <= t <= case.end else min(abs(t - case.start), abs(t - case.end))
            span = max(case.end, t) - min(case.start, t)
            if distance < best_distance and span <= self._span:
                best, best_distance = case, distance
        if best is None:
            return self._open(
                group, key, alert, t, f"opened: late alert for {key}, no case within {self.rules.gap}"
            )
        if best_distance == 0:
            return self._join(group, best, alert, t, key, "late, within the case's time window")
        return self._join(group, best, alert, t, key, f"late, within {self.rules.gap} of the case")

    def _join(self, group: _Group, case: _Case, alert: Alert, t: int, key: str, why: str) -> Assignment:
        rule = alert.rule or alert.title
        repeat = rule in case.rules
        case.rules[rule] += 1
        case.count += 1
        if t >= case.end:
            case.end = t
            if self._burst_n:
                case.recent.append(t)
                if len(case.recent) > self._burst_n:
                    case.recent.popleft()
        if t < case.start:  # a late alert extends the case backwards; keep the group sorted
            case.start = t
            group.cases.sort(key=lambda c: c.start)
            group.starts[:] = [c.start for c in group.cases]
        verb = "repeat of rule" if repeat else "rule"
        return Assignment(case.case_id, f"{verb} {rule} on {key}, {why}", False, False, key)

    def _open(self, group: _Group, key: str, alert: Alert, t: int, why: str) -> Assignment:
        case_id = self.case_id_for(key, alert.uid, alert.source)
        n = 1
        while case_id in self._ids:  # only when the same uid opens twice (track_uids=False)
            n += 1
            case_id = self.case_id_for(key, f"{alert.uid}#{n}", alert.source)
        self._ids.add(case_id)
        case = _Case(case_id=case_id, group=key, start=t, end=t, first_uid=alert.uid, opened_because=why)
        case.rules[alert.rule or alert.title] = 1
        case.count = 1
        if self._burst_n:
            case.recent.append(t)
        idx = bisect.bisect_right(group.starts, t)
        group.cases.insert(idx, case)
        group.starts.insert(idx, t)
        if t > group.watermark:
            group.watermark = t
        self._forget_old(group)
        self.opened += 1
        return Assignment(case_id, why, True, False, key)

    def _forget_old(self, group: _Group) -> None:
        horizon = group.watermark - self._lateness
        drop = 0
        while drop < len(group.cases) - 1 and group.cases[drop].end < horizon:
            drop += 1
        if drop:
            del group.cases[:drop]
            del group.starts[:drop]

    # ------------------------------------------------------------------ views

    def cases(self) -> list[CaseState]:
        """Every case the correlator still remembers, ordered by group then start."""
        return [c.view() for key in sorted(self._groups) for c in self._groups[key].cases]

    def open_cases(self) -> list[CaseState]:
        """Cases a new in-time alert could still join: last alert within `gap` of the newest alert."""
        cutoff = self._watermark - self._gap
        return [
            c.view()
            for key in sorted(self._groups)
            for c in self._groups[key].cases
            if c.end >= cutoff and c.count < self._max
        ]

    # ------------------------------------------------------------------ persistence

    def snapshot(self) -> dict[str, Any]:
        """JSON-able state of the remembered cases, to continue correlating after a restart
        (`Correlator.restore`). Seen uids are not included: the alert store knows them."""
        return {
            "version": 1,
            "watermark": self._watermark,
            "groups": {
                key: {
                    "watermark": g.watermark,
                    "cases": [
                        {
                            "case_id": c.case_id,
                            "start": c.start,
                            "end": c.end,
                            "first_uid": c.first_uid,
                            "opened_because": c.opened_because,
                            "count": c.count,
                            "rules": dict(c.rules),
                            "recent": list(c.recent),
                        }  # fmt: skip
                        for c in g.cases
                    ],
                }
                for key, g in sorted(self._groups.items())
            },
        }

    @classmethod
    def restore(cls, state: dict[str, Any], rules: CorrelationRules | None = None) -> Correlator:
        """A correlator that continues from `snapshot()`: new alerts join the restored cases."""
        if state.get("version") != 1:
            raise ValueError(
                f"correlator snapshot version {state.get('version')!r} is not 1; start a fresh Correlator"
            )
        correlator = cls(rules)
        correlator._watermark = int(state["watermark"])
        for key, g in state["groups"].items():
            group = correlator._groups[key] = _Group(watermark=int(g["watermark"]))
            for c in g["cases"]:
                case = _Case(
                    case_id=c["case_id"], group=key, start=int(c["start"]), end=int(c["end"]),
                    first_uid=c["first_uid"], opened_because=c["opened_because"], count=int(c["count"]),
                    rules=Counter({str(k): int(v) for k, v in c["rules"].items()}),
                    recent=deque(int(t) for t in c["recent"]),
                )  # fmt: skip
                group.cases.append(case)
                correlator._ids.add(case.case_id)
            group.cases.sort(key=lambda x: x.start)
            group.starts[:] = [x.start for x in group.cases]
        return correlator

    def flush(self) -> list[CaseState]:
        """Return every remembered case and forget them all (seen uids are kept for dedupe)."""
        out = self.cases()
        self._groups.clear()
        return out


def annotate(alert: Alert, assignment: Assignment) -> Alert:
    """The alert with `joined_because` set to why it joined (or opened) its case."""
    return alert.model_copy(update={"joined_because": assignment.reason})
