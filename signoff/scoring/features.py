"""Case features: `tuple[Alert, ...]` → a fixed-order float32 vector. The same code for every source.

Two kinds of features, both built to carry over to organisations the model has never seen:

* content features: what the alerts say (category mix, entity types and roles, verdicts, counts,
  spread in time). No raw identifiers.
* history features: statistics learned from the training data only, looked up by key: the grade
  mix of the organisation, of the detector (rule), of the alert title, of the (org, detector) pair,
  of MITRE techniques and of entity values; how many training incidents and organisations a key
  was seen in. An unseen key gives the training prior and count 0, which is exactly what a new
  organisation or a new detector looks like. During training these are computed out-of-fold, so
  a case never sees its own label.

The alerts' `attributes["org_id"]` names the organisation (GUIDE `OrgId`; OCSF tenant when known).
Entity attributes read: `last_verdict`, `suspicion_level`, `threat_family`, `antispam_direction`,
`roles`, `country_code`, `os_family`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from signoff.models import Alert, Verdict

CLASSES: tuple[Verdict, ...] = (Verdict.true_positive, Verdict.benign_positive, Verdict.false_positive)
CLASS_SHORT = ("tp", "bp", "fp")
SCHEMA_VERSION = 2

CATEGORIES = (
    "initialaccess", "execution", "persistence", "privilegeescalation", "defenseevasion",
    "credentialaccess", "credentialstealing", "discovery", "lateralmovement", "collection",
    "exfiltration", "commandandcontrol", "impact", "malware", "ransomware", "unwantedsoftware",
    "suspiciousactivity",
)  # fmt: skip
ENTITY_TYPES = (
    "host", "account", "ip", "url", "file", "process", "mailbox", "mail_message", "mail_cluster",
    "cloud_app", "cloud_logon_request", "cloud_logon_session", "registry", "cloud_resource",
)  # fmt: skip
VERDICTS = ("malicious", "suspicious", "nothreatsfound")
EVIDENCE_ROLES = ("contextual", "suspicious", "destination", "source", "attacker", "compromised")
ANTISPAM = ("inbound", "intraorg", "outbound")
SEVERITY = {"informational": 0, "info": 0, "low": 1, "medium": 2, "high": 3, "critical": 4, "fatal": 4}

# History groups: (name, has per-key org spread, aggregate max TP rate too)
HISTORY_GROUPS: tuple[tuple[str, bool, bool], ...] = (
    ("org", False, False),
    ("rule", True, True),
    ("title", True, True),
    ("org_rule", False, True),
    ("technique", True, True),
    ("entity", True, True),
)
SMOOTHING = 1.0

# Cross-organisation groups: keys whose anonymised values are global in GUIDE (detector, title,
# MITRE technique, category, evidence signature, global attribute values). For each key the model
# sees how OTHER organisations graded it: every organisation casts one vote (its own grade mix for
# the key), the case's own organisation is always left out. That is computed the same way in
# training and in scoring, and it is exactly what a never-seen organisation gets.
CROSS_GROUPS: tuple[str, ...] = ("rule", "title", "technique", "category", "evidence", "rule_evidence", "attr", "entity")
# Entity attributes whose values are global (not per-organisation) in GUIDE.
GLOBAL_ATTRIBUTES = (
    "threat_family", "os_family", "os_version", "antispam_direction", "roles", "resource_type",
    "application_id", "application_name", "country_code", "state", "city", "sha256", "file_name",
    "folder_path", "url", "ip_address",
)  # fmt: skip
CROSS_SMOOTHING = 1.0  # m of the m-estimate pulling cross-organisation mixes to the prior

_NON_ALNUM = re.compile(r"[^a-z0-9]")


def _norm(text: str) -> str:
    return _NON_ALNUM.sub("", text.lower())


def _entity_bucket(kind: str) -> str:
    if kind.startswith("registry"):
        return "registry"
    return kind if kind in ENTITY_TYPES else "other"


def org_of(alerts: Sequence[Alert]) -> str:
    for alert in alerts:
        org = alert.attributes.get("org_id", "")
        if org:
            return org
    return ""


def _evidence_signature(entity: Any) -> str:
    attrs = entity.attributes
    return "|".join(
        (entity.type, entity.role.lower(), _norm(attrs.get("last_verdict", "")), _norm(attrs.get("suspicion_level", "")))
    )


def history_keys(alerts: Sequence[Alert]) -> dict[str, list[str]]:
    """The lookup keys of a case per history group (sorted, distinct)."""
    org = org_of(alerts)
    rules = {f"{a.source}:{a.rule}" for a in alerts if a.rule}
    keys: dict[str, set[str]] = {
        "org": {org} if org else set(),
        "rule": rules,
        "title": {f"{a.source}:{a.title}" for a in alerts if a.title},
        "org_rule": {f"{org}|{r}" for r in rules} if org else set(),
        "technique": {t.strip().upper() for a in alerts for t in a.mitre if t.strip()},
        "entity": {f"{e.type}:{e.value}" for a in alerts for e in a.entities if e.value},
        "category": {_norm(a.category) for a in alerts if a.category},
        "evidence": {_evidence_signature(e) for a in alerts for e in a.entities},
        "rule_evidence": {f"{a.source}:{a.rule}|{_evidence_signature(e)}" for a in alerts if a.rule for e in a.entities},
        "attr": {
            f"{name}={e.attributes[name]}" for a in alerts for e in a.entities for name in GLOBAL_ATTRIBUTES
            if e.attributes.get(name)
        },
    }
    return {group: sorted(values) for group, values in keys.items()}


Counts = tuple[int, int, int]


def _vote(counts: Counts) -> tuple[float, float, float]:
    n = float(counts[0] + counts[1] + counts[2])
    return (counts[0] / n, counts[1] / n, counts[2] / n)


@dataclass(frozen=True)
class HistoryStats:
    """Per-key grade counts learned from labelled training cases (part of the model artifact).

    `counts[group][key]`: pooled grade counts; `orgs[group][key]`: organisations a key was seen in;
    `cross[group][key][org]`: grade counts of a key per organisation (cross-organisation votes).
    """

    prior: tuple[float, ...]
    counts: dict[str, dict[str, Counts]]
    orgs: dict[str, dict[str, int]] = field(default_factory=dict)
    smoothing: float = SMOOTHING
    cross: dict[str, dict[str, dict[str, Counts]]] = field(default_factory=dict)
    cross_smoothing: float = CROSS_SMOOTHING

    def __post_init__(self) -> None:
        # Per key: the sum of all organisations' votes (in sorted org order) and their number.
        sums: dict[str, dict[str, tuple[tuple[float, float, float], int]]] = {}
        for group, table in self.cross.items():
            out: dict[str, tuple[tuple[float, float, float], int]] = {}
            for key, by_org in table.items():
                acc = [0.0, 0.0, 0.0]
                for org in sorted(by_org):
                    v = _vote(by_org[org])
                    for c in range(3):
                        acc[c] += v[c]
                out[key] = ((acc[0], acc[1], acc[2]), len(by_org))
            sums[group] = out
        object.__setattr__(self, "_cross_sums", sums)

    def cross_votes(self, group: str, key: str, org: str) -> tuple[tuple[float, float, float], int]:
        """Sum of the grade-mix votes of the organisations other than `org` that saw `key`, and their number."""
        entry = self._cross_sums.get(group, {}).get(key)  # type: ignore[attr-defined]
        if entry is None:
            return (0.0, 0.0, 0.0), 0
        total, n = entry
        own = self.cross[group][key].get(org) if org else None
        if own is None:
            return total, n
        if n == 1:
            return (0.0, 0.0, 0.0), 0
        v = _vote(own)
        return (total[0] - v[0], total[1] - v[1], total[2] - v[2]), n - 1

    def to_json(self) -> dict[str, Any]:
        return {
            "prior": list(self.prior),
            "smoothing": self.smoothing,
            "counts": {g: {k: list(v) for k, v in sorted(t.items())} for g, t in sorted(self.counts.items())},
            "orgs": {g: dict(sorted(t.items())) for g, t in sorted(self.orgs.items())},
            "cross_smoothing": self.cross_smoothing,
            "cross": {
                g: {k: {o: list(c) for o, c in sorted(by_org.items())} for k, by_org in sorted(t.items())}
                for g, t in sorted(self.cross.items())
            },
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> HistoryStats:
        return cls(
            prior=tuple(float(p) for p in data["prior"]),
            smoothing=float(data["smoothing"]),
            counts={
                g: {k: (int(v[0]), int(v[1]), int(v[2])) for k, v in t.items()} for g, t in data["counts"].items()
            },
            orgs={g: {k: int(v) for k, v in t.items()} for g, t in data["orgs"].items()},
            cross_smoothing=float(data["cross_smoothing"]),
            cross={
                g: {k: {o: (int(c[0]), int(c[1]), int(c[2])) for o, c in by_org.items()} for k, by_org in t.items()}
                for g, t in data["cross"].items()
            },
        )


def fit_history(
    keys: Sequence[dict[str, list[str]]],
    labels: Sequence[int] | np.ndarray,
    orgs: Sequence[str],
    rows: Iterable[int],
    smoothing: float = SMOOTHING,
    cross: bool = True,
) -> HistoryStats:
    """Count grades per key over the training cases `rows` (indices into keys/labels/orgs).

    `cross=False` skips the per-organisation tables (for fold statistics that only feed the
    pooled history features)."""
    counts: dict[str, dict[str, list[int]]] = {g: {} for g, _, _ in HISTORY_GROUPS}
    org_sets: dict[str, dict[str, set[str]]] = {g: {} for g, spread, _ in HISTORY_GROUPS if spread}
    by_org: dict[str, dict[str, dict[str, list[int]]]] = {g: {} for g in CROSS_GROUPS} if cross else {}
    class_totals = [0, 0, 0]
    for i in rows:
        label = int(labels[i])
        class_totals[label] += 1
        for group, values in keys[i].items():
            table = counts.get(group)
            if table is not None:
                for key in values:
                    table.setdefault(key, [0, 0, 0])[label] += 1
                    if group in org_sets and orgs[i]:
                        org_sets[group].setdefault(key, set()).add(orgs[i])
            cross_table = by_org.get(group)
            if cross_table is not None and orgs[i]:
                for key in values:
                    cross_table.setdefault(key, {}).setdefault(orgs[i], [0, 0, 0])[label] += 1
    total = sum(class_totals)
    prior = tuple((c + 1.0) / (total + 3.0) for c in class_totals)
    return HistoryStats(
        prior=prior,
        counts={g: {k: (v[0], v[1], v[2]) for k, v in t.items()} for g, t in counts.items()},
        orgs={g: {k: len(s) for k, s in t.items()} for g, t in org_sets.items()},
        smoothing=smoothing,
        cross={
            g: {k: {o: (c[0], c[1], c[2]) for o, c in t_org.items()} for k, t_org in t.items()}
            for g, t in by_org.items()
        },
    )


CROSS_FEATURES = ("orgs", "tp", "bp", "fp", "tp_max", "tp_min", "bp_max", "fp_max")


def feature_names() -> tuple[str, ...]:
    names = [
        "n_alerts", "n_evidence", "n_rules", "n_titles", "n_categories", "n_techniques",
        "n_technique_families", "mitre_share", "span_log_seconds", "severity_max",
        "n_entity_values", "n_impacted", "n_related", "impacted_share", "n_countries",
        "n_threat_family", "n_os_family",
    ]  # fmt: skip
    names += [f"cat_{c}" for c in (*CATEGORIES, "other")]
    names += [f"ent_{t}" for t in (*ENTITY_TYPES, "other")]
    names += [f"verdict_{v}" for v in VERDICTS]
    names += ["suspicion_suspicious", "suspicion_incriminated"]
    names += [f"evidence_role_{r}" for r in EVIDENCE_ROLES]
    names += [f"antispam_{d}" for d in ANTISPAM]
    for group, spread, tp_max in HISTORY_GROUPS:
        names += [f"hist_{group}_n", *(f"hist_{group}_{c}" for c in CLASS_SHORT)]
        if group != "org":
            names.append(f"hist_{group}_seen_share")
        if spread:
            names.append(f"hist_{group}_orgs_max")
        if tp_max:
            names += ["hist_" + group + "_tp_max", "hist_" + group + "_tp_min"]
    for group in CROSS_GROUPS:
        names += [f"hist_xorg_{group}_{x}" for x in CROSS_FEATURES]
    return tuple(names)


FEATURE_NAMES = feature_names()
_ORG_N = FEATURE_NAMES.index("hist_org_n")
N_CONTENT = FEATURE_NAMES.index("hist_org_n")
N_HISTORY = FEATURE_NAMES.index(f"hist_xorg_{CROSS_GROUPS[0]}_orgs") - N_CONTENT


def org_known(x: np.ndarray) -> np.ndarray:
    """Rows (of feature vectors) whose organisation has training history."""
    return np.asarray(x).reshape(-1, len(FEATURE_NAMES))[:, _ORG_N] > 0


def content_features(alerts: Sequence[Alert]) -> list[float]:
    entities = [e for a in alerts for e in a.entities]
    n_alerts = len(alerts)
    n_evidence = max(len(entities), n_alerts)
    techniques = {t.strip().upper() for a in alerts for t in a.mitre if t.strip()}
    times = [a.time.timestamp() for a in alerts]
    span = (max(times) - min(times)) if times else 0.0
    impacted = sum(1 for e in entities if e.role.lower() == "impacted")
    related = sum(1 for e in entities if e.role.lower() == "related")
    values = {f"{e.type}:{e.value}" for e in entities if e.value}

    def attr_count(name: str, wanted: str) -> float:
        return float(sum(1 for e in entities if _norm(e.attributes.get(name, "")) == wanted))

    out = [
        float(n_alerts),
        float(n_evidence),
        float(len({a.rule for a in alerts if a.rule})),
        float(len({a.title for a in alerts if a.title})),
        float(len({_norm(a.category) for a in alerts})),
        float(len(techniques)),
        float(len({t.split(".")[0] for t in techniques})),
        sum(1 for a in alerts if a.mitre) / max(n_alerts, 1),
        math.log1p(max(span, 0.0)),
        float(max((SEVERITY.get(a.severity.lower(), 2) for a in alerts), default=2)),
        float(len(values)),
        float(impacted),
        float(related),
        impacted / max(impacted + related, 1),
        float(len({e.attributes["country_code"] for e in entities if e.attributes.get("country_code")})),
        float(sum(1 for e in entities if e.attributes.get("threat_family"))),
        float(sum(1 for e in entities if e.attributes.get("os_family"))),
    ]
    categories = [_norm(a.category) for a in alerts]
    for c in CATEGORIES:
        out.append(sum(1 for x in categories if x == c) / max(n_alerts, 1))
    out.append(sum(1 for x in categories if x not in CATEGORIES) / max(n_alerts, 1))
    buckets = [_entity_bucket(e.type) for e in entities]
    for t in (*ENTITY_TYPES, "other"):
        out.append(float(sum(1 for b in buckets if b == t)))
    out += [attr_count("last_verdict", v) for v in VERDICTS]
    out += [attr_count("suspicion_level", "suspicious"), attr_count("suspicion_level", "incriminated")]
    out += [attr_count("roles", r) for r in EVIDENCE_ROLES]
    out += [attr_count("antispam_direction", d) for d in ANTISPAM]
    return out


def history_features(keys: dict[str, list[str]], stats: HistoryStats) -> list[float]:
    out: list[float] = []
    m = stats.smoothing
    prior = stats.prior
    for group, spread, tp_max in HISTORY_GROUPS:
        table = stats.counts.get(group, {})
        values = keys.get(group, [])
        pooled = [0, 0, 0]
        seen = 0
        tp_rates: list[float] = []
        for key in values:
            counts = table.get(key)
            if counts is None:
                tp_rates.append(prior[0])
                continue
            seen += 1
            n = sum(counts)
            for c in range(3):
                pooled[c] += counts[c]
            tp_rates.append((counts[0] + m * prior[0]) / (n + m))
        total = sum(pooled)
        out.append(float(total))
        out += [(pooled[c] + m * prior[c]) / (total + m) for c in range(3)]
        if group != "org":
            out.append(seen / len(values) if values else 0.0)
        if spread:
            org_table = stats.orgs.get(group, {})
            out.append(float(max((org_table.get(k, 0) for k in values), default=0)))
        if tp_max:
            out += [max(tp_rates, default=prior[0]), min(tp_rates, default=prior[0])]
    return out


def cross_features(keys: dict[str, list[str]], org: str, stats: HistoryStats) -> list[float]:
    """How other organisations graded the case's keys (the case's own organisation left out)."""
    out: list[float] = []
    m = stats.cross_smoothing
    prior = stats.prior
    for group in CROSS_GROUPS:
        pooled = [0.0, 0.0, 0.0]
        voters = 0
        support = 0
        rates: list[tuple[float, float, float]] = []
        for key in keys.get(group, []):
            total, n = stats.cross_votes(group, key, org)
            for c in range(3):
                pooled[c] += total[c]
            voters += n
            support = max(support, n)
            rates.append(
                ((total[0] + m * prior[0]) / (n + m), (total[1] + m * prior[1]) / (n + m), (total[2] + m * prior[2]) / (n + m))
            )
        if not rates:
            rates.append((prior[0], prior[1], prior[2]))
        out.append(float(support))
        out += [(pooled[c] + m * prior[c]) / (voters + m) for c in range(3)]
        out += [
            max(r[0] for r in rates),
            min(r[0] for r in rates),
            max(r[1] for r in rates),
            max(r[2] for r in rates),
        ]
    return out


def vector(alerts: Sequence[Alert], stats: HistoryStats, keys: dict[str, list[str]] | None = None) -> np.ndarray:
    """The feature vector of a case (float32, order = `FEATURE_NAMES`)."""
    if not alerts:
        raise ValueError("a case needs at least one alert to be scored")
    keys = keys if keys is not None else history_keys(alerts)
    row = content_features(alerts) + history_features(keys, stats) + cross_features(keys, org_of(alerts), stats)
    out = np.asarray(row, dtype=np.float32)
    if out.shape != (len(FEATURE_NAMES),):
        raise AssertionError(f"feature vector has {out.shape[0]} values, schema has {len(FEATURE_NAMES)}")
    return out
