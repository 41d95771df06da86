"""Correlation quality against AIT-ADS style labels (evaluation only: labels never reach a case).

A labels file (CSV, optionally gzipped) has one row per finding uid with `time_label`: the attack
phase whose time window contains the alert, or `false_positive`. A case is *mixed* when it holds
both attack-phase and false-positive alerts: an attack hidden inside noise, or noise dragged
into an attack case.
"""

from __future__ import annotations

import csv
import gzip
from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

FALSE_POSITIVE = "false_positive"


def load_labels(path: str | Path) -> dict[str, str]:
    """uid → time_label."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"labels file {p} not found; pass the *.labels.csv(.gz) of the scenario")
    with gzip.open(p, "rt", newline="") if p.suffix == ".gz" else p.open(newline="") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None or not {"uid", "time_label"} <= set(reader.fieldnames):
            raise ValueError(f"labels file {p} needs the columns uid,time_label; has {reader.fieldnames}")
        return {row["uid"]: row["time_label"] for row in reader}


def evaluate(
    assignments: Iterable[tuple[str, str]],
    labels: dict[str, str],
    *,
    lines: int | None = None,
    rejected: int = 0,
) -> dict[str, Any]:
    """Metrics for (uid, case_id) pairs. `lines`: input records (defaults to the labelled uids).

    - unaccounted: records neither in a case nor rejected (lines - distinct uids - rejected);
    - double_counted: uids found in more than one case, or twice;
    - unlabelled: assigned uids the labels do not know (counted, excluded from mixing).
    """
    case_labels: dict[str, Counter[bool]] = defaultdict(Counter)
    seen: dict[str, str] = {}
    double = 0
    unlabelled = 0
    for uid, case_id in assignments:
        if uid in seen:
            double += 1
            continue
        seen[uid] = case_id
        label = labels.get(uid)
        if label is None:
            unlabelled += 1
            case_labels[case_id]  # noqa: B018  (the case exists even if nothing in it is labelled)
            continue
        case_labels[case_id][label != FALSE_POSITIVE] += 1
    alerts = len(seen)
    cases = len(case_labels)
    mixed = sum(1 for c in case_labels.values() if c[True] and c[False])
    attack_cases = sum(1 for c in case_labels.values() if c[True])
    attack_alerts = sum(c[True] for c in case_labels.values())
    attack_in_mixed = sum(c[True] for c in case_labels.values() if c[True] and c[False])
    total = lines if lines is not None else len(labels)
    missing_labelled = sum(1 for uid in labels if uid not in seen)
    return {
        "alerts": alerts,
        "rejected": rejected,
        "lines": total,
        "cases": cases,
        "alerts_per_case": round(alerts / cases, 2) if cases else 0.0,
        "mixed_cases": mixed,
        "mixed_case_share": round(mixed / cases, 4) if cases else 0.0,
        "attack_cases": attack_cases,
        "attack_alerts": attack_alerts,
        "attack_alerts_in_mixed_cases": attack_in_mixed,
        "unaccounted": total - alerts - rejected,
        "labelled_not_assigned": missing_labelled,
        "double_counted": double,
        "unlabelled": unlabelled,
    }
