"""How much a never-seen organisation's grades can be read from other organisations' grades.

Run from the repository root (standard library + numpy only):

    python docs/analysis/guide_crossorg_ceiling.py ../shared/data/guide/guide_dev.csv

Two measurements, both leave-one-organisation-out (an incident never sees its own organisation):

1. Per column: the log-loss gain (nats per incident) over the grade prior when an incident's grade is
   predicted from how the *other* organisations graded incidents with the same value, one vote per
   organisation. A column whose values are organisation-specific (device, account, IP) gains nothing
   or loses; a global one (detector, title, technique) gains.
2. A back-off lookup (detector + title + entity type + role + verdicts, then detector + entity,
   detector, title, category) with per-grade biases tuned *in sample* for macro-F1: an optimistic
   ceiling for a vote-based reading of the cross-organisation signal.
"""

from __future__ import annotations

import csv
import sys
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence

import numpy as np

GRADES = ("TruePositive", "BenignPositive", "FalsePositive")
NOT_FEATURES = {"Id", "OrgId", "IncidentId", "AlertId", "Timestamp", "IncidentGrade", "Usage"}
Incident = list[dict[str, str]]
KeyFn = Callable[[Incident], set[tuple[str, ...]]]


def macro_f1(y: np.ndarray, p: np.ndarray) -> float:
    scores = []
    for c in range(len(GRADES)):
        tp = float(((p == c) & (y == c)).sum())
        precision, recall = tp / max(int((p == c).sum()), 1), tp / max(int((y == c).sum()), 1)
        scores.append(0.0 if tp == 0 else 2 * precision * recall / (precision + recall))
    return float(np.mean(scores))


def by_columns(columns: Sequence[str]) -> KeyFn:
    def key(rows: Incident) -> set[tuple[str, ...]]:
        return {tuple(r[c] for c in columns) for r in rows}

    return key


def vote_table(incidents: dict[tuple[str, str], Incident], key: KeyFn) -> dict[tuple[str, ...], dict[str, Counter[str]]]:
    table: dict[tuple[str, ...], dict[str, Counter[str]]] = defaultdict(lambda: defaultdict(Counter))
    for (org, _), rows in incidents.items():
        for value in key(rows):
            table[value][org][rows[0]["IncidentGrade"]] += 1
    return table


def other_org_votes(table: dict[tuple[str, ...], dict[str, Counter[str]]], values: set[tuple[str, ...]], org: str) -> tuple[np.ndarray, int]:
    vote, voters = np.zeros(len(GRADES)), 0
    for value in values:
        for other, grades in table[value].items():
            if other != org:
                total = sum(grades.values())
                vote += np.asarray([grades[g] / total for g in GRADES])
                voters += 1
    return vote, voters


def main(path: str) -> None:
    incidents: dict[tuple[str, str], Incident] = defaultdict(list)
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            incidents[(row["OrgId"], row["IncidentId"])].append(row)
    keys = list(incidents)
    y = np.asarray([GRADES.index(incidents[k][0]["IncidentGrade"]) for k in keys])
    prior = np.bincount(y, minlength=len(GRADES)) / len(y)

    def log_loss(p: np.ndarray) -> float:
        return float(-np.mean(np.log(p[np.arange(len(y)), y])))

    base = log_loss(np.tile(prior, (len(y), 1)))
    print(f"{len(keys)} incidents, {len({k[0] for k in keys})} organisations; prior log-loss {base:.3f} nats")
    columns = [c for c in incidents[keys[0]][0] if c not in NOT_FEATURES]
    gains = []
    for column in columns:
        key = by_columns((column,))
        table = vote_table(incidents, key)
        probs = []
        for k in keys:
            vote, voters = other_org_votes(table, key(incidents[k]), k[0])
            probs.append((vote + 2 * prior) / (voters + 2))
        gains.append((base - log_loss(np.asarray(probs)), column))
    print("log-loss gain from other organisations' votes, per column:")
    for gain, column in sorted(gains, reverse=True):
        print(f"  {gain:+.4f}  {column}")

    levels: Sequence[Sequence[str]] = (
        ("DetectorId", "AlertTitle", "EntityType", "EvidenceRole", "LastVerdict", "SuspicionLevel"),
        ("DetectorId", "EntityType", "EvidenceRole"),
        ("DetectorId",),
        ("AlertTitle",),
        ("Category",),
    )
    tables = [(by_columns(cols), vote_table(incidents, by_columns(cols))) for cols in levels]
    probs = []
    for k in keys:
        p = prior
        for key, table in tables:
            vote, voters = other_org_votes(table, key(incidents[k]), k[0])
            if voters:
                p = (vote + 0.5 * prior) / (voters + 0.5)
                break
        probs.append(p)
    logs = np.log(np.asarray(probs))
    grid = np.arange(-1.5, 1.51, 0.1)
    best = max(macro_f1(y, (logs + np.asarray([0.0, a, b])).argmax(axis=1)) for a in grid for b in grid)
    print(f"back-off lookup macro-F1: argmax {macro_f1(y, logs.argmax(axis=1)):.3f}, best biases in sample {best:.3f}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/guide/guide_dev.csv")
